"""FedRecon on engine=fast (the pseudo-code: __init__.py). Equal to TFF's build_fed_recon /
build_fed_recon_eval (tests/test_fast_engine.py)."""
from __future__ import annotations

import jax

from fedrecon_bench.algorithms.fedrecon import SPEC
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.algorithm import FastAlgorithm
from fedrecon_bench.engines.fast.evaluators import Reconstruct
from fedrecon_bench.engines.fast.state import ClientOut


class FedRecon(FastAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.jointly = bool(cfg.algo.get("jointly_train_variables", False))
        self.recon_metrics = bool(cfg.algo.get("evaluate_reconstruction", False))
        self.recon = Reconstruct(self.rt, self.recon_opt)
        self.evaluators = (self.recon,)

    def _client(self, g, c):
        k1, k2 = jax.random.split(c["key"])
        g_i = self.views(g, c["rows"])
        l_i, recon_tally = self.recon.reconstruct(g_i, c["data"], c["recon"], k1, local=True,
                                                  stats=self.recon_metrics)
        if self.jointly:  # the authors' jointly_train_variables: local variables train on too
            new, tally = self.client.train({**g_i, **l_i}, {}, self.client_opt, c["data"], c["post"], k2, local=True)
            g_new = {n: new[n] for n in g_i}
        else:
            g_new, tally = self.client.train(g_i, l_i, self.client_opt, c["data"], c["post"], k2, local=True)
        examples = tally["examples"]  # the weight counts post-reconstruction examples only
        if self.recon_metrics and recon_tally is not None:
            tally = jax.tree_util.tree_map(lambda a, b: a + b, tally, recon_tally)
        delta, weight = fc.update(g_i, g_new, self.weight(examples, tally))
        return ClientOut(delta=delta, weight=weight, rows=c["rows"], tally=tally)

    def next(self, state, clients, client_ids=None):
        (rp, re, rs), (pp, pe, ps) = self.round_parts(state)
        recon, post = clients.schedule(rp, re, rs), clients.schedule(pp, pe, ps)
        c = {"data": clients.data, "rows": clients.rows, "recon": recon, "post": post,
             "key": self.round_keys(state, len(clients))}
        sums, _ = self.run_clients(self._client, state, c, self.recon.steps(recon, post))
        metrics = {**fc.finalize(self.m, sums.tally, loss="batch"), **self.agg_metrics(state, sums)}
        return self.server_step(state, sums), metrics
