"""FedAvg (McMahan et al. 2017): every model variable is global.

    for each round t:
        S <- sample clients_per_round training clients          (the loop)
        for each client i in S, in parallel:
            w_i <- w_t; w_i <- w_i - eta_c * grad L(w_i; D_i)      (all variables; algo.client_epochs
                         epochs, at most algo.client_steps_max steps: the authors' recipe)
            send w_t - w_i
        w_{t+1} <- ServerOpt(w_t, mean of the updates weighted by algo.client_weighting)
    evaluation: the global model as is, on the same measuring half of each user's
    data that FedRecon measures on (the odd batches of split/eval; all held-out
    data for seen users), so the two are compared on identical examples.

For matrix factorization the "user embedding" becomes one vector shared by all
users. TFF's `build_weighted_fed_avg` and `build_fed_eval` do the work.
`algo.eval=finetune` adds the fine-tuning evaluation (algorithms/finetune.py).
"""
from __future__ import annotations

import tensorflow_federated as tff

from fedrecon_bench import optimizers, privacy, splits, validate, weighting
from fedrecon_bench.algorithms import client_schedule, dp_tff
from fedrecon_bench.algorithms.base import TffProcess
from fedrecon_bench.algorithms.finetune import FineTuneEvaluator
from fedrecon_bench.errors import UserError


class FedAvg(TffProcess):
    name = "fedavg"
    all_global = True

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        validate.tff_refusals(cfg)
        self.task, self.info, a = task, info, cfg.algo
        self.epochs, self.steps_max = client_schedule(a)

        def model_fn():
            p = task.keras_parts(info)  # local layers are simply trained globally here
            return tff.learning.models.from_keras_model(
                p.model, loss=task.loss_fn()(), input_spec=p.input_spec,
                metrics=task.metrics_fn()())

        opts = dict(client_optimizer_fn=optimizers.build(a.client_optimizer, "algo.client_optimizer"),
                    server_optimizer_fn=optimizers.build(a.server_optimizer, "algo.server_optimizer"))
        self.dp = privacy.params(cfg)
        if self.dp:  # TFF's DP factory is an unweighted aggregator: the unweighted builder
            self.process = tff.learning.algorithms.build_unweighted_fed_avg(
                model_fn, model_aggregator=dp_tff.factory(self.dp), **opts)
        else:
            self.process = tff.learning.algorithms.build_weighted_fed_avg(
                model_fn, client_weighting=weighting.tff(weighting.kind(cfg)), **opts)
        self.eval_process = tff.learning.algorithms.build_fed_eval(model_fn)
        self._eval_state = self.eval_process.initialize()
        self._measure_half = splits.build(cfg.split.eval, "split.eval", evaluation=True)
        mode = a.get("eval", "global")
        if mode not in ("global", "finetune"):
            raise UserError(f"algo.eval={mode!r} is unknown; use global or finetune")
        self.finetune = None
        if mode == "finetune":  # report fine-tuned (headline) and the global model as is
            self.finetune = FineTuneEvaluator(task, info, a.finetune, cfg.split.eval)
            self.eval_modes = ("finetune", "global")

    def next(self, state, client_datasets, client_ids=None):
        if self.epochs > 1:
            client_datasets = [ds.repeat(self.epochs) for ds in client_datasets]
        if self.steps_max is not None:
            client_datasets = [ds.take(self.steps_max) for ds in client_datasets]
        return super().next(state, client_datasets, client_ids)

    def evaluate(self, state, client_datasets, client_ids=None, seen: bool = False,
                 recon_from=None) -> dict:
        eval_state = self.eval_process.set_model_weights(
            self._eval_state, self.process.get_model_weights(state))
        measured = (client_datasets if recon_from is not None  # seen users: all held-out data
                    else [self._measure_half(ds)[1] for ds in client_datasets])
        _, metrics = self.eval_process.next(eval_state, measured)
        plain = dict(metrics["client_work"]["eval"]["current_round_metrics"])
        if self.finetune is None:
            return plain
        tuned = self.finetune.evaluate(self.global_weights(state).trainable, client_datasets, recon_from)
        return {"finetune": tuned, "global": plain}
