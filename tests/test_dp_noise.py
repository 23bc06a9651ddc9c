"""DP noise on a model with several variables (MovieLens with item biases and a global
bias), on both engines' mechanisms, and the constants of engine=tff's DP factory.

The engines agree only at noise 0 (tests/test_dp.py), so the noise itself is checked
here against numbers built from TFF's documented formula, never from the code's own
`privacy.noise_split` / `Params.value_noise`:

    count noise  sigma_c = 0.05 m                     (TFF's default, m = clients_per_round)
    value noise  z_v from 1/z^2 = 1/z_v^2 + 1/(2 sigma_c)^2
    the mean's noise per value ~ N(0, (z_v C / m)^2), independent across values and rounds.
"""
from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import compose
from test_fast_engine import _build

SE_BOUND = 5  # within 5 standard errors (fails by chance ~1 in 1.7 million)
Z, M = 1.0, 20
SIGMA_C = 0.05 * M
ZV = (Z ** -2 - (2 * SIGMA_C) ** -2) ** -0.5  # = 1 / sqrt(0.75) = 1.1547
MODEL = ("task.biases=true", "task.global_bias=true")
DP = ("dp=gaussian_adaptive", f"dp.noise_multiplier={Z}", f"clients_per_round={M}")
GLOBALS = ["global_bias", "item_bias", "item_embedding"]


def _std_problem(x: np.ndarray, want: float, what: str) -> str | None:
    """None when the sample std is within SE_BOUND relative standard errors
    (1/sqrt(2(n-1))) of `want` and the mean within SE_BOUND standard errors of 0."""
    n, ratio, mean = x.size, float(x.std()) / want, float(x.mean())
    if abs(ratio - 1) < SE_BOUND / math.sqrt(2 * (n - 1)) and abs(mean) < SE_BOUND * want / math.sqrt(n):
        return None
    return f"{what}: std / want = {ratio:.4f}, mean {mean:.3g} over {n} values"


def _dependence_problem(a: np.ndarray, b: np.ndarray, what: str) -> str | None:
    """None when pairs of draws look independent: no value repeats, and the correlation
    is within SE_BOUND standard errors (1/sqrt(n)) of 0."""
    a, b = a.ravel(), b.ravel()
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant draw has no correlation
        repeats, corr = int(np.sum(a == b)), float(np.corrcoef(a, b)[0, 1])
    if repeats == 0 and abs(corr) < SE_BOUND / math.sqrt(a.size):
        return None
    return f"{what}: {repeats} of {a.size} values repeat, correlation {corr:.4f}"


def _check_noise(per_variable: dict, want: float, scalar_pairs: bool = True) -> None:
    """Each variable's noise (rounds first) has std `want` and is new every round:
    all problems in one message."""
    problems = []
    for name, x in sorted(per_variable.items()):
        problems.append(_std_problem(x, want, name))
        if scalar_pairs or x[0].size > 1:
            problems.append(_dependence_problem(x[1:], x[:-1], f"{name}, round r+1 vs r"))
    problems = [p for p in problems if p]
    assert not problems, "; ".join(problems)


# --------------------------------------------------------------------------
# engine=fast (fedrecon_bench/engines/fast/dp.py through the engine's server step)
# --------------------------------------------------------------------------
def _fast(tiny_ratings, tmp_path):
    return _build("fast", "fedrecon", tiny_ratings, tmp_path, *MODEL, *DP)[0]


def _server_noise(a, state, rounds: int):
    """({variable: each round's noise on the mean / that round's clip}, the last state):
    server steps on all-zero updates. Server SGD at rate 1 moves the weights by exactly
    minus the noised mean, which here is the noise alone."""
    import jax.numpy as jnp

    from fedrecon_bench.engines.fast.state import ClientOut

    f = jnp.float32
    zero = ClientOut(delta={k: jnp.zeros_like(v) for k, v in state.params.items()}, weight=f(M),
                     # the zeroing count at its 0.98 quantile, so the threshold stays where it is
                     agg={"below_clip": f(0.0), "below_zeroing": f(0.48 * M), "clients": f(M)})
    out = []
    for _ in range(rounds):
        clip = a.dp_clip(state)
        new = a.server_step(state, zero)
        out.append({k: (np.asarray(state.params[k]) - np.asarray(new.params[k])) / clip
                    for k in new.params})
        state = new
    return {k: np.stack([o[k] for o in out]) for k in out[0]}, state


def test_fast_noise_has_the_right_std_on_every_variable_and_is_new_every_round(tiny_ratings, tmp_path):
    """1,000 rounds: every global variable (the scalar global bias too) gets noise of std
    z_v C / m, independent between consecutive rounds and between variables."""
    a = _fast(tiny_ratings, tmp_path)
    noise, _ = _server_noise(a, a.initialize(), 1000)
    assert sorted(noise) == GLOBALS
    _check_noise(noise, ZV / M)
    problem = _dependence_problem(noise["item_bias"][..., 0], noise["item_embedding"][..., 0],
                                 "item_bias vs item_embedding[:, 0]")
    assert problem is None, problem


def test_fast_noise_is_the_same_after_a_checkpoint_and_resume(tiny_ratings, tmp_path):
    """Rounds 4-6 from a checkpoint of round 3, in a newly built algorithm: the same noise
    on every variable as without the interruption."""
    from fedrecon_bench import checkpoint

    a = _fast(tiny_ratings, tmp_path)
    _, state = _server_noise(a, a.initialize(), 3)
    checkpoint.save(str(tmp_path / "run"), 3, state, {})
    want, _ = _server_noise(a, state, 3)
    b = _fast(tiny_ratings, tmp_path)
    restored, _ = checkpoint.load_latest(str(tmp_path / "run"), b.initialize())
    got, _ = _server_noise(b, restored, 3)
    assert sorted(got) == GLOBALS
    for name in GLOBALS:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# --------------------------------------------------------------------------
# engine=tff (fedrecon_bench/engines/tff/dp.py: TFF's DifferentiallyPrivateFactory)
# --------------------------------------------------------------------------
@pytest.mark.tff
def test_tff_noise_has_the_right_std_on_every_variable_and_is_new_every_round():
    """40 rounds of the factory's aggregation process on the model's global variables
    (TFF's process is slow per call: the scalar's check is loose, the tables' tight)."""
    from fedrecon_bench import privacy
    from fedrecon_bench.engines.tff import dp as dp_tff
    from tasks.movielens import MovieLensFast

    cfg = compose("+task=movielens", "+algo=fedrecon", "task.embedding_dim=8", *MODEL, *DP)
    model = MovieLensFast(cfg.task, 25)
    g0 = model.init(0)[0]
    names = list(model.global_names)
    p = privacy.params(cfg)
    agg = dp_tff.Aggregator(p, [g0[n].shape for n in names])
    state = agg.initialize()
    zero = [[np.zeros(g0[n].shape, np.float32) for n in names]]  # one client; m is the denominator
    rounds = []
    for _ in range(40):
        clip = dp_tff.clip(p, state)
        state, mean, _ = agg.next(state, zero)
        rounds.append([x / clip for x in mean])
    assert sorted(names) == GLOBALS
    # 39 pairs of a scalar say little about correlation: only the tables' rounds are paired
    _check_noise({n: np.stack([r[i] for r in rounds]) for i, n in enumerate(names)}, ZV / M, scalar_pairs=False)


def _process(*overrides):
    import tensorflow_federated as tff

    from fedrecon_bench import privacy
    from fedrecon_bench.engines.tff import dp as dp_tff

    p = privacy.params(compose("+task=movielens", "+algo=fedrecon", *overrides))
    value = tff.types.to_type([tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [3])])
    process = dp_tff.factory(p).create(value)
    return process, process.initialize()


def _check_adaptive_query(q, z, m, clip, quantile, lr, sigma_c):
    """TFF's NormalizedQuery(QuantileAdaptiveClipSumQuery) state, against the constants."""
    zv = (z ** -2 - (2 * sigma_c) ** -2) ** -0.5  # TFF's adaptive_clip_noise_params
    num, approx = q.numerator_state, lambda v: pytest.approx(v, rel=1e-6)
    est = num.quantile_estimator_state
    count = est.below_estimate_state
    assert q.denominator == m and count.denominator == m
    assert num.noise_multiplier == approx(zv)
    assert (num.sum_state.l2_norm_clip, num.sum_state.stddev) == (approx(clip), approx(zv * clip))
    assert (est.current_estimate, est.target_quantile, est.learning_rate) == (approx(clip), approx(quantile),
                                                                             approx(lr))
    # the count of clients under the clip: records +-1/2, noise sigma_c; the two multipliers
    # compose to z: 1/z^2 = 1/z_v^2 + (1/2 / sigma_c)^2
    assert (count.numerator_state.l2_norm_clip, count.numerator_state.stddev) == (0.5, approx(sigma_c))
    assert num.noise_multiplier ** -2 + (0.5 / count.numerator_state.stddev) ** 2 == approx(z ** -2)


@pytest.mark.tff
def test_tff_factory_constants_are_pinned():
    """Clip, noise multipliers, target quantile, learning rate and the zeroing constants,
    read from the built aggregation processes' initial state (and the zeroing threshold
    from a round's measurements)."""
    # the defaults (conf/dp/gaussian_adaptive.yaml, TFF's): adaptive clip, zeroing in front
    process, st = _process("dp=gaussian_adaptive", "dp.noise_multiplier=1.0", "clients_per_round=20")
    zeroing, _ = st["zeroing_norm"]
    assert (zeroing.current_estimate, zeroing.target_quantile, zeroing.learning_rate) == (
        10.0, pytest.approx(0.98), pytest.approx(math.log(10.0)))
    _check_adaptive_query(st["inner_agg"].query_state, 1.0, 20.0, 0.1, 0.5, 0.2, sigma_c=1.0)
    out = process.next(st, [[np.zeros(2, np.float32), np.zeros(3, np.float32)]])
    assert float(out.measurements["zeroing_norm"]) == pytest.approx(2 * 10.0 + 1)  # 2 Z + 1
    # every constant reaches TFF: other values, no zeroing
    _, st = _process("dp=gaussian_adaptive", "dp.noise_multiplier=0.5", "clients_per_round=10", "dp.clip=0.3",
                     "dp.target_quantile=0.7", "dp.clip_learning_rate=0.05", "dp.count_stddev=2.0",
                     "dp.zeroing=false")
    _check_adaptive_query(st.query_state, 0.5, 10.0, 0.3, 0.7, 0.05, sigma_c=2.0)
    # a fixed clip: GaussianSumQuery(C, z C) over m
    _, st = _process("dp=gaussian_fixed", "dp.noise_multiplier=0.8", "dp.clip=0.25", "clients_per_round=10")
    q = st.query_state
    assert (q.numerator_state.l2_norm_clip, q.numerator_state.stddev, q.denominator) == (
        0.25, pytest.approx(0.8 * 0.25), 10.0)
