"""Stateful FedAvg, engine=fast: clients keep their local variables between rounds.

    store <- {}                                                    (client-state store)
    for each round t:
        S <- sample clients_per_round training clients             (the loop)
        for each client i in S, at once (vmap):
            l_i <- store[i] if i was sampled before, else init
            g_i <- g_t; one epoch of (g_i, l_i) <- ClientOpt((g_i, l_i), grad L(g_i, l_i; b)) over D_i
            store[i] <- l_i;  send g_t - g_i, weighted by |D_i|
        g_{t+1} <- ServerOpt(g_t, weighted mean of the updates)
    evaluation: unseen users with fresh local variables and reconstructed (FedRecon's
    evaluation); seen users with their stored state.

Equal to engine=tff's algorithms/stateful_fedavg.py (tests/test_fast_engine.py).
"""
from __future__ import annotations

import jax
import numpy as np

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.fast.fedrecon import FedRecon
from fedrecon_bench.fast import client as fc


class StatefulFedAvg(FedRecon):  # FedRecon for the reconstruction evaluation
    name = "stateful_fedavg"
    eval_modes = ("recon", "fresh")  # the first is the headline one

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.store = client_store.make(cfg.algo.get("store", "memory"), run_dir)
        self._stateful_round = jax.jit(self._stateful_round_fn)

    def _stateful_client(self, g, l_i, data, rows, steps, key):
        g_i = self.views(g, rows)
        new, tally = self.client.train({**g_i, **l_i}, {}, self.client_opt, data, *steps, key, local=True)
        delta = {n: g_i[n] - new[n] for n in g_i}
        return delta, tally["examples"], {n: new[n] for n in l_i}, tally

    def _stateful_round_fn(self, state, local, data, rows, steps, keys):
        g = state["global"]
        deltas, weights, local, tally = self.map_clients(
            self._stateful_client, (None, 0, 0, 0, 0, 0), g, local, data, rows, steps, keys)
        return self.server_step(state, g, deltas, weights, rows), local, fc.combine(tally)

    def stored(self, client_ids, use_store: bool = True) -> dict:
        """The clients' local variables, stacked: stored state, or init for new clients."""
        init = [np.asarray(self.l0[n]) for n in self.m.local_names]
        got = [(self.store.get(c) if use_store else None) or init for c in client_ids]
        return {n: np.stack([g[k] for g in got]) for k, n in enumerate(self.m.local_names)}

    def keep(self, client_ids, local: dict) -> None:
        local = {n: np.asarray(v) for n, v in local.items()}
        for i, c in enumerate(client_ids):
            self.store.put(c, [local[n][i] for n in self.m.local_names])

    def next(self, state, clients, client_ids):
        state, local, tally = self._stateful_round(
            state, self.stored(client_ids), clients.data, clients.rows, clients.schedule("all"),
            self.round_keys(state, len(clients)))
        self.keep(client_ids, local)
        out = fc.finalize(self.m, tally, loss="batch")
        out.update(num_examples=int(round(float(tally["examples"]))), store_clients=len(self.store),
                   store_bytes=self.store.nbytes)
        return state, out

    # --- evaluation ----------------------------------------------------------
    def evaluate(self, state, clients, client_ids, seen: bool = False, recon_from=None) -> dict:
        """{'recon': ..., 'fresh' (unseen) or 'stored' (seen users): ...}"""
        recon = super().evaluate(state, clients, client_ids, seen, recon_from)
        _, _, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        tally = self.measure(state["global"], mdata, measured, self.stored(client_ids, use_store=seen))
        return {"recon": recon, "stored" if seen else "fresh": fc.finalize(self.m, tally, loss="batch")}
