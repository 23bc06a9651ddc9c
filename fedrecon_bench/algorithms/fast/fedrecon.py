"""Federated Reconstruction (Singhal et al., NeurIPS 2021, Algorithm 1), engine=fast.

    for each round t:
        S  <- sample clients_per_round training clients        (the loop)
        for each client i in S (fast/execute.py: vmap groups or one after another):
            D_i^s, D_i^q <- split(D_i)                          (split/train schedules, round t)
            l_i <- init; l_i <- l_i - eta_r * grad_l L(g_t, l_i; D_i^s)   (reconstruction)
            g_i <- g_t;  g_i <- g_i - eta_u * grad_g L(g_i, l_i; D_i^q)   (global update;
                         algo.jointly_train_variables: (g_i, l_i) both train here)
            send g_t - g_i, weighted by algo.client_weighting (0 if not finite; l_i is dropped)
        g_{t+1} <- ServerOpt(g_t, weighted mean of the updates; under DP: fast/dp.py)
    evaluation: reconstruct l_i on D_i^s, measure on the disjoint D_i^q (split/eval);
    seen users reconstruct on their training data and are measured on held-out data.

Equal to TFF's build_fed_recon / build_fed_recon_eval (tests/test_fast_engine.py).
"""
from __future__ import annotations

import jax
import numpy as np

from fedrecon_bench.fast import client as fc
from fedrecon_bench.fast.engine import FastAlgorithm


class FedRecon(FastAlgorithm):
    name = "fedrecon"

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        a = cfg.algo
        self.jointly = bool(a.get("jointly_train_variables", False))
        self.recon_metrics = bool(a.get("evaluate_reconstruction", False))

    def reconstruct(self, g, data, sched, key, local: bool, stats: bool = False):
        """(local variables, tally): trained from init on `sched`; the tally is empty
        unless `stats` (the authors' evaluate_reconstruction)."""
        if not self.l0:  # nothing local: nothing to reconstruct (and no metrics, as the authors')
            return {}, None
        return self.client.train(self.l0, g, self.recon_opt, data, sched, key, local, stats=stats)

    def _client(self, g, c):
        k1, k2 = jax.random.split(c["key"])
        g_i = self.views(g, c["rows"])
        l_i, recon_tally = self.reconstruct(g_i, c["data"], c["recon"], k1, local=True, stats=self.recon_metrics)
        if self.jointly:  # the authors' jointly_train_variables: local variables train on too
            new, tally = self.client.train({**g_i, **l_i}, {}, self.client_opt, c["data"], c["post"], k2, local=True)
            g_new = {n: new[n] for n in g_i}
        else:
            g_new, tally = self.client.train(g_i, l_i, self.client_opt, c["data"], c["post"], k2, local=True)
        examples = tally["examples"]  # the weight counts post-reconstruction examples only
        if self.recon_metrics and recon_tally is not None:
            tally = jax.tree_util.tree_map(lambda a, b: a + b, tally, recon_tally)
        delta, weight = fc.update(g_i, g_new, self.weight(examples, tally))
        return {"delta": delta, "weight": weight, "rows": c["rows"], "sum": tally}

    def steps(self, recon, after) -> np.ndarray:
        """[clients, 2]: each client's reconstruction and post-reconstruction steps."""
        return np.stack([recon.count * bool(self.l0), after.count], axis=1)

    def next(self, state, clients, client_ids=None):
        (rp, re, rs), (pp, pe, ps) = self.round_parts(state)
        recon, post = clients.schedule(rp, re, rs), clients.schedule(pp, pe, ps)
        c = {"data": clients.data, "rows": clients.rows, "recon": recon, "post": post,
             "key": self.round_keys(state, len(clients))}
        sums, _ = self.run_clients(self._client, state, c, self.steps(recon, post))
        metrics = {**fc.finalize(self.m, sums["sum"], loss="batch"), **self.dp_metrics(state, sums["sum"])}
        return self.server_step(state, state["global"], sums), metrics

    # --- evaluation ----------------------------------------------------------
    def _eval_client(self, g, c):
        l_i, _ = self.reconstruct(g, c.get("rdata", c["data"]), c["recon"], c["key"], local=False)
        return {"sum": self.client.measure({**g, **l_i}, c["data"], c["measured"], local=False)}

    def eval_tally(self, g, clients, seen: bool, recon_from=None):
        rdata, recon, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        c = {"data": mdata, "recon": recon, "measured": measured,
             "key": np.asarray(jax.random.split(self.key, len(clients)))}
        if rdata is not mdata:
            c["rdata"] = rdata
        return self.exec.run(self._eval_client, g, c, self.steps(recon, measured))[0]["sum"]

    def eval_tallies(self, state, clients, client_ids, seen: bool, recon_from) -> dict:
        return {"": self.eval_tally(state["global"], clients, seen, recon_from)}
