"""User-level DP on engine=tff: TFF's own aggregation factories, from privacy.Params
(engines/fast/dp.py is the JAX twin; aggregate.py plugs either into an algorithm).

Algorithms built on TFF's processes pass `factory(p)` to TFF's builders as the
model-update aggregator; algorithms with TF client steps run the same factory's
aggregation process on their clients' global updates (`Aggregator`). With the default constants the factory is
`tff.learning.dp_aggregator(z, clients_per_round, zeroing)` (tests/test_dp.py checks).
"""
from __future__ import annotations

import numpy as np

from fedrecon_bench import privacy


def factory(p: privacy.Params):
    """DifferentiallyPrivateFactory.gaussian_adaptive / gaussian_fixed, with TFF's adaptive
    zeroing in front when p.zeroing."""
    import tensorflow_federated as tff

    dp = tff.aggregators.DifferentiallyPrivateFactory
    z, m = float(p.noise_multiplier), float(p.clients_per_round)  # TFF insists on floats
    if p.adaptive:
        f = dp.gaussian_adaptive(z, m, initial_l2_norm_clip=float(p.clip),
                                 target_unclipped_quantile=float(p.target_quantile),
                                 learning_rate=float(p.clip_learning_rate),
                                 clipped_count_stddev=float(p.count_stddev))
    else:
        f = dp.gaussian_fixed(z, m, float(p.clip))
    if p.zeroing:
        c = privacy.ZEROING
        norm = tff.aggregators.PrivateQuantileEstimationProcess.no_noise(
            initial_estimate=c["initial"], target_quantile=c["quantile"], learning_rate=c["learning_rate"],
            multiplier=c["multiplier"], increment=c["increment"], secure_estimation=False)
        f = tff.aggregators.zeroing_factory(zeroing_norm=norm, inner_agg_factory=f)
    return f


def clip(p: privacy.Params, agg_state) -> float:
    """The clip the next round uses, from the aggregator's state."""
    inner = agg_state["inner_agg"] if p.zeroing else agg_state
    num = inner.query_state.numerator_state
    return float(num.sum_state.l2_norm_clip if p.adaptive else num.l2_norm_clip)


def round_metrics(p: privacy.Params, agg_state_before, measurements) -> dict:
    """A round's DP row values: the clip it used and, with zeroing, the threshold it used
    and how many updates it zeroed (the same names as engine=fast's)."""
    out = {"dp_clip": clip(p, agg_state_before)}
    if p.zeroing:
        out.update(dp_zeroing_norm=float(measurements["zeroing_norm"]),
                   dp_zeroed=int(measurements["zeroed_count"]))
    return out


class Aggregator:
    """The factory's aggregation process over lists of float32 arrays (one list per client)."""

    def __init__(self, p: privacy.Params, shapes):
        import tensorflow_federated as tff

        self.p = p
        self.process = factory(p).create(tff.types.to_type(
            [tff.TensorType(np.float32, list(s)) for s in shapes]))

    def initialize(self):
        return self.process.initialize()

    def next(self, state, updates):
        """(new state, the noised mean, the round's DP metrics)."""
        out = self.process.next(state, [[np.asarray(u, np.float32) for u in c] for c in updates])
        return out.state, [np.asarray(x) for x in out.result], round_metrics(self.p, state, out.measurements)
