"""What every algorithm built on one TFF `LearningProcess` (`self.process`) shares."""
from __future__ import annotations


class TffProcess:
    def initialize(self):
        return self.process.initialize()

    def next(self, state, client_datasets, client_ids=None):
        out = self.process.next(state, client_datasets)
        return out.state, dict(out.metrics["client_work"]["train"])

    def global_weights(self, state):
        """What the server holds: the global model weights only."""
        return self.process.get_model_weights(state)
