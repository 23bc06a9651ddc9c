"""FedProx on engine=fast (the pseudo-code: __init__.py): FedAvg's client with the proximal
pull mu (w_i - w_t) at every step (engines/fast/client.py). Equal to engine=tff's FedProx
(tff.py; tests/test_fast_engine.py)."""
from __future__ import annotations

from fedrecon_bench.algorithms.fedavg.fast import FedAvg
from fedrecon_bench.algorithms.fedprox import SPEC


class FedProx(FedAvg):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.mu = float(cfg.algo.mu)

    def train_client(self, w_i: dict, c: dict):
        """ClientUpdate with the proximal term towards w_i's start, the round's global model."""
        return self.client.train(w_i, {}, self.client_opt, c["data"], c["steps"], c["key"], local=True,
                                 prox=(self.mu, w_i))
