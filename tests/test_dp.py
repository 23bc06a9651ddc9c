"""User-level differential privacy (docs/privacy.md): the mechanism on both
engines, its noise, its accounting, and the runs it is refused for.

- noise 0: engine=fast equals TFF's own DP aggregators (fixed clip; adaptive clip with
  zeroing, whose count noise is then 0 too), weights, metrics and the clip trajectory;
- noise > 0: the noise's standard deviation is z_v C / clients_per_round, and a run's
  noise is a function of its seed, also across a crash and resume;
- both ε (Poisson add/remove, and replace-one without replacement) equal dp-accounting's
  values computed here, grow with rounds and shrink with noise; a run logs both.
"""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from conftest import compose, crash_then_resume, untimed_rows
from test_fast_engine import _build, _compare

FIXED = ("dp=gaussian_fixed", "dp.noise_multiplier=0.0", "dp.clip=0.2")  # clips some clients, not all
ADAPTIVE = ("dp=gaussian_adaptive", "dp.noise_multiplier=0.0")  # zeroing on: TFF's dp_aggregator
SE_BOUND = 5  # statistical checks: within 5 standard errors (fails by chance ~1 in 1.7 million)


# --------------------------------------------------------------------------
# noise 0: the two engines agree
# --------------------------------------------------------------------------
@pytest.mark.tff
@pytest.mark.parametrize("algo", ["fedrecon", "fedavg"])
@pytest.mark.parametrize("dp", [FIXED, ADAPTIVE], ids=["fixed", "adaptive"])
def test_dp_engines_agree_at_noise_zero(tiny_ratings, tmp_path, algo, dp):
    """Three rounds, each compared (so after one and after three): weights, round metrics
    (with dp_clip, and with zeroing the threshold and zeroed count), then an evaluation."""
    _compare(algo, tiny_ratings, tmp_path, "clients_per_round=6", *dp, rounds=3)


@pytest.mark.tff
def test_stateful_dp_engines_agree_at_noise_zero(tiny_ratings, tmp_path):
    _compare("stateful_fedavg", tiny_ratings, tmp_path, "clients_per_round=6", *ADAPTIVE, rounds=2)


@pytest.mark.tff
def test_uniform_weighting_engines_agree(tiny_ratings, tmp_path):
    _compare("fedavg", tiny_ratings, tmp_path, "algo.client_weighting=uniform", rounds=1)


@pytest.mark.tff
def test_tff_factory_is_tffs_dp_aggregator_with_the_defaults():
    import tensorflow_federated as tff

    from fedrecon_bench import privacy
    from fedrecon_bench.engines.tff import dp as dp_tff

    value = tff.types.to_type([tff.TensorType(np.float32, [2]), tff.TensorType(np.float32, [3])])
    for z, zeroing in ((0.0, True), (1.0, False)):
        cfg = compose("+task=movielens", "+algo=fedrecon", "dp=gaussian_adaptive", "clients_per_round=20",
                      f"dp.noise_multiplier={z}", f"dp.zeroing={zeroing}")
        ours = dp_tff.factory(privacy.params(cfg)).create(value).next.type_signature
        theirs = tff.learning.dp_aggregator(z, 20.0, zeroing).create(value).next.type_signature
        assert ours.is_equivalent_to(theirs)


# --------------------------------------------------------------------------
# the mechanism's pieces (engine=fast)
# --------------------------------------------------------------------------
def _params(*overrides):
    from fedrecon_bench import privacy

    return privacy.params(compose("+task=movielens", "+algo=fedrecon", *overrides))


def test_clip_and_zeroing_follow_tffs_comparisons():
    """Norm exactly C is not clipped (<=), a zero update stays zero, an update above the
    zeroing threshold 2Z+1 = 21 is zeroed and still counts as under the clip."""
    import jax.numpy as jnp

    from fedrecon_bench.engines.fast import dp
    from fedrecon_bench.engines.fast.state import ClientOut

    p = _params("dp=gaussian_adaptive", "dp.noise_multiplier=0.0", "dp.clip=5.0")
    st = dp.init(p)
    fn = lambda params, c: ClientOut(delta={"a": c["a"], "b": c["b"]}, weight=7.0, tally={})
    clients = dp.Clients(p, fn)
    cases = {  # update -> (clipped update, below clip, below Z, zeroed)
        "norm 5 = C": ([3.0, 0.0], [4.0], [3.0, 0.0], [4.0], 0.5, 0.5, 0.0),
        "norm 10": ([6.0, 0.0], [8.0], [3.0, 0.0], [4.0], -0.5, 0.5, 0.0),
        "zero": ([0.0, 0.0], [0.0], [0.0, 0.0], [0.0], 0.5, 0.5, 0.0),
        "max 21.5 > 21": ([21.5, 0.0], [0.0], [0.0, 0.0], [0.0], 0.5, -0.5, 1.0),
    }
    for name, (a, b, ca, cb, below, below_z, zeroed) in cases.items():
        out = clients((None, st), {"a": jnp.array(a), "b": jnp.array(b)})
        np.testing.assert_allclose(out.delta["a"], ca, rtol=1e-6, err_msg=name)
        np.testing.assert_allclose(out.delta["b"], cb, rtol=1e-6, err_msg=name)
        t = out.agg
        assert (float(out.weight), float(t["below_clip"]), float(t["below_zeroing"]),
                float(t["zeroed"])) == (1.0, below, below_z, zeroed), name


def test_noise_std_of_the_sum_and_of_the_count():
    """The mean's noise is N(0, (z_v C / m)^2) per value and the count's N(0, sigma_c^2):
    sample stds over 200,000 values / 4,000 rounds, within SE_BOUND standard errors
    (the relative standard error of a sample std of n normals is 1/sqrt(2(n-1)))."""
    import jax
    import jax.numpy as jnp

    from fedrecon_bench.engines.fast import dp

    p = _params("dp=gaussian_adaptive", "dp.noise_multiplier=2.0", "clients_per_round=100", "dp.clip=0.7")
    st = dp.init(p)
    total = {"a": jnp.full((1000, 100), 3.0), "b": jnp.zeros(100_000)}
    tally = {"below_clip": jnp.float32(0.0), "below_zeroing": jnp.float32(0.0), "clients": jnp.float32(100.0)}
    mean, _ = dp.aggregate(p, st, total, tally, jax.random.PRNGKey(3))
    noise = np.concatenate([np.ravel(mean["a"]) - 0.03, np.ravel(mean["b"])])
    want = p.value_noise * 0.7 / 100
    assert p.value_noise > p.noise_multiplier  # the count takes a share: z_v > z
    assert abs(noise.std() / want - 1) < SE_BOUND / math.sqrt(2 * (noise.size - 1))
    assert abs(noise.mean()) < SE_BOUND * want / math.sqrt(noise.size)
    # The count noise, read back from the clip's geometric step (the fraction stays in (0, 1)).
    keys = jax.random.split(jax.random.PRNGKey(4), 4000)
    clips = jax.vmap(lambda k: dp.aggregate(p, st, {"a": jnp.zeros(1)}, tally, k)[1]["clip"])(keys)
    frac = p.target_quantile - np.log(np.asarray(clips, np.float64) / 0.7) / p.clip_learning_rate
    count_noise = (frac - 0.5) * 100
    assert p.count_stddev == 5.0
    assert abs(count_noise.std() / 5.0 - 1) < SE_BOUND / math.sqrt(2 * 3999)


def _fast(tiny_ratings, tmp_path, *overrides, seed=0):
    a, data, pops = _build("fast", "fedrecon", tiny_ratings, tmp_path, "clients_per_round=6",
                           "task.embedding_dim=64", f"seed={seed}", *overrides)
    idx = np.arange(6)
    state, m = a.next(a.initialize(), pops[0].select(idx), [data.train.ids[i] for i in idx])
    return np.asarray(state.params["item_embedding"]), m


def test_round_noise_matches_sigma_c_over_clients_per_round(tiny_ratings, tmp_path):
    """One FedRecon round with a fixed clip (z_v = z), against the same round at noise 0:
    the weights differ by the noise / clients_per_round (server SGD at rate 1)."""
    z, clip = 0.5, 0.3
    fixed = ("dp=gaussian_fixed", f"dp.clip={clip}")
    w0, m0 = _fast(tiny_ratings, tmp_path, *fixed, "dp.noise_multiplier=0.0")
    w1, m1 = _fast(tiny_ratings, tmp_path, *fixed, f"dp.noise_multiplier={z}")
    diff = (w0 - w1).ravel()  # 25 items x 64
    want = z * clip / 6
    assert abs(diff.std() / want - 1) < SE_BOUND / math.sqrt(2 * (diff.size - 1)), (diff.std(), want)
    assert m0["dp_clip"] == m1["dp_clip"] == pytest.approx(clip)
    # the noise is the seed's: the same again, another with another seed
    np.testing.assert_array_equal(_fast(tiny_ratings, tmp_path, *fixed, f"dp.noise_multiplier={z}")[0], w1)
    other = _fast(tiny_ratings, tmp_path, *fixed, f"dp.noise_multiplier={z}", seed=1)[0]
    assert not np.allclose(other, w1)


def test_a_private_round_is_the_same_in_every_client_mode(tiny_ratings, tmp_path):
    """fast.clients: vmap groups, one compiled scan, host-stepped clients (fast/execute.py)."""
    dp = ("dp=gaussian_adaptive", "dp.noise_multiplier=0.5", "dp.clip=0.05")
    (w, m), *others = [_fast(tiny_ratings, tmp_path, *dp, f"fast.clients={mode}")
                       for mode in ("vmap", "sequential", "host")]
    for w_other, m_other in others:
        np.testing.assert_allclose(w_other, w, rtol=1e-5, atol=1e-6)
        assert m_other.keys() == m.keys() and m_other["dp_clip"] == m["dp_clip"]


def test_noise_is_restored_across_a_crash_and_resume(tiny_ratings, tmp_path, monkeypatch):
    from fedrecon_bench import algorithms

    args = ("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}", "rounds=6",
            "clients_per_round=6", "eval_every=3", "checkpoint_every=2", "logger=none",
            "dp=gaussian_adaptive", "dp.noise_multiplier=0.5", "engine=fast")
    resumed = crash_then_resume(monkeypatch, algorithms.get("fedrecon", "fast"), lambda: compose(*args),
                                tmp_path / "full", tmp_path / "crashed", crash_call=5)  # mid round 5
    full = json.loads((tmp_path / "full" / "summary.json").read_text())
    rows = untimed_rows(tmp_path / "full")
    assert resumed["resumed_from_round"] == 4
    assert untimed_rows(tmp_path / "crashed") == rows
    clips = [r["dp_clip"] for r in rows if r["split"] == "train"]
    assert len(set(clips)) == 6  # the clip moved every round
    with np.load(tmp_path / "full" / "global_weights.npz") as a, \
            np.load(tmp_path / "crashed" / "global_weights.npz") as b:
        for k in a.files:
            np.testing.assert_array_equal(a[k], b[k])
    assert resumed["privacy"] == full["privacy"]
    assert full["privacy"]["clip_mean"] == pytest.approx(np.mean(clips))


# --------------------------------------------------------------------------
# accounting
# --------------------------------------------------------------------------
def _direct_epsilon(z, n, m, rounds, delta):
    """dp-accounting, written out: m of n without replacement, replace-one, sensitivity 2C."""
    import dp_accounting
    from dp_accounting import rdp

    event = dp_accounting.SelfComposedDpEvent(dp_accounting.SampledWithoutReplacementDpEvent(
        n, m, dp_accounting.GaussianDpEvent(z / 2)), rounds)
    acc = rdp.RdpAccountant(neighboring_relation=dp_accounting.NeighboringRelation.REPLACE_ONE)
    return acc.compose(event).get_epsilon(delta)


def _direct_poisson_epsilon(z, n, m, rounds, delta):
    """dp-accounting, written out as the literature does: Poisson sampling at q = m/n,
    the RDP accountant's default (add/remove) relation, multiplier z."""
    import dp_accounting
    from dp_accounting import rdp

    event = dp_accounting.PoissonSampledDpEvent(m / n, dp_accounting.GaussianDpEvent(z))
    return rdp.RdpAccountant().compose(event, rounds).get_epsilon(delta)


def test_epsilon_is_dp_accountings_and_moves_the_right_way():
    from fedrecon_bench.privacy import epsilon_poisson, epsilon_replace_one

    n, m, delta = 4832, 100, 1 / 4832
    for epsilon, direct in ((epsilon_replace_one, _direct_epsilon), (epsilon_poisson, _direct_poisson_epsilon)):
        assert epsilon(1.0, n, m, 500, delta) == pytest.approx(direct(1.0, n, m, 500, delta), rel=1e-2)
        by_rounds = [epsilon(1.0, n, m, t, delta) for t in (10, 100, 500)]
        by_noise = [epsilon(z, n, m, 100, delta) for z in (0.8, 1.0, 2.0)]
        assert by_rounds == sorted(by_rounds) and len(set(by_rounds)) == 3
        assert by_noise == sorted(by_noise, reverse=True) and len(set(by_noise)) == 3
        assert epsilon(0.0, n, m, 10, delta) == math.inf and epsilon(1.0, n, m, 0, delta) == 0.0
    assert epsilon_replace_one(1.0, n, m, 500, delta) == pytest.approx(29.9507, abs=1e-4)  # spec's number
    # issue 24's example: z = 1, 100 of 4,832 users, 10 rounds: 7.55 conservative, 0.91 as papers report
    assert epsilon_replace_one(1.0, n, m, 10, delta) == pytest.approx(7.55, abs=0.005)
    assert epsilon_poisson(1.0, n, m, 10, delta) == pytest.approx(0.91, abs=0.005)


def test_unknown_accountant_is_a_one_line_error():
    from fedrecon_bench import privacy
    from fedrecon_bench.errors import UserError

    with pytest.raises(UserError) as e:
        privacy.check(compose("+task=movielens", "+algo=fedrecon", "dp=gaussian_fixed", "dp.accountant=pld"))
    assert str(e.value).startswith("dp.accountant='pld' is unknown; use poisson") and "\n" not in str(e.value)
    assert _params("dp=gaussian_adaptive").accountant == "poisson"  # the default, in conf/dp/*.yaml
    assert _params("dp=gaussian_fixed", "dp.accountant=replace_one").accountant == "replace_one"


def test_a_run_logs_both_epsilons_on_val_rows_and_in_its_summary(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    s = loop.run(compose("+task=movielens", "+algo=stateful_fedavg", f"task.ratings_file={tiny_ratings}",
                         "rounds=4", "clients_per_round=6", "eval_every=2", "logger=none",
                         "dp=gaussian_fixed", "dp.noise_multiplier=0.5", "dp.clip=0.4"), str(tmp_path))
    n = s["num_clients"]["train"]
    p = json.loads((tmp_path / "summary.json").read_text())["privacy"]
    assert p == s["privacy"]
    assert (p["noise_multiplier"], p["delta"]) == (0.5, 1 / n)
    assert p["clip_final"] == p["clip_mean"] == pytest.approx(0.4)  # float32 0.4
    assert p["epsilon_replace_one"] == pytest.approx(_direct_epsilon(0.5, n, 6, 4, 1 / n), rel=1e-2)
    assert p["epsilon_poisson"] == pytest.approx(_direct_poisson_epsilon(0.5, n, 6, 4, 1 / n), rel=1e-2)
    assert p["epsilon_poisson"] < p["epsilon_replace_one"] and "epsilon" not in p
    assert p["accountant"] == "poisson" and "without replacement" in p["sampling"]
    assert "replace-one" in p["accounting"]["epsilon_replace_one"] and "Poisson" in p["accounting"]["epsilon_poisson"]
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if r["split"] == "val"]
    assert [r["round"] for r in val] == [2, 2, 4, 4]  # two evaluation modes each
    for r in val + [r for r in rows if r["split"] == "test"]:
        assert r["epsilon_replace_one"] == pytest.approx(_direct_epsilon(0.5, n, 6, r["round"], 1 / n), rel=1e-2)
        assert r["epsilon_poisson"] == pytest.approx(_direct_poisson_epsilon(0.5, n, 6, r["round"], 1 / n),
                                                     rel=1e-2)


# --------------------------------------------------------------------------
# the study's sweep preset
# --------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["fedrecon", "fedavg", "stateful_fedavg"])
def test_privacy_sweep_preset_composes_and_its_grid_reaches_epsilon_10(algo):
    from hydra import compose as hydra_compose, initialize_config_dir
    from omegaconf import OmegaConf

    from fedrecon_bench import privacy
    from fedrecon_bench.cli_args import CONF_DIR

    preset = OmegaConf.load(f"{CONF_DIR}/sweep/movielens_dp_study.yaml")
    params = preset.hydra.sweeper.params
    grid = [float(z) for z in str(params["dp.noise_multiplier"]).split(",")]
    assert algo in params["+algo"].split(",") and str(params.seed) == "0,1,2"
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=[
            "+task=movielens", f"+algo={algo}", f"dp.noise_multiplier={grid[-1]}", "seed=2",
            "+sweep=movielens_dp_study"])
    privacy.check(cfg)  # uniform weighting, a count noise large enough for the largest z
    assert (cfg.dp.name, cfg.dp.clip, cfg.dp.zeroing, cfg.engine, cfg.task.split_by, cfg.task.max_users) == (
        "gaussian_fixed", 1.0, False, "fast", "user", None)
    assert 200 <= cfg.clients_per_round <= 500 and cfg.algo.client_weighting == "uniform"
    n, delta = 4832, 1 / 4832
    assert cfg.dp.delta is None  # 1 / training users = 1/4832 for all MovieLens-1M users
    assert grid[0] == 0.0 and grid == sorted(grid)
    assert privacy.epsilon_replace_one(grid[-1], n, cfg.clients_per_round, cfg.rounds, delta) <= 10.0


@pytest.mark.parametrize("algo,z,name,clip,lr,server", [
    ("fedrecon", 0, "gaussian_fixed", 10.0, 1.0, 2.0), ("fedrecon", 8, "gaussian_fixed", 1.0, 0.25, 1.0),
    ("stateful_fedavg", 4, "gaussian_fixed", 3.0, 0.1, 1.0), ("fedavg", 2, "gaussian_adaptive", 0.1, 0.1, 1.0)])
def test_privacy_sweep_preset_runs_each_rows_tuned_clip_and_rates(algo, z, name, clip, lr, server):
    """`-m +sweep=movielens_dp_study +algo=X dp.noise_multiplier=z` runs the study's pick
    (conf/sweep/movielens_dp_study.yaml `tuned:`); a rate on the command line wins."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from fedrecon_bench import tuned
    from fedrecon_bench.cli_args import CONF_DIR

    over = ["+task=movielens", f"+algo={algo}", f"dp.noise_multiplier={z}", "+sweep=movielens_dp_study"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=over)
        mine = hydra_compose(config_name="config", overrides=[*over, "algo.client_optimizer.learning_rate=0.01"])
    tuned.apply(cfg)
    tuned.apply(mine, tuned.override_keys(["algo.client_optimizer.learning_rate=0.01"]))
    assert (cfg.dp.name, cfg.dp.clip, cfg.algo.client_optimizer.learning_rate) == (name, clip, lr)
    assert cfg.algo.server_optimizer.learning_rate == server
    assert (mine.dp.clip, mine.algo.client_optimizer.learning_rate) == (clip, 0.01)
