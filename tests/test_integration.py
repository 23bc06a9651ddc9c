"""End-to-end runs: the run contract on synthetic data in-process, and a short
real-data run through the CLI exactly as a user types it."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
try:
    import tensorflow as tf
except ImportError:  # the TF-free `modern` environment: the tests using it are marked tff
    tf = None

from conftest import ROOT, compose


def _rows(run_dir):
    return [json.loads(l) for l in pathlib.Path(run_dir, "metrics.jsonl").read_text().splitlines()]


@pytest.mark.tff
def test_server_state_holds_only_global_variables(tiny_ratings):
    import tensorflow_federated as tff

    from fedrecon_bench.algorithms.fedrecon.tff import FedRecon
    import tasks

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                  "task.embedding_dim=6", "task.biases=true")
    task = tasks.get("movielens")(cfg.task, "unused", cfg.seed)
    algo = FedRecon(task, {"num_items": 25}, cfg)
    state = algo.initialize()
    shapes = sorted(tuple(np.shape(x)) for x in tf.nest.flatten(algo.global_weights(state).trainable))
    assert shapes == [(25, 1), (25, 6)]  # item bias and item embedding only
    # Nothing shaped like a user embedding or user bias anywhere in the server state.
    leaves = [np.shape(x) for x in tf.nest.flatten(tff.structure.to_odict_or_tuple(state)
                                                   if not isinstance(state, (dict, tuple)) else state)
              if hasattr(x, "shape")]
    assert (1, 6) not in leaves and (1, 1) not in leaves


def test_run_contract_on_synthetic_data(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                  "rounds=3", "clients_per_round=4", "eval_every=2", "logger=wandb", "seed=3")
    run_dir = str(tmp_path / "run")
    os.makedirs(run_dir)
    summary = loop.run(cfg, run_dir)
    rows = _rows(run_dir)
    assert [(r["round"], r["split"]) for r in rows] == [
        (1, "train"), (2, "train"), (2, "val"), (3, "train"), (3, "val"), (3, "test")]
    for r in rows:
        assert {"loss", "rating_accuracy", "rmse"} <= r.keys()
        assert np.isfinite(r["loss"]) and 0 <= r["rating_accuracy"] <= 1
        # TFF's `loss` is a mean over batches, rmse one over examples: close, not equal.
        assert r["rmse"] ** 2 == pytest.approx(r["loss"], rel=0.25)
    on_disk = json.loads(pathlib.Path(run_dir, "summary.json").read_text())
    assert on_disk == json.loads(json.dumps(summary))
    assert on_disk["status"] == "completed" and on_disk["seed"] == 3
    assert (on_disk["task"], on_disk["algo"]) == ("movielens", "fedrecon")
    assert on_disk["global_params"] == 25 * 50 and on_disk["local_params"] == 50
    # FedRecon moves only the global item embedding (float32), never the user vector.
    assert on_disk["comm"]["bytes_down_per_client"] == on_disk["comm"]["bytes_up_per_client"] == 25 * 50 * 4
    assert [r["bytes_down"] for r in rows if r["split"] == "train"] == [4 * 25 * 50 * 4] * 3
    assert on_disk["comm"]["total_bytes_up"] == 3 * 4 * 25 * 50 * 4
    assert on_disk["split_by"] == "user"
    assert on_disk["num_clients"] == {"train": 32, "val": 4, "test": 4}
    assert on_disk["final"]["test"]["rating_accuracy"] == rows[-1]["rating_accuracy"]
    assert on_disk["final"]["val"]["clients"] == 4
    with np.load(pathlib.Path(run_dir, "global_weights.npz"), allow_pickle=False) as w:
        assert [w[k].shape for k in sorted(w.files)] == [(25, 50)]
        assert "item_embedding" in sorted(w.files)[0]
    runs = list(pathlib.Path(run_dir, "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0


def test_seed_changes_sampling_and_results(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    finals = []
    for seed in (0, 0, 1):
        cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                      "rounds=2", "clients_per_round=4", "eval_every=2", "logger=none", f"seed={seed}")
        run_dir = tmp_path / f"run{len(finals)}"
        run_dir.mkdir()
        finals.append(loop.run(cfg, str(run_dir))["final"]["test"]["loss"])
    assert finals[0] == pytest.approx(finals[1], rel=1e-6)
    assert finals[0] != pytest.approx(finals[2], rel=1e-6)


@pytest.mark.slow
def test_card_command_on_real_data(shared_data, tmp_path):
    run_dir = tmp_path / "run"
    env = {**os.environ, "FEDRECON_BENCH_DATA": str(shared_data), "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "fedrecon_bench", "+task=movielens", "+algo=fedrecon",
         "rounds=2", "clients_per_round=20", "task.max_users=300", "eval_every=1",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert summary["num_clients"] == {"train": 240, "val": 30, "test": 30}
    assert summary["global_params"] == 3706 * 50
    rows = _rows(run_dir)
    assert [r["split"] for r in rows] == ["train", "val", "train", "val", "test"]
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
