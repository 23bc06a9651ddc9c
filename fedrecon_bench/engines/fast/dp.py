"""User-level DP on engine=fast: TFF's DP aggregation (fedrecon_bench/privacy.py) in JAX
(engines/tff/dp.py builds TFF's own; aggregate.py plugs either into an algorithm).

    in each client, after its update x is computed (execute.py sums what it returns):
        zeroing: x <- 0 if max |x| > 2 Z + 1                       (Z: the raw estimate)
        n <- ||x||_2 over every parameter;  x <- x * C min(1/n, 1/C)  (clip to C; n = 0 stays 0)
        tallies: [n <= C] - 1/2,  [max |x| <= Z] - 1/2,  zeroed,  1
    at the server, S = the sum of the clipped updates:
        mean <- (S + N(0, (z_v C)^2) per value) / clients_per_round
        adaptive: C <- C exp(-lr (clip01(noised count / clients_per_round + 1/2) - q))
        zeroing:  Z <- Z exp(-ln 10 (clip01(count / clients + 1/2) - 0.98))   (no noise)

The comparisons (<= C, > 2Z+1, <= Z), the clip scale C min(1/n, 1/C) and the fixed
denominator are TFF's, so noise 0 gives TFF's numbers (tests/test_dp.py). A sparse
table's update is the client's view of its own rows (fast/client.py); the rows it
does not hold are zero, so the view's norms are the whole update's (client.py). The noise for a
round is drawn from a key folded from the run seed and the round: the same on resume.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedrecon_bench import privacy

f32 = jnp.float32


def init(p: privacy.Params) -> dict:
    st = {"clip": f32(p.clip)}
    return {**st, "zeroing": f32(privacy.ZEROING["initial"])} if p.zeroing else st


class Clients:
    """An algorithm's client function whose update is zeroed and clipped before it is
    summed; runs as fn(params, client) with shared = (params, DP state)."""

    def __init__(self, p: privacy.Params, fn):
        self.p, self.fn = p, fn

    def __call__(self, shared, c):
        params, st = shared
        out = self.fn(params, c)
        x = out.delta
        z = privacy.ZEROING
        top = jnp.max(jnp.stack([jnp.max(jnp.abs(t)) for t in x.values()]))
        tally = {"clients": f32(1.0)}
        if self.p.zeroing:
            zero = top > f32(z["multiplier"]) * st["zeroing"] + f32(z["increment"])
            x = {n: jnp.where(zero, jnp.zeros_like(t), t) for n, t in x.items()}
            tally.update(zeroed=zero.astype(f32), below_zeroing=(top <= st["zeroing"]).astype(f32) - 0.5)
        norm = jnp.sqrt(sum(jnp.sum(t * t) for t in x.values()))
        clip = st["clip"]
        scale = clip * jnp.minimum(f32(1.0) / norm, f32(1.0) / clip)
        tally["below_clip"] = (norm <= clip).astype(f32) - 0.5
        # Under DP every client counts once (weight 1): the mean's denominator is fixed.
        return out._replace(delta={n: t * scale for n, t in x.items()}, weight=f32(1.0), agg=tally)


def aggregate(p: privacy.Params, st: dict, total: dict, tally: dict, key):
    """(the noised mean of the clipped updates, the next DP state)."""
    clip, m = st["clip"], f32(p.clients_per_round)
    k_sum, k_count = jax.random.split(key)
    names = sorted(total)
    keys = dict(zip(names, jax.random.split(k_sum, len(names))))
    std = f32(p.value_noise) * clip
    mean = {n: (s + jax.random.normal(keys[n], s.shape, f32) * std) / m for n, s in total.items()}
    new = dict(st)
    if p.adaptive:
        below = tally["below_clip"] + jax.random.normal(k_count, (), f32) * f32(p.count_stddev)
        frac = jnp.clip(below / m + f32(0.5), 0.0, 1.0)
        new["clip"] = clip * jnp.exp(-f32(p.clip_learning_rate) * (frac - f32(p.target_quantile)))
    if p.zeroing:
        z = privacy.ZEROING
        frac = jnp.clip(tally["below_zeroing"] / tally["clients"] + f32(0.5), 0.0, 1.0)
        new["zeroing"] = st["zeroing"] * jnp.exp(-f32(z["learning_rate"]) * (frac - f32(z["quantile"])))
    return mean, new


def round_metrics(p: privacy.Params, st: dict, tally: dict) -> dict:
    """The DP row values of a round (engine=tff's names): the clip it used and, with
    zeroing, the threshold it used and how many updates it zeroed."""
    out = {"dp_clip": float(st["clip"])}
    if p.zeroing:
        z = privacy.ZEROING
        out.update(dp_zeroing_norm=float(f32(z["multiplier"]) * st["zeroing"] + f32(z["increment"])),
                   dp_zeroed=int(round(float(tally["zeroed"]))))
    return out


def noise_key(seed: int):
    """The root of the DP noise keys (folded with the round): a stream apart from the
    clients' round keys, which fold the round into PRNGKey(seed) itself."""
    return jax.random.split(jax.random.PRNGKey(seed))[1]
