"""Aggregation on engine=tff: TFF composes an aggregation factory into its processes, so an
algorithm takes `factory()` for TFF's builders, or `combine` for its own client steps
(engines/fast/aggregate.py is the JAX twin).

    Mean   the weighted mean (the builders' default, factory() = None)
    DP     TFF's DifferentiallyPrivateFactory (dp.py), unweighted: clip, sum, noise, / m
"""
from __future__ import annotations

import numpy as np

from fedrecon_bench import privacy
from fedrecon_bench.engines.tff import dp


class Mean:
    dp = None

    def factory(self):
        return None  # TFF's builders then take their weighted mean

    def prepare(self, shapes) -> None:
        """For client-step algorithms: the aggregation process over updates of these shapes."""

    def init(self):
        return None

    def combine(self, st, updates: list, weights: list):
        """(state, the weighted mean of the clients' updates (lists of arrays), row values)."""
        w = np.asarray(weights, np.float64)
        w = w / max(w.sum(), 1)
        mean = [np.sum([wi * u[k] for wi, u in zip(w, updates)], axis=0).astype(np.float32)
                for k in range(len(updates[0]))]
        return st, mean, {}

    def round_metrics(self, agg_state_before, measurements) -> dict:
        return {}

    def clip(self, agg_state) -> float | None:
        return None


class DP(Mean):
    def __init__(self, p: privacy.Params):
        self.dp, self._process = p, None

    def factory(self):
        return dp.factory(self.dp)

    def prepare(self, shapes) -> None:
        self._process = dp.Aggregator(self.dp, shapes)

    def init(self):
        return self._process.initialize()

    def combine(self, st, updates: list, weights: list):
        return self._process.next(st, updates)  # every client counts once under DP

    def round_metrics(self, agg_state_before, measurements) -> dict:
        return dp.round_metrics(self.dp, agg_state_before, measurements)

    def clip(self, agg_state) -> float:
        return dp.clip(self.dp, agg_state)


def build(cfg, spec):
    p = privacy.params(cfg) if spec.federated else None
    return DP(p) if p else Mean()
