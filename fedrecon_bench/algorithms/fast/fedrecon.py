"""Federated Reconstruction (Singhal et al., NeurIPS 2021, Algorithm 1), engine=fast.

    for each round t:
        S  <- sample clients_per_round training clients        (the loop)
        for each client i in S (fast/execute.py: vmap groups or one after another):
            D_i^s, D_i^q <- split(D_i)                          (split/train schedules)
            l_i <- init; l_i <- l_i - eta_r * grad_l L(g_t, l_i; D_i^s)   (reconstruction)
            g_i <- g_t;  g_i <- g_i - eta_u * grad_g L(g_i, l_i; D_i^q)   (global update)
            send g_t - g_i, weighted by |D_i^q| or 1 (0 if not finite; l_i is dropped)
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

    def reconstruct(self, g, data, sched, key, local: bool):
        if not self.l0:  # nothing local: nothing to reconstruct
            return {}
        l, _ = self.client.train(self.l0, g, self.recon_opt, data, sched, key, local, stats=False)
        return l

    def _client(self, g, c):
        k1, k2 = jax.random.split(c["key"])
        g_i = self.views(g, c["rows"])
        l_i = self.reconstruct(g_i, c["data"], c["recon"], k1, local=True)
        g_new, tally = self.client.train(g_i, l_i, self.client_opt, c["data"], c["post"], k2, local=True)
        delta, weight = fc.update(g_i, g_new, self.weight(tally["examples"]))
        return {"delta": delta, "weight": weight, "rows": c["rows"], "sum": tally}

    def steps(self, recon, after) -> np.ndarray:
        """[clients, 2]: each client's reconstruction and post-reconstruction steps."""
        return np.stack([recon.count * bool(self.l0), after.count], axis=1)

    def next(self, state, clients, client_ids=None):
        (rp, re, rs), (pp, pe, ps) = self.train_parts
        recon, post = clients.schedule(rp, re, rs), clients.schedule(pp, pe, ps)
        c = {"data": clients.data, "rows": clients.rows, "recon": recon, "post": post,
             "key": self.round_keys(state, len(clients))}
        sums, _ = self.run_clients(self._client, state, c, self.steps(recon, post))
        metrics = {**fc.finalize(self.m, sums["sum"], loss="batch"), **self.dp_metrics(state, sums["sum"])}
        return self.server_step(state, state["global"], sums), metrics

    # --- evaluation ----------------------------------------------------------
    def _eval_client(self, g, c):
        l_i = self.reconstruct(g, c.get("rdata", c["data"]), c["recon"], c["key"], local=False)
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
