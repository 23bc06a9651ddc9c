"""Aggregation on engine=fast: how the server combines a round's client updates, as TFF
composes an aggregation factory into its processes (engines/tff/aggregate.py is the twin).

    Mean   the weighted mean  sum_c w_c delta_c / sum_c w_c        (TFF's MeanFactory)
    DP     each update zeroed and clipped in its client; the sum noised at the server and
           divided by clients_per_round (dp.py; TFF's DifferentiallyPrivateFactory)

An aggregator wraps an algorithm's client function (`client`), so what it needs per
client runs inside it, and turns a round's summed ClientOut into the mean the server
optimizer applies (`server`). Algorithms never branch on DP.
"""
from __future__ import annotations

import jax

from fedrecon_bench import privacy
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast import dp


class Mean:
    """The weighted mean of the updates; no state."""

    dp = None

    def __init__(self):
        self._wrapped = {}  # one wrapper per client function: the executor compiles by identity

    def init(self):
        return None

    def client(self, fn):
        """fn(params, client) as fn((params, aggregator state), client)."""
        if fn not in self._wrapped:
            self._wrapped[fn] = lambda shared, c: fn(shared[0], c)
        return self._wrapped[fn]

    def server(self, st, sums, round_):
        """(the mean update, the next aggregator state) from the summed ClientOut."""
        return fc.mean(sums.delta, sums.weight), st

    def metrics(self, st, sums) -> dict:
        return {}

    def clip(self, st) -> float | None:
        return None


class DP(Mean):
    """User-level DP (privacy.Params): clip in the client, noise at the server. The noise of
    round r is drawn from a key folded from the run seed and r: the same on resume."""

    def __init__(self, p: privacy.Params, seed: int):
        super().__init__()
        self.dp, self.key = p, dp.noise_key(seed)

    def init(self):
        return dp.init(self.dp)

    def client(self, fn):
        if fn not in self._wrapped:
            self._wrapped[fn] = dp.Clients(self.dp, fn)
        return self._wrapped[fn]

    def server(self, st, sums, round_):
        return dp.aggregate(self.dp, st, sums.delta, sums.agg, jax.random.fold_in(self.key, round_))

    def metrics(self, st, sums) -> dict:
        return dp.round_metrics(self.dp, st, sums.agg)

    def clip(self, st) -> float:
        return float(st["clip"])


def build(cfg, spec):
    """The run's aggregator: DP when the config asks for it (and the algorithm federates)."""
    p = privacy.params(cfg) if spec.federated else None
    return DP(p, cfg.seed) if p else Mean()
