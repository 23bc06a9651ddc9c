"""engine=fast equals engine=tff: same initial weights, same client batches, same
round (new global weights and round metrics) and same evaluation, to 1e-5."""
import numpy as np
import pytest

from conftest import compose
from test_per_client import Collector, pooled_from_records

pytestmark = pytest.mark.tff  # engine=tff is the reference
RTOL, ATOL = 1e-5, 1e-6


def _build(engine, algo, task_args, tmp_path, *overrides):
    from fedrecon_bench.algorithms import testing

    return testing.build(algo, engine, task_args, tmp_path / engine, *overrides)


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
    ev, per_client = {}, {e: Collector() for e in runs}
    for e, (a, _, pops) in runs.items():
        recon_from = pops[0].select([data.train.index_of(c) for c in data.val.ids]) if seen else None
        ev[e] = a.evaluate(states[e], pops[1].all(), data.val.ids, seen=seen, recon_from=recon_from,
                           records=per_client[e])
    if "loss" in ev["tff"]:  # one evaluation mode
        ev = {e: {"": m} for e, m in ev.items()}
    assert set(ev["fast"]) == set(ev["tff"])
    for mode in ev["tff"]:
        _close(ev["fast"][mode], ev["tff"][mode], f"{algo} evaluation {mode or ''}")
    _same_records(runs, per_client, ev, seen, algo)
    return ev["fast"]


def _same_records(runs, per_client, ev, seen, algo):
    """Per-client records: the same clients, examples and metrics on both engines, and on
    each engine the pooled metrics recomputed from them equal its headline ones."""
    rows = {e: c.rows for e, c in per_client.items()}
    assert set(rows["fast"]) == set(rows["tff"]) == set(ev["tff"])
    for mode, tff_rows in rows["tff"].items():
        assert set(rows["fast"][mode]) == set(tff_rows)
        for cid, r in tff_rows.items():
            f = rows["fast"][mode][cid]
            assert f["num_examples"] == r["num_examples"], (mode, cid)
            _close({k: f[k] for k in ev["tff"][mode] if k in r}, {k: r[k] for k in ev["tff"][mode] if k in r},
                   f"{algo} client {cid} {mode or ''}")
        for e in runs:
            got = pooled_from_records(runs[e][0], rows[e], mode, seen)
            for k, v in got.items():
                assert v == pytest.approx(ev[e][mode][k], rel=1e-6, abs=1e-9), (e, mode, k)


ML_FEDRECON = [
    (),                                                    # the tutorial's split
    ("split/train=paper", "split/eval=paper"),             # epochs and step caps
    ("split/train=simple",),                               # reuse: all batches twice
    ("task.biases=true", "task.l2=0.01"),                  # more tables, penalty output
    ("algo.server_optimizer.name=adam", "algo.server_optimizer.learning_rate=0.05",
     "algo.client_optimizer.name=sgdm"),                   # stateful optimizers (dense steps)
    ("algo.server_optimizer.name=yogi", "algo.server_optimizer.learning_rate=0.05",
     "algo.reconstruction_optimizer.name=adagrad"),
    ("task.split_by=example",),                            # seen users: recon on training data
]
FINETUNE = ("algo.eval=finetune",)
ML_FINETUNE = [FINETUNE, (*FINETUNE, "algo.finetune.variables=local"), (*FINETUNE, "task.split_by=example")]
BOTH_SPLITS = [("task.split_by=user",), ("task.split_by=example",)]

# Every algorithm joins the engine-equality tests with one line: its cases per task (override
# tuples). Each case runs a few rounds and an evaluation on both engines and compares every
# step (_compare). MovieLens is the tiny ratings fixture; emnist and nwp the tiny fixtures below.
CASES = {
    "fedrecon": {"movielens": ML_FEDRECON, "emnist": [(), ("task.user_embedding=false",)],
                 "nwp": [(), ("task.local_oov_output=true",)]},
    "fedavg": {"movielens": [(), ("task.split_by=example",), ("task.biases=true",), *ML_FINETUNE],
               "emnist": [FINETUNE], "nwp": [FINETUNE]},
    "stateful_fedavg": {"movielens": BOTH_SPLITS, "emnist": [()], "nwp": [()]},
    "centralized": {"movielens": BOTH_SPLITS},
    "fedprox": {"movielens": [("algo.mu=0.1",), ("algo.mu=0.1", *FINETUNE)], "emnist": [("algo.mu=0.1",)], "nwp": [("algo.mu=0.1",)]},
    "fedrep": {"movielens": [("algo.local_epochs=2", *o) for o in (
                   *BOTH_SPLITS, ("task.biases=true", "algo.global_epochs=2"),
                   ("algo.local_steps_max=3", "algo.global_steps_max=2", "algo.client_optimizer.name=sgdm",
                    "algo.reconstruction_optimizer.name=adagrad"))],
               "emnist": [("algo.local_epochs=2",)],
               "nwp": [("algo.local_epochs=2",), ("algo.local_epochs=2", "task.local_oov_output=true",
                                                  "algo.client_weighting=tokens")]},
}


def _rounds(spec, task: str, overrides) -> int:
    """Clients that keep state need a third round to revisit one; a fine-tuned evaluation
    after one round already tells the modes apart."""
    if task != "movielens":
        return 2
    return 3 if spec.client_state else 1 if FINETUNE[0] in overrides else 2


@pytest.mark.parametrize("algo,task,overrides", [
    (algo, task, o) for algo, tasks in CASES.items() for task, cases in tasks.items() for o in cases])
def test_engines_agree(request, tmp_path, algo, task, overrides):
    from fedrecon_bench import algorithms

    spec = algorithms.spec(algo)
    args = request.getfixturevalue({"movielens": "tiny_ratings", "emnist": "emnist_args", "nwp": "nwp_args"}[task])
    ev = _compare(algo, args, tmp_path, *overrides, rounds=_rounds(spec, task, overrides))
    assert set(ev) <= set(spec.eval_modes)  # the modes the algorithm declares
    if FINETUNE[0] in overrides:
        assert set(ev) == {"finetune", "global"}
        assert ev["finetune"]["loss"] != pytest.approx(ev["global"]["loss"])  # tuning changed something
    if spec.client_state and task == "movielens":
        seen = "task.split_by=example" in overrides
        assert set(ev) == {"recon", "stored" if seen else "fresh"}


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
