"""What every algorithm built on one TFF `LearningProcess` (`self.process`) shares."""
from __future__ import annotations

from fedrecon_bench.algorithms import dp_tff


class TffProcess:
    dp = None  # privacy.Params of a private run: the process aggregates with dp_tff.factory

    def initialize(self):
        return self.process.initialize()

    def next(self, state, client_datasets, client_ids=None):
        out = self.process.next(state, client_datasets)
        metrics = dict(out.metrics["client_work"]["train"])
        if self.dp is not None:
            metrics.update(dp_tff.round_metrics(self.dp, state.aggregator, out.metrics["aggregator"]))
        return out.state, metrics

    def dp_clip(self, state) -> float:
        """The DP clip the next round would use."""
        return dp_tff.clip(self.dp, state.aggregator)

    def global_weights(self, state):
        """What the server holds: the global model weights only."""
        return self.process.get_model_weights(state)
