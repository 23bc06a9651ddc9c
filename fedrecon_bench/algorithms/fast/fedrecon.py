"""Federated Reconstruction (Singhal et al., NeurIPS 2021, Algorithm 1), engine=fast.

    for each round t:
        S  <- sample clients_per_round training clients        (the loop)
        for each client i in S, at once (vmap):
            D_i^s, D_i^q <- split(D_i)                          (split/train schedules)
            l_i <- init; l_i <- l_i - eta_r * grad_l L(g_t, l_i; D_i^s)   (reconstruction)
            g_i <- g_t;  g_i <- g_i - eta_u * grad_g L(g_i, l_i; D_i^q)   (global update)
            send g_t - g_i, weighted by |D_i^q| (0 if not finite; l_i is dropped)
        g_{t+1} <- ServerOpt(g_t, weighted mean of the updates)
    evaluation: reconstruct l_i on D_i^s, measure on the disjoint D_i^q (split/eval);
    seen users reconstruct on their training data and are measured on held-out data.

Equal to TFF's build_fed_recon / build_fed_recon_eval (tests/test_fast_engine.py).
"""
from __future__ import annotations

import jax

from fedrecon_bench.fast import client as fc
from fedrecon_bench.fast.engine import FastAlgorithm


class FedRecon(FastAlgorithm):
    name = "fedrecon"

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self._round = jax.jit(self._round_fn)
        self._eval = jax.jit(self._eval_fn)

    def reconstruct(self, g, data, idx, valid, key, local: bool):
        if not self.l0:  # nothing local: nothing to reconstruct
            return {}
        l, _ = self.client.train(self.l0, g, self.recon_opt, data, idx, valid, key, local, stats=False)
        return l

    def _client(self, g, data, rows, recon, post, key):
        k1, k2 = jax.random.split(key)
        g_i = self.views(g, rows)
        l_i = self.reconstruct(g_i, data, *recon, k1, local=True)
        g_new, tally = self.client.train(g_i, l_i, self.client_opt, data, *post, k2, local=True)
        return (*fc.update(g_i, g_new, tally["examples"]), tally)

    def _round_fn(self, state, data, rows, recon, post, keys):
        g = state["global"]
        deltas, weights, tally = self.map_clients(self._client, (None, 0, 0, 0, 0, 0),
                                                  g, data, rows, recon, post, keys)
        return self.server_step(state, g, deltas, weights, rows), fc.combine(tally)

    def next(self, state, clients, client_ids=None):
        (rp, re, rs), (pp, pe, ps) = self.train_parts
        state, tally = self._round(state, clients.data, clients.rows, clients.schedule(rp, re, rs),
                                   clients.schedule(pp, pe, ps), self.round_keys(state, len(clients)))
        return state, fc.finalize(self.m, tally, loss="batch")

    # --- evaluation ----------------------------------------------------------
    def _eval_client(self, g, rdata, recon, mdata, measured, key):
        l_i = self.reconstruct(g, rdata, *recon, key, local=False)
        return self.client.measure({**g, **l_i}, mdata, *measured, local=False)

    def _eval_fn(self, g, rdata, recon, mdata, measured, keys, live):
        tally = jax.vmap(self._eval_client, in_axes=(None, 0, 0, 0, 0, 0))(
            g, rdata, recon, mdata, measured, keys)
        return fc.summed(tally, live)

    def eval_tally(self, g, clients, seen: bool, recon_from=None):
        rdata, recon, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        keys = jax.random.split(self.key, len(clients))
        return self.chunked(lambda *a: self._eval(g, *a), len(clients),
                            rdata, recon, mdata, measured, keys)

    def evaluate(self, state, clients, client_ids=None, seen: bool = False, recon_from=None) -> dict:
        return fc.finalize(self.m, self.eval_tally(state["global"], clients, seen, recon_from), loss="batch")
