"""Stateful FedAvg, engine=fast: clients keep their local variables between rounds.

    store <- {}                                                    (client-state store)
    for each round t:
        S <- sample clients_per_round training clients             (the loop)
        for each client i in S (fast/execute.py: vmap groups or one after another):
            l_i <- store[i] if i was sampled before, else init
            g_i <- g_t; one epoch of (g_i, l_i) <- ClientOpt((g_i, l_i), grad L(g_i, l_i; b)) over D_i
            store[i] <- l_i;  send g_t - g_i, weighted by |D_i| or 1
        g_{t+1} <- ServerOpt(g_t, weighted mean of the updates; under DP: fast/dp.py, which
                   covers all that travels: the local variables never leave the client)
    evaluation: unseen users with fresh local variables and reconstructed (FedRecon's
    evaluation); seen users with their stored state.

Equal to engine=tff's algorithms/stateful_fedavg.py (tests/test_fast_engine.py).
"""
from __future__ import annotations

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

    def _stateful_client(self, g, c):
        g_i = self.views(g, c["rows"])
        new, tally = self.client.train({**g_i, **c["local"]}, {}, self.client_opt, c["data"], c["steps"],
                                       c["key"], local=True)
        delta = {n: g_i[n] - new[n] for n in g_i}
        return {"delta": delta, "weight": self.weight(tally["examples"], tally), "rows": c["rows"], "sum": tally,
                "keep": {n: new[n] for n in c["local"]}}

    def train_round(self, state, c, steps):
        """(new state, each client's new local variables, summed tallies)."""
        sums, local = self.run_clients(self._stateful_client, state, c, steps)
        return self.server_step(state, state["global"], sums), local, sums["sum"]

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
        steps = clients.schedule("all")
        c = {"local": self.stored(client_ids), "data": clients.data, "rows": clients.rows, "steps": steps,
             "key": self.round_keys(state, len(clients))}
        new_state, local, tally = self.train_round(state, c, steps.count)
        self.keep(client_ids, local)
        out = {**fc.finalize(self.m, tally, loss="batch"), **self.dp_metrics(state, tally)}
        out.update(num_examples=int(round(float(tally["examples"]))), store_clients=len(self.store),
                   store_bytes=self.store.nbytes)
        return new_state, out

    # --- evaluation ----------------------------------------------------------
    final = {"recon": ("batch", False), "fresh": ("batch", False), "stored": ("batch", False)}

    def eval_tallies(self, state, clients, client_ids, seen: bool, recon_from) -> dict:
        """{'recon': ..., 'fresh' (unseen) or 'stored' (seen users): ...}"""
        recon = self.eval_tally(state["global"], clients, seen, recon_from)
        _, _, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        tally = self.measure(state["global"], mdata, measured, self.stored(client_ids, use_store=seen))
        return {"recon": recon, "stored" if seen else "fresh": tally}
