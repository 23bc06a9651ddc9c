"""FedAvg on engine=fast (the pseudo-code: __init__.py). Equal to TFF's build_weighted_fed_avg
and build_fed_eval (tests/test_fast_engine.py)."""
from __future__ import annotations

from fedrecon_bench.algorithms.fedavg import SPEC, client_schedule
from fedrecon_bench.engines.fast import client as fc, optim
from fedrecon_bench.engines.fast.algorithm import FastAlgorithm
from fedrecon_bench.engines.fast.evaluators import FineTune, Global
from fedrecon_bench.engines.fast.state import ClientOut


class FedAvg(FastAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.g0 = {**self.g0, **self.l0}  # the task's local layers are simply global here
        self.epochs, self.steps_max = client_schedule(cfg.algo)
        self.evaluators = (Global(self.rt),)
        if self.spec.declares("algo.eval") and cfg.algo.get("eval", "global") == "finetune":  # tuned copy leads
            ft, m = cfg.algo.finetune, self.m
            names = {"all": m.model_order, "local": m.local_names, "global": m.global_names}[ft.variables]
            tuner = FineTune(self.rt, names, optim.build(ft.optimizer, "algo.finetune.optimizer"))
            self.evaluators = (tuner, Global(self.rt, "global"))

    def train_client(self, w_i: dict, c: dict):
        """ClientUpdate: (w_i after its steps, their metric tally)."""
        return self.client.train(w_i, {}, self.client_opt, c["data"], c["steps"], c["key"], local=True)

    def _client(self, w, c):
        w_i = self.views(w, c["rows"])
        w_new, tally = self.train_client(w_i, c)
        delta, weight = fc.update(w_i, w_new, self.weight(tally["examples"], tally))
        return ClientOut(delta=delta, weight=weight, rows=c["rows"], tally=tally)

    def next(self, state, clients, client_ids=None):
        steps = clients.schedule("all", self.epochs, self.steps_max)
        c = {"data": clients.data, "rows": clients.rows, "steps": steps,
             "key": self.round_keys(state, len(clients))}
        sums, _ = self.run_clients(self._client, state, c, steps.count)
        metrics = fc.finalize(self.m, sums.tally, loss="example", counts=True)
        return self.server_step(state, sums), {**metrics, **self.agg_metrics(state, sums)}
