"""Stateful FedAvg on engine=fast (the pseudo-code: __init__.py). Equal to its engine=tff twin
(tests/test_fast_engine.py)."""
from __future__ import annotations

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.stateful_fedavg import SPEC
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.algorithm import FastAlgorithm
from fedrecon_bench.engines.fast.evaluators import Reconstruct, Stored
from fedrecon_bench.engines.fast.state import ClientOut


class StatefulFedAvg(FastAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.client_store = client_store.make(cfg.algo.get("store", "memory"), run_dir)
        self.evaluators = (Reconstruct(self.rt, self.recon_opt, "recon"), Stored(self.rt, self.client_store))

    def _client(self, g, c):
        g_i = self.views(g, c["rows"])
        new, tally = self.client.train({**g_i, **c["local"]}, {}, self.client_opt, c["data"], c["steps"],
                                       c["key"], local=True)
        delta = {n: g_i[n] - new[n] for n in g_i}
        return ClientOut(delta=delta, weight=self.weight(tally["examples"], tally), rows=c["rows"], tally=tally,
                         keep={n: new[n] for n in c["local"]})

    def train_round(self, state, c, steps):
        """(new state, each client's new local variables, the summed ClientOut)."""
        sums, local = self.run_clients(self._client, state, c, steps)
        return self.server_step(state, sums), local, sums

    def next(self, state, clients, client_ids):
        steps, names = clients.schedule("all"), self.m.local_names
        c = {"local": client_store.stacked(self.client_store, names, self.l0, client_ids), "data": clients.data,
             "rows": clients.rows, "steps": steps, "key": self.round_keys(state, len(clients))}
        new_state, local, sums = self.train_round(state, c, steps.count)
        client_store.put_stacked(self.client_store, names, client_ids, local)
        out = {**fc.finalize(self.m, sums.tally, loss="batch"), **self.agg_metrics(state, sums)}
        out.update(num_examples=int(round(float(sums.tally["examples"]))), **client_store.round_metrics(self.client_store))
        return new_state, out
