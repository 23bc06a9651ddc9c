"""engine=fast equals engine=tff: same initial weights, same client batches, same
round (new global weights and round metrics) and same evaluation, to 1e-5."""
import numpy as np
import pytest

from conftest import compose

RTOL, ATOL = 1e-5, 1e-6


def _build(engine, algo, tiny_ratings, tmp_path, *overrides):
    import tasks
    from fedrecon_bench import algorithms, loop

    cfg = compose("+task=movielens", f"+algo={algo}", f"engine={engine}",
                  f"task.ratings_file={tiny_ratings}", "task.embedding_dim=4", "task.batch_size=3",
                  *overrides)
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    data = task.load()
    a = algorithms.get(algo, engine)(task, data.info, cfg, run_dir=str(tmp_path / engine))
    return a, data, loop.populations(engine, task, a, data)


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
        idx = rng.choice(len(data.train), size=6, replace=False)
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
