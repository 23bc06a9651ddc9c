"""Centralized training on engine=fast (the pseudo-code: __init__.py): users strictly one
after another (execute.py: chain). Equal to its engine=tff twin (tests/test_fast_engine.py)."""
from __future__ import annotations

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.centralized import SPEC
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.algorithm import FastAlgorithm
from fedrecon_bench.engines.fast.evaluators import Reconstruct, Stored
from fedrecon_bench.engines.fast.state import ClientOut


class Centralized(FastAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.client_store = client_store.make(cfg.algo.get("store", "memory"), run_dir)
        self.evaluators = (Reconstruct(self.rt, self.recon_opt, "recon"), Stored(self.rt, self.client_store))

    def _user(self, g, c):
        g_u = self.views(g, c["rows"])
        new, tally = self.solo.train({**g_u, **c["local"]}, {}, self.client_opt, c["data"], c["steps"],
                                     c["key"], local=True)
        g = {n: (p.at[c["rows"][self.m.sparse[n]]].set(new[n], mode="drop") if n in self.m.sparse
                 else new[n]) for n, p in g.items()}
        return g, ClientOut(tally=tally, keep={n: new[n] for n in c["local"]})

    def next(self, state, clients, client_ids):
        steps, names = clients.schedule("all"), self.m.local_names
        c = {"local": client_store.stacked(self.client_store, names, self.l0, client_ids), "data": clients.data,
             "rows": clients.rows, "steps": steps, "key": self.round_keys(state, len(clients))}
        g, tally, local = self.exec.chain(self._user, state.params, c, steps.count)
        client_store.put_stacked(self.client_store, names, client_ids, local)
        out = fc.finalize(self.m, tally, loss="batch")
        out.update(num_examples=int(round(float(tally["examples"]))), **client_store.round_metrics(self.client_store))
        return state._replace(params=g, round=state.round + 1), out
