"""FedRecon on engine=tff (the pseudo-code: __init__.py): TFF's build_fed_recon and
build_fed_recon_eval do the work; this file wires the config into them."""
from __future__ import annotations

import tensorflow_federated as tff

from fedrecon_bench.algorithms.fedrecon import SPEC
from fedrecon_bench.engines.tff import optim, split
from fedrecon_bench.engines.tff.algorithm import TffProcess
from fedrecon_bench.engines.tff.evaluators import Reconstruct, recon_model_fn


class FedRecon(TffProcess):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        a = cfg.algo
        self.process = tff.learning.algorithms.build_fed_recon(
            recon_model_fn(task, info), loss_fn=task.loss_fn(), metrics_fn=task.metrics_fn(),
            server_optimizer_fn=optim.build(a.server_optimizer, "algo.server_optimizer"),
            client_optimizer_fn=optim.build(a.client_optimizer, "algo.client_optimizer"),
            reconstruction_optimizer_fn=optim.build(a.reconstruction_optimizer, "algo.reconstruction_optimizer"),
            dataset_split_fn=split.build(cfg.split.train, "split.train"),
            model_aggregator_factory=self.agg.factory(), client_weighting=self.client_weighting())
        self.evaluators = (Reconstruct(task, info, cfg),)
