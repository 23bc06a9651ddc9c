"""engine=fast equals engine=tff: same initial weights, same client batches, same
round (new global weights and round metrics) and same evaluation, to 1e-5."""
import numpy as np
import pytest

from conftest import compose

RTOL, ATOL = 1e-5, 1e-6


def _build(engine, algo, task_args, tmp_path, *overrides):
    import tasks
    from fedrecon_bench import algorithms, engines

    if not isinstance(task_args, (list, tuple)):  # a ratings file: the tiny MovieLens fixture
        task_args = ["+task=movielens", f"task.ratings_file={task_args}", "task.embedding_dim=4",
                     "task.batch_size=3"]
    cfg = compose(f"+algo={algo}", f"engine={engine}", *task_args, *overrides)
    task = tasks.get(cfg.task.name)(cfg.task, cfg.data_dir, 0)
    data = task.load()
    a = algorithms.get(algo, engine)(task, data.info, cfg, run_dir=str(tmp_path / engine))
    return a, data, engines.get(engine).populations(task, data, a)


def _close(fast: dict, ref: dict, what: str):
    assert set(fast) == set(ref), f"{what}: metric names differ: {sorted(fast)} vs {sorted(ref)}"
    for k in ref:
        np.testing.assert_allclose(fast[k], ref[k], rtol=RTOL, atol=ATOL, err_msg=f"{what}: {k}")


def _compare(algo, tiny_ratings, tmp_path, *overrides, rounds=2):
    """Runs `rounds` rounds and an evaluation on both engines; checks each step."""
    runs = {e: _build(e, algo, tiny_ratings, tmp_path, *overrides) for e in ("tff", "fast")}
    (tff_algo, data, tff_pops), (fast_algo, _, fast_pops) = runs["tff"], runs["fast"]
    states = {e: runs[e][0].initialize() for e in runs}
    w = {e: runs[e][0].global_weights(states[e]).trainable for e in runs}
    for a, b in zip(w["fast"], w["tff"]):
        np.testing.assert_array_equal(a, b)  # identical initial weights
    rng = np.random.default_rng(1)
    for r in range(rounds):
        idx = rng.choice(len(data.train), size=min(6, len(data.train)), replace=False)
        ids = [data.train.ids[i] for i in idx]
        out = {}
        for e, (a, _, pops) in runs.items():
            states[e], out[e] = a.next(states[e], pops[0].select(idx), ids)
        _close(out["fast"], out["tff"], f"{algo} round {r + 1} metrics")
        wf, wt = (runs[e][0].global_weights(states[e]).trainable for e in ("fast", "tff"))
        assert len(wf) == len(wt)
        for a, b in zip(wf, wt):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=ATOL, err_msg=f"{algo} round {r + 1} weights")
    seen = data.split_by == "example"
    ev = {}
    for e, (a, _, pops) in runs.items():
        recon_from = pops[0].select([data.train.index_of(c) for c in data.val.ids]) if seen else None
        ev[e] = a.evaluate(states[e], pops[1].all(), data.val.ids, seen=seen, recon_from=recon_from)
    if "loss" in ev["tff"]:  # one evaluation mode
        ev = {e: {"": m} for e, m in ev.items()}
    assert set(ev["fast"]) == set(ev["tff"])
    for mode in ev["tff"]:
        _close(ev["fast"][mode], ev["tff"][mode], f"{algo} evaluation {mode or ''}")
    return ev["fast"]


@pytest.mark.parametrize("overrides", [
    (),                                                    # the tutorial's split
    ("split/train=paper", "split/eval=paper"),             # epochs and step caps
    ("split/train=simple",),                               # reuse: all batches twice
    ("task.biases=true", "task.l2=0.01"),                  # more tables, penalty output
    ("algo.server_optimizer.name=adam", "algo.server_optimizer.learning_rate=0.05",
     "algo.client_optimizer.name=sgdm"),                   # stateful optimizers (dense steps)
    ("algo.server_optimizer.name=yogi", "algo.server_optimizer.learning_rate=0.05",
     "algo.reconstruction_optimizer.name=adagrad"),
    ("task.split_by=example",),                            # seen users: recon on training data
])
def test_fedrecon_engines_agree(tiny_ratings, tmp_path, overrides):
    _compare("fedrecon", tiny_ratings, tmp_path, *overrides)


@pytest.mark.parametrize("overrides", [(), ("task.split_by=example",), ("task.biases=true",)])
def test_fedavg_engines_agree(tiny_ratings, tmp_path, overrides):
    _compare("fedavg", tiny_ratings, tmp_path, *overrides)


@pytest.mark.parametrize("overrides", [
    ("algo.eval=finetune",), ("algo.eval=finetune", "algo.finetune.variables=local"),
    ("algo.eval=finetune", "task.split_by=example")])
def test_finetune_evaluation_engines_agree(tiny_ratings, tmp_path, overrides):
    ev = _compare("fedavg", tiny_ratings, tmp_path, *overrides, rounds=1)
    assert set(ev) == {"finetune", "global"}
    assert ev["finetune"]["loss"] != pytest.approx(ev["global"]["loss"])  # tuning changed something


@pytest.mark.parametrize("algo", ["stateful_fedavg", "centralized"])
@pytest.mark.parametrize("split_by", ["user", "example"])
def test_stateful_engines_agree(tiny_ratings, tmp_path, algo, split_by):
    ev = _compare(algo, tiny_ratings, tmp_path, f"task.split_by={split_by}", rounds=3)
    assert set(ev) == {"recon", "fresh" if split_by == "user" else "stored"}


# --------------------------------------------------------------------------
# The other tasks (tiny fixtures; dropout off: the frameworks' random streams differ)
# --------------------------------------------------------------------------
@pytest.fixture
def emnist_args(tmp_path):
    from test_emnist import fixture_shards, write_leaf

    write_leaf(tmp_path / "leaf", fixture_shards())
    return ["+task=emnist", f"data_dir={tmp_path / 'leaf'}", f"task.cache_dir={tmp_path / 'cache'}",
            "task.dropout=false", "task.batch_size=2"]


@pytest.fixture
def nwp_args(tmp_path):
    from test_nwp import _write_h5

    train = {f"ROLE_{i}": [f"the king {'and ' * i}own{i} said" for _ in range(i + 2)] for i in range(10)}
    test = {f"ROLE_{i}": [f"test{i} the king said", "a queen"] for i in range(10)}
    _write_h5(tmp_path / "nwp" / "shakespeare" / "shakespeare_train.h5", train)
    _write_h5(tmp_path / "nwp" / "shakespeare" / "shakespeare_test.h5", test)
    return ["+task=nwp", f"data_dir={tmp_path / 'nwp'}", f"task.cache_dir={tmp_path / 'cache'}",
            "task.vocab_size=4", "task.num_oov_buckets=2", "task.seq_len=4", "task.batch_size=2",
            "task.embedding_dim=3", "task.lstm_units=4", "task.projection_dim=3"]


@pytest.mark.parametrize("algo,overrides", [
    ("fedrecon", ()), ("fedrecon", ("task.user_embedding=false",)), ("fedavg", ("algo.eval=finetune",)),
    ("stateful_fedavg", ())])
def test_emnist_engines_agree(emnist_args, tmp_path, algo, overrides):
    _compare(algo, emnist_args, tmp_path, *overrides)


@pytest.mark.parametrize("algo,overrides", [
    ("fedrecon", ()), ("fedrecon", ("task.local_oov_output=true",)), ("fedavg", ("algo.eval=finetune",)),
    ("stateful_fedavg", ())])
def test_nwp_engines_agree(nwp_args, tmp_path, algo, overrides):
    _compare(algo, nwp_args, tmp_path, *overrides)


def test_tutorial_preset_ends_within_half_a_point_on_both_engines(shared_data, tmp_path):
    """The real 20-round tutorial run (2,000 users, 50 clients/round) on each engine."""
    from fedrecon_bench import loop

    final = {}
    for engine in ("tff", "fast"):
        cfg = compose("experiment=movielens_tutorial", f"engine={engine}", f"data_dir={shared_data}",
                      "logger=none", "checkpoint_every=0")
        s = loop.run(cfg, str(tmp_path / engine))
        assert s["status"] == "completed" and s["engine"] == engine
        final[engine] = s["final"]
    for split in ("val", "test"):
        a, b = (final[e][split]["rating_accuracy"] for e in ("tff", "fast"))
        assert abs(a - b) <= 0.005, (split, a, b)
        assert a > 0.25  # a trained model, not two equal failures
