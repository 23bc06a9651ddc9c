"""FedAvg on engine=tff (the pseudo-code: __init__.py): TFF's build_weighted_fed_avg (under
DP, whose TFF factory is unweighted, build_unweighted_fed_avg) and build_fed_eval."""
from __future__ import annotations

import tensorflow_federated as tff

from fedrecon_bench.algorithms.fedavg import SPEC, client_schedule
from fedrecon_bench.engines.tff import optim
from fedrecon_bench.engines.tff.algorithm import TffProcess
from fedrecon_bench.engines.tff.evaluators import FineTune, Global, keras_model_fn


class FedAvg(TffProcess):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        a = cfg.algo
        self.epochs, self.steps_max = client_schedule(a)
        model_fn = keras_model_fn(task, info)  # the task's local layers are simply global here
        opts = dict(client_optimizer_fn=optim.build(a.client_optimizer, "algo.client_optimizer"),
                    server_optimizer_fn=optim.build(a.server_optimizer, "algo.server_optimizer"))
        self.process = self.build(model_fn, **opts)
        plain = Global(task, info, cfg, model_fn)
        self.evaluators = (plain,)
        # built after every TFF trace; the tuned copy leads
        if self.spec.declares("algo.eval") and a.get("eval", "global") == "finetune":
            plain.mode = "global"
            self.evaluators = (FineTune(task, info, cfg), plain)

    def build(self, model_fn, **opts):
        """The learning process: TFF's FedAvg with the run's aggregator."""
        if self.agg.dp:  # TFF's DP factory is an unweighted aggregator: the unweighted builder
            return tff.learning.algorithms.build_unweighted_fed_avg(
                model_fn, model_aggregator=self.agg.factory(), **opts)
        return tff.learning.algorithms.build_weighted_fed_avg(
            model_fn, client_weighting=self.client_weighting(), **opts)

    def next(self, state, client_datasets, client_ids=None):
        if self.epochs > 1:
            client_datasets = [ds.repeat(self.epochs) for ds in client_datasets]
        if self.steps_max is not None:
            client_datasets = [ds.take(self.steps_max) for ds in client_datasets]
        return super().next(state, client_datasets, client_ids)
