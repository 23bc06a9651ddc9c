"""FedRep on engine=fast (the pseudo-code: __init__.py): stateful FedAvg's round and store,
with a client that trains its stored local variables (global frozen), then the global
variables (local frozen). Equal to its engine=tff twin (tests/test_fast_engine.py)."""
from __future__ import annotations

import jax
import numpy as np

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.fedrep import SPEC
from fedrecon_bench.algorithms.stateful_fedavg.fast import StatefulFedAvg
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.state import ClientOut


def phases(algo: dict) -> tuple:
    """The (part, epochs, steps cap) schedules of the local and the global phase: every batch."""
    return (("all", int(algo.local_epochs), algo.get("local_steps_max")),
            ("all", int(algo.get("global_epochs", 1)), algo.get("global_steps_max")))


class FedRep(StatefulFedAvg):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)  # the store; evaluators (recon, stored/fresh)
        self.local_part, self.global_part = phases(cfg.algo)

    def evaluators_for(self, seen: bool) -> tuple:
        return self.evaluators[::-1] if seen else self.evaluators  # seen users: stored first

    def _client(self, g, c):
        k1, k2 = jax.random.split(c["key"])  # as FedRecon's client: its first visit is FedRecon's update
        g_i, l_i = self.views(g, c["rows"]), c["local"]
        if l_i:
            l_i, _ = self.client.train(l_i, g_i, self.recon_opt, c["data"], c["local_steps"], k1, local=True,
                                       stats=False)
        g_new, tally = self.client.train(g_i, l_i, self.client_opt, c["data"], c["global_steps"], k2, local=True)
        delta, weight = fc.update(g_i, g_new, self.weight(tally["examples"], tally))
        return ClientOut(delta=delta, weight=weight, rows=c["rows"], tally=tally, keep=l_i)

    def next(self, state, clients, client_ids):
        names = self.m.local_names
        local_steps, global_steps = clients.schedule(*self.local_part), clients.schedule(*self.global_part)
        c = {"local": client_store.stacked(self.client_store, names, self.l0, client_ids), "data": clients.data,
             "rows": clients.rows, "local_steps": local_steps, "global_steps": global_steps,
             "key": self.round_keys(state, len(clients))}
        counts = np.stack([local_steps.count * bool(names), global_steps.count], axis=1)
        new_state, local, sums = self.train_round(state, c, counts)
        client_store.put_stacked(self.client_store, names, client_ids, local)
        out = {**fc.finalize(self.m, sums.tally, loss="batch"), **self.agg_metrics(state, sums)}
        out.update(num_examples=int(round(float(sums.tally["examples"]))), **client_store.round_metrics(self.client_store))
        return new_state, out
