"""User-level differential privacy: the `dp` config, the noise split, and the accounting.

No TensorFlow and no JAX here: validate.py checks the config with it before anything
loads, both engines take their numbers from `params` (engines/tff/dp.py builds TFF's own
factories; engines/fast/dp.py is the same in JAX), and the driver reports ε with `Report`.

The mechanism (TFF's DifferentiallyPrivateFactory): each client's model update is clipped
to L2 norm C, the clipped updates are summed, Gaussian noise N(0, (z_v C)^2) is added to
every coordinate and the sum is divided by clients_per_round. `gaussian_adaptive` moves C
towards a quantile of the update norms from a noised count of clients under the clip;
that count spends part of the privacy budget, so the value noise z_v is a little above
the total noise multiplier z, which is what the accounting uses (TFF documents z as the
effective multiplier: 1/z^2 = 1/z_v^2 + 1/(2 sigma_count)^2).

Accounting: two ε, both always logged (`epsilon_poisson`, `epsilon_replace_one`);
`dp.accountant` names the one tables and plots show (default: poisson).

  poisson      RDP of the Poisson-sampled Gaussian: each user included with probability
               q = m / N, add/remove adjacency, multiplier z (dp-accounting's
               PoissonSampledDpEvent + GaussianDpEvent, RdpAccountant's default relation).
               What papers, TFF's tutorials and the FedRecon authors' maintainers report,
               so it is the number to compare with theirs. For the fixed-size sampler the
               loop runs it is the literature's approximation, not a proven bound.
  replace_one  The loop samples m = clients_per_round of the N training users uniformly
               without replacement. dp-accounting models exactly this sampler only under
               replace-one adjacency (SampledWithoutReplacementDpEvent: the
               Wang-Balle-Kasiviswanathan bound). Swapping one user changes the clipped sum
               by up to 2C (and the +-0.5 count by up to 1), so the multiplier relative to
               that sensitivity is z/2: Gaussian(z/2). Valid, and conservative, for the
               sampler the loop runs.
"""
from __future__ import annotations

import dataclasses
import functools
import math

from fedrecon_bench import weighting as client_weighting
from fedrecon_bench.errors import UserError

KINDS = ("none", "gaussian_adaptive", "gaussian_fixed")
# dp.accountant -> the row / summary key of its ε, and what it computes (summary.json `accounting`).
EPSILON_KEYS = {"poisson": "epsilon_poisson", "replace_one": "epsilon_replace_one"}
ACCOUNTING = {
    "epsilon_poisson": "rdp (dp-accounting RdpAccountant, add/remove adjacency), Poisson sampling "
                       "q = clients_per_round / training users, noise multiplier z (the literature's)",
    "epsilon_replace_one": "rdp (dp-accounting RdpAccountant, replace-one adjacency), clients_per_round "
                           "of the training users without replacement, noise multiplier z/2 (conservative)"}
DEFAULT_ACCOUNTANT = "poisson"
SAMPLING = "clients_per_round of the training users per round, uniformly without replacement"
# TFF's adaptive zeroing in front of the DP query (tff.learning.dp_aggregator, zeroing=True):
# zero an update whose largest |value| exceeds 2 Z + 1, with Z moved geometrically (rate
# ln 10, no noise) towards the 0.98 quantile of those values, starting at 10.
ZEROING = {"initial": 10.0, "quantile": 0.98, "learning_rate": math.log(10.0), "multiplier": 2.0,
           "increment": 1.0}


@dataclasses.dataclass(frozen=True)
class Params:
    kind: str
    noise_multiplier: float  # z: the total, what the accounting uses
    value_noise: float       # z_v: the multiplier of the noise on the summed updates
    count_stddev: float      # the noise on the count of clients under the clip (adaptive)
    clip: float              # the fixed clip, or the adaptive clip's start
    target_quantile: float
    clip_learning_rate: float
    zeroing: bool
    clients_per_round: int
    accountant: str = DEFAULT_ACCOUNTANT  # the ε tables and plots show; both are logged

    @property
    def adaptive(self) -> bool:
        return self.kind == "gaussian_adaptive"


def kind(cfg) -> str:
    return (cfg.get("dp") or {}).get("name", "none")


def noise_split(z: float, m: float, count_stddev: float | None) -> tuple[float, float]:
    """(z_v, count stddev) of adaptive clipping with total multiplier z (TFF's split): the
    count noise defaults to m / 20; z_v solves 1/z^2 = 1/z_v^2 + 1/(2 count stddev)^2."""
    if z <= 0:
        return 0.0, float(count_stddev or 0.0)
    sc = 0.05 * m if count_stddev is None else float(count_stddev)
    if z >= 2 * sc:
        raise UserError(
            f"dp.noise_multiplier={z} needs more count noise than dp.count_stddev={sc:g} (default "
            f"clients_per_round/20) gives for adaptive clipping; raise clients_per_round above "
            f"{10 * z:g}, set dp.count_stddev above {z / 2:g}, or use dp=gaussian_fixed")
    return (z ** -2 - (2 * sc) ** -2) ** -0.5, sc


def _number(d, key: str, low: float, low_ok: bool, high: float | None = None):
    v = d.get(key)
    ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and (
        v >= low if low_ok else v > low) and (high is None or v <= high)
    if not ok:
        rng = f"{'>=' if low_ok else '>'} {low:g}" + (f" and <= {high:g}" if high is not None else "")
        raise UserError(f"dp.{key}={v!r} must be a number {rng}")
    return float(v)


def params(cfg) -> Params | None:
    """The run's DP parameters, checked (None without DP)."""
    k = kind(cfg)
    if k not in KINDS:
        raise UserError(f"dp.name={k!r} is unknown; use dp=<one of {', '.join(KINDS)}>")
    if k == "none":
        return None
    d = cfg.dp
    z = _number(d, "noise_multiplier", 0.0, True)
    m = int(cfg.clients_per_round)
    if d.get("delta") is not None:
        _number(d, "delta", 0.0, False, 1.0)
    acc = d.get("accountant", DEFAULT_ACCOUNTANT)
    if acc not in EPSILON_KEYS:
        raise UserError(f"dp.accountant={acc!r} is unknown; use poisson (the literature's ε, the default) "
                        "or replace_one (the conservative ε); both are logged either way")
    if k == "gaussian_fixed":
        return Params(k, z, z, 0.0, _number(d, "clip", 0.0, False), 0.0, 0.0, bool(d.get("zeroing")), m, acc)
    if d.get("count_stddev") is not None:
        _number(d, "count_stddev", 0.0, True)
    zv, sc = noise_split(z, m, d.get("count_stddev"))
    return Params(k, z, zv, sc, _number(d, "clip", 0.0, False), _number(d, "target_quantile", 0.0, True, 1.0),
                  _number(d, "clip_learning_rate", 0.0, True), bool(d.get("zeroing")), m, acc)


def check(cfg, spec=None) -> None:
    """Before any data is read: the dp config, whether the algorithm (its SPEC) can run
    under DP, and the weighting DP needs."""
    if spec is None:
        from fedrecon_bench import algorithms

        spec = algorithms.spec(cfg.algo.name)
    k = kind(cfg)
    if k in KINDS and k != "none":
        if not (spec.federated and spec.dp):
            why = ("it trains on the server: there are no client updates to privatize" if not spec.federated
                   else "its client updates cannot go through the DP aggregator")
            raise UserError(f"dp={k} does not apply to +algo={spec.name}: {why}; "
                            "use dp=none or a federated algorithm")
        weighting = client_weighting.kind(cfg)
        if weighting != "uniform":
            raise UserError(f"dp={k} needs uniform client weighting, but algo.client_weighting="
                            f"{weighting!r}; set algo.client_weighting=uniform")
    params(cfg)


# --------------------------------------------------------------------------
# Accounting
# --------------------------------------------------------------------------
def _rdp_epsilon(event, relation, rounds: int, delta: float) -> float:
    import dp_accounting
    from dp_accounting import rdp

    acc = rdp.RdpAccountant(neighboring_relation=getattr(dp_accounting.NeighboringRelation, relation))
    acc.compose(dp_accounting.SelfComposedDpEvent(event, rounds))
    return float(acc.get_epsilon(delta))


@functools.lru_cache(maxsize=256)
def epsilon_replace_one(z: float, n: int, m: int, rounds: int, delta: float) -> float:
    """ε after `rounds` rounds, each sampling m of n users without replacement and releasing
    the Gaussian mechanism with total noise multiplier z, under replace-one adjacency
    (inf without noise)."""
    if rounds <= 0:
        return 0.0
    if z <= 0:
        return math.inf
    import dp_accounting

    event = dp_accounting.SampledWithoutReplacementDpEvent(
        n, m, dp_accounting.GaussianDpEvent(z / 2))  # z/2: replace-one sensitivity 2C
    return _rdp_epsilon(event, "REPLACE_ONE", rounds, delta)


@functools.lru_cache(maxsize=256)
def epsilon_poisson(z: float, n: int, m: int, rounds: int, delta: float) -> float:
    """ε after `rounds` rounds of the Gaussian mechanism with multiplier z on a Poisson
    sample of rate m / n, under add/remove adjacency (inf without noise)."""
    if rounds <= 0:
        return 0.0
    if z <= 0:
        return math.inf
    import dp_accounting

    event = dp_accounting.PoissonSampledDpEvent(m / n, dp_accounting.GaussianDpEvent(z))
    return _rdp_epsilon(event, "ADD_OR_REMOVE_ONE", rounds, delta)


class Report:
    """What a DP run logs: both ε at δ on val/test rows, and summary.json's `privacy`."""

    def __init__(self, cfg, num_train: int):
        self.p = params(cfg)
        self.n = int(num_train)
        d = cfg.dp.get("delta")
        self.delta = float(d) if d is not None else 1.0 / self.n

    def row(self, rounds: int) -> dict:
        args = (self.p.noise_multiplier, self.n, self.p.clients_per_round, int(rounds), self.delta)
        return {"epsilon_poisson": epsilon_poisson(*args), "epsilon_replace_one": epsilon_replace_one(*args),
                "delta": self.delta}

    def summary(self, rounds: int, clips: list[float], final_clip: float | None) -> dict:
        """clips: the clip of each round run; final_clip: the one the next round would use.
        `accountant` is dp.accountant: which of the two ε tables and plots show."""
        p = self.p
        return {"mechanism": p.kind, "noise_multiplier": p.noise_multiplier,
                "value_noise_multiplier": p.value_noise, "count_stddev": p.count_stddev,
                "clip_final": final_clip, "clip_mean": (sum(clips) / len(clips)) if clips else None,
                "zeroing": p.zeroing, "rounds": int(rounds), **self.row(rounds),
                "accountant": p.accountant, "accounting": dict(ACCOUNTING),
                "sampling": f"{SAMPLING} ({p.clients_per_round} of {self.n})"}
