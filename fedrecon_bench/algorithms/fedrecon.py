"""Federated Reconstruction (Singhal et al., NeurIPS 2021, Algorithm 1), on TFF.

    for each round t:
        S  <- sample clients_per_round training clients       (the loop does this)
        for each client i in S, in parallel:
            D_i^s, D_i^q <- split(D_i)                         (split/train)
            l_i <- init; l_i <- l_i - eta_r * grad_l L(g_t, l_i; D_i^s)   (reconstruction)
            g_i <- g_t;  g_i <- g_i - eta_u * grad_g L(g_i, l_i; D_i^q)   (global update)
            send g_t - g_i   (local variables never leave the client), weighted by
                             algo.client_weighting
        g_{t+1} <- ServerOpt(g_t, weighted mean of the updates)
    evaluation: reconstruct l_i on D_i^s, measure on the disjoint D_i^q (split/eval);
    seen users reconstruct on their training data and are measured on held-out data.

The client and server steps are TFF's `build_fed_recon`; evaluation is
`build_fed_recon_eval`. This file only wires the config into them. TFF's client
step has no round number and trains only global variables after reconstruction,
without metrics on reconstruction batches, so the authors' growing reconstruction
epochs, jointly_train_variables and evaluate_reconstruction are engine=fast only
(refused here with one line: validate.tff_refusals).
"""
from __future__ import annotations

import tensorflow_federated as tff

from omegaconf import OmegaConf

from fedrecon_bench import optimizers, privacy, splits, validate, weighting
from fedrecon_bench.algorithms import dp_tff
from fedrecon_bench.algorithms.base import TffProcess
from fedrecon_bench.algorithms.finetune import FineTuneEvaluator


class FedRecon(TffProcess):
    name = "fedrecon"

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        validate.tff_refusals(cfg)
        self.task, self.info, a = task, info, cfg.algo

        def model_fn():
            p = task.keras_parts(info)
            return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
                keras_model=p.model, global_layers=p.global_layers,
                local_layers=p.local_layers, input_spec=p.input_spec)

        recon_opt = optimizers.build(a.reconstruction_optimizer, "algo.reconstruction_optimizer")
        self.dp = privacy.params(cfg)  # DP: TFF's DP factory aggregates the updates, uniformly weighted
        self.process = tff.learning.algorithms.build_fed_recon(
            model_fn, loss_fn=task.loss_fn(), metrics_fn=task.metrics_fn(),
            server_optimizer_fn=optimizers.build(a.server_optimizer, "algo.server_optimizer"),
            client_optimizer_fn=optimizers.build(a.client_optimizer, "algo.client_optimizer"),
            reconstruction_optimizer_fn=recon_opt,
            dataset_split_fn=splits.build(cfg.split.train, "split.train"),
            model_aggregator_factory=dp_tff.factory(self.dp) if self.dp else None,
            client_weighting=weighting.tff(weighting.kind(cfg)))
        self.eval_process = tff.learning.algorithms.build_fed_recon_eval(
            model_fn, loss_fn=task.loss_fn(), metrics_fn=task.metrics_fn(),
            reconstruction_optimizer_fn=recon_opt,
            dataset_split_fn=splits.build(cfg.split.eval, "split.eval", evaluation=True))
        self._eval_state = self.eval_process.initialize()
        self.cfg, self._seen_eval = cfg, None

    def evaluate(self, state, client_datasets, client_ids=None, seen: bool = False,
                 recon_from=None) -> dict:
        # Seen or not, FedRecon reconstructs: it keeps no state for anyone.
        return self.evaluate_weights(self.process.get_model_weights(state), client_datasets, recon_from)

    def evaluate_weights(self, global_weights, client_datasets, recon_from=None) -> dict:
        if recon_from is not None:  # seen users: TFF's evaluation splits one dataset only
            if self._seen_eval is None:  # built lazily, after every TFF trace (see stateful_fedavg)
                self._seen_eval = FineTuneEvaluator(
                    self.task, self.info, OmegaConf.create(
                        {"variables": "local", "optimizer": self.cfg.algo.reconstruction_optimizer}),
                    self.cfg.split.eval, key="algo.reconstruction")
            return self._seen_eval.evaluate(global_weights.trainable, client_datasets, recon_from,
                                            global_only=True)
        eval_state = self.eval_process.set_model_weights(self._eval_state, global_weights)
        _, metrics = self.eval_process.next(eval_state, client_datasets)
        return dict(metrics["client_work"]["eval"]["current_round_metrics"])
