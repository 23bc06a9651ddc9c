"""FedAvg: every variable global, the MF user embedding one shared vector."""
import json

import numpy as np
import pytest

from conftest import compose


def test_fedavg_user_embedding_is_one_shared_global_vector(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", "+algo=fedavg", f"task.ratings_file={tiny_ratings}",
                  "rounds=2", "clients_per_round=4", "eval_every=1", "logger=none")
    summary = loop.run(cfg, str(tmp_path))
    assert summary["status"] == "completed"
    assert (summary["global_params"], summary["local_params"]) == (25 * 50 + 50, 0)
    with np.load(tmp_path / "global_weights.npz", allow_pickle=False) as w:
        shapes = {k.split("/", 1)[1]: w[k].shape for k in w.files}
    assert sorted(shapes.values()) == [(1, 50), (25, 50)]  # the user vector is in the server model
    assert any("user_embedding" in k for k in shapes)
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["split"] for r in rows] == ["train", "val", "train", "val", "test"]
    # FedAvg moves every variable: item embedding and the shared user vector, float32.
    per_client = (25 * 50 + 50) * 4
    assert summary["comm"]["bytes_down_per_client"] == summary["comm"]["bytes_up_per_client"] == per_client
    assert [r["bytes_up"] for r in rows if r["split"] == "train"] == [4 * per_client] * 2
    assert summary["comm"]["total_bytes_down"] == 2 * 4 * per_client


@pytest.mark.tff
def test_fedavg_and_fedrecon_measure_the_same_examples(tiny_ratings):
    """Both evaluate on the odd (measuring) batches of each eval user."""
    import tasks
    from fedrecon_bench.algorithms.fedavg.tff import FedAvg

    cfg = compose("+task=movielens", "+algo=fedavg", f"task.ratings_file={tiny_ratings}")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    algo = FedAvg(task, {"num_items": 25}, cfg)
    ex = {"item": np.arange(12, dtype=np.int64) % 25, "rating": np.ones(12, np.float32)}
    ds = task.client_dataset(ex)  # 12 examples, batch 5 -> batches of 5, 5, 2
    measured = algo.evaluators[0]._measure_half(ds)[1]  # the global model's evaluation
    assert [int(b["x"].shape[0]) for b in measured] == [5]  # batch 1 only
    np.testing.assert_array_equal(np.concatenate([b["x"].numpy()[:, 0] for b in measured]),
                                  np.arange(5, 10))


@pytest.mark.tff
def test_finetune_never_sees_the_measured_half(tiny_ratings, monkeypatch):
    import tasks
    from fedrecon_bench.algorithms.fedavg.tff import FedAvg

    cfg = compose("+task=movielens", "+algo=fedavg", f"task.ratings_file={tiny_ratings}",
                  "algo.eval=finetune")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    algo = FedAvg(task, {"num_items": 25}, cfg)
    ft = algo.evaluators[0].tuner  # the fine-tuning evaluation (the headline)
    tuned_on, measured_on = [], []
    real_tune, real_measure = ft._tune, ft._measure
    monkeypatch.setattr(ft, "_tune", lambda ds: (tuned_on.extend(
        int(i) for b in ds for i in b["x"].numpy()[:, 0]), real_tune(ds)))
    monkeypatch.setattr(ft, "_measure", lambda ds: (measured_on.extend(
        int(i) for b in ds for i in b["x"].numpy()[:, 0]), real_measure(ds)))
    ex = {"item": np.arange(20, dtype=np.int64), "rating": np.full(20, 4.0, np.float32)}
    state = algo.initialize()
    res = algo.evaluate(state, [task.client_dataset(ex)])
    assert set(res) == {"finetune", "global"}
    assert tuned_on == [0, 1, 2, 3, 4, 10, 11, 12, 13, 14]      # even batches
    assert measured_on == [5, 6, 7, 8, 9, 15, 16, 17, 18, 19]   # odd batches only
    # The tuned copy is what is measured: only the shared user vector links the tuned items
    # to the measured ones, so the measured loss moves (its direction depends on the init).
    assert res["finetune"]["loss"] != pytest.approx(res["global"]["loss"], rel=1e-6)


@pytest.mark.tff
def test_finetune_with_zero_steps_of_learning_equals_the_global_model(tiny_ratings):
    import tasks
    from fedrecon_bench.algorithms.fedavg.tff import FedAvg

    cfg = compose("+task=movielens", "+algo=fedavg", f"task.ratings_file={tiny_ratings}",
                  "algo.eval=finetune", "algo.finetune.variables=local",
                  "algo.finetune.optimizer.learning_rate=1e-30")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    data = task.load()
    algo = FedAvg(task, data.info, cfg)
    res = algo.evaluate(algo.initialize(), [task.client_dataset(e) for e in data.val.examples])
    assert [w.name for w in algo.evaluators[0].tuner.tuned] == ["user_embedding/kernel:0"]
    for k in ("loss", "rating_accuracy", "rmse"):
        assert res["finetune"][k] == pytest.approx(res["global"][k], rel=1e-5)
