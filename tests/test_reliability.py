"""Resume after a crash, determinism, divergence, and the remaining bad inputs."""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest
try:
    import tensorflow as tf
except ImportError:  # the TF-free `modern` environment: the tests using it are marked tff
    tf = None

from conftest import ROOT, compose

TIMING_KEYS = {"round_s", "eval_s", "rss_mb"}


def _rows(run_dir):
    return [json.loads(l) for l in pathlib.Path(run_dir, "metrics.jsonl").read_text().splitlines()]


def _untimed(rows):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]


def _cli(args, **kw):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, "-m", "fedrecon_bench", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


@pytest.mark.tff
def test_checkpoint_roundtrip_restores_state_exactly(tiny_ratings, tmp_path):
    import tasks
    from fedrecon_bench import checkpoint
    from fedrecon_bench.algorithms.fedrecon.tff import FedRecon

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                  "algo.server_optimizer.name=adam", "algo.server_optimizer.learning_rate=0.01")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    data = task.load()
    algo = FedRecon(task, data.info, cfg)
    state, _ = algo.next(algo.initialize(), [task.client_dataset(e) for e in data.train.examples[:3]])
    for r in (6, 7, 8):
        checkpoint.save(str(tmp_path), r, state, {"rng": {"x": r - 6}})
    # The newest two are kept: an unreadable newest one falls back to the other.
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [
        "round_000007.npz", "round_000008.npz"]
    restored, meta = checkpoint.load_latest(str(tmp_path), algo.initialize())
    assert meta["round"] == 8 and meta["rng"] == {"x": 2}
    a, b = tf.nest.flatten(state), tf.nest.flatten(restored)
    assert len(a) == len(b) > 3  # weights plus Adam's moments and step count
    for x, y in zip(a, b):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
    # The restored state trains on exactly like the original.
    ds = [task.client_dataset(e) for e in data.train.examples[3:6]]
    m1, m2 = algo.next(state, ds)[1], algo.next(restored, ds)[1]
    assert m1["loss"] == m2["loss"]


@pytest.mark.tff
def test_sigkill_then_rerun_matches_an_uninterrupted_run(tiny_ratings, tmp_path):
    args = ["+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
            "rounds=15", "clients_per_round=4", "eval_every=5", "checkpoint_every=3",
            "seed=5", "engine=tff"]  # with wandb: the resumed run must continue the same wandb run id
    # engine=tff: slow enough to be killed mid-run, and its worker process must die too; the
    # fast engine's resume is checked without a race in test_stateful.py (both engines).
    full, killed = tmp_path / "full", tmp_path / "killed"
    p = _cli(args + [f"hydra.run.dir={killed}"], start_new_session=True)
    ckpt_dir = killed / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not any(
            f.name >= "round_000006.npz" for f in (ckpt_dir.iterdir() if ckpt_dir.exists() else [])):
        assert p.poll() is None, "run ended before it could be killed"
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)  # the whole process group: TFF's worker too
    p.wait()
    assert not (killed / "summary.json").exists() or json.loads(
        (killed / "summary.json").read_text())["status"] != "completed"
    rounds_before = max(r["round"] for r in _rows(killed))
    assert 6 <= rounds_before < 15
    # Resume with the short form; an uninterrupted run alongside for reference.
    r = _cli([f"resume={killed}"])
    out, err = r.communicate(timeout=300)
    assert r.returncode == 0, err[-2000:]
    assert "resuming" in err and out.strip().splitlines()[-1] == f"run_dir: {killed}"
    f = _cli(args + [f"hydra.run.dir={full}"])
    assert f.wait(timeout=300) == 0
    got, want = _rows(killed), _rows(full)
    assert [(x["round"], x["split"]) for x in got] == [(x["round"], x["split"]) for x in want]
    trains = [x["round"] for x in got if x["split"] == "train"]
    assert trains == list(range(1, 16))  # no duplicated or missing rounds
    assert _untimed(got) == _untimed(want)
    s = json.loads((killed / "summary.json").read_text())
    assert s["status"] == "completed" and s["resumed_from_round"] >= 6
    ref = json.loads((full / "summary.json").read_text())["final"]["test"]
    ids = {d.name.rsplit("-", 1)[1] for d in (killed / "wandb").glob("offline-run-*")}
    assert len(list((killed / "wandb").glob("offline-run-*"))) == 2 and len(ids) == 1
    assert _untimed([s["final"]["test"]]) == _untimed([ref])


def test_same_config_and_seed_give_identical_metrics(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    rows = []
    for name in ("a", "b"):
        cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                      "rounds=4", "clients_per_round=4", "eval_every=2", "logger=none", "seed=11")
        (tmp_path / name).mkdir()
        loop.run(cfg, str(tmp_path / name))
        rows.append(_untimed(_rows(tmp_path / name)))
    assert len(rows[0]) == 7 and rows[0] == rows[1]


def test_divergence_stops_with_status_message_and_exit_code(tiny_ratings, tmp_path):
    run_dir = tmp_path / "run"
    p = _cli(["+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
              "rounds=20", "clients_per_round=4", "logger=none",
              "algo.client_optimizer.learning_rate=1e6", f"hydra.run.dir={run_dir}"])
    out, err = p.communicate(timeout=300)
    assert p.returncode == 3
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "diverged" and "non-finite training loss" in s["error"]
    last = err.strip().splitlines()[-1]
    assert last.startswith("error: run diverged") and f"round {s['round_reached']}" in last
    assert s["round_reached"] < 20 and "test" not in s["final"]
    assert "run_dir:" not in out


def test_completed_run_dir_is_not_rerun(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                  "rounds=2", "clients_per_round=4", "logger=none")
    first = loop.run(cfg, str(tmp_path))
    before = (tmp_path / "metrics.jsonl").read_text()
    assert loop.run(cfg, str(tmp_path)) == json.loads(json.dumps(first))
    assert (tmp_path / "metrics.jsonl").read_text() == before


# --- bad input not covered in test_cli_errors.py / test_movielens_data.py --------------
def _argv_error(args):
    p = _cli(args)
    out, err = p.communicate(timeout=120)
    return p.returncode, err.strip().splitlines()


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    rc, err = _argv_error(["+task=movielens", "+algo=fedrecon", f"hydra.run.dir={blocker}/run"])
    assert rc == 2 and err[-1].startswith("error: hydra.run.dir=") and "writable" in err[-1]
    assert not any("Traceback" in l for l in err)


def test_resume_of_a_dir_that_is_not_a_run(tmp_path):
    rc, err = _argv_error([f"resume={tmp_path}"])
    assert rc == 2 and "resume=" in err[-1] and "overrides.yaml" in err[-1]


def test_truncated_zip_in_data_dir(tmp_path):
    from fedrecon_bench.errors import UserError
    from tasks.movielens import safe_extract_zip

    good = tmp_path / "good.zip"
    with zipfile.ZipFile(good, "w") as z:
        z.writestr("ml-1m/ratings.dat", "1::1::5::0\n" * 1000)
    bad = tmp_path / "ml-1m.zip"
    bad.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match=r"ml-1m\.zip: not a valid zip archive"):
        safe_extract_zip(str(bad), str(tmp_path / "out"))
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("override,pattern", [
    ("checkpoint_every=-1", "checkpoint_every"),
    ("seed=abc", "seed"),
    ("rounds=0", "rounds"),
    ("eval_every=0", "eval_every"),
])
def test_more_bad_config_values(tiny_ratings, tmp_path, override, pattern):
    from fedrecon_bench import loop
    from fedrecon_bench.errors import UserError

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                  "logger=none", override)
    with pytest.raises(UserError, match=pattern):
        loop.run(cfg, str(tmp_path))
    assert list(tmp_path.iterdir()) == []


def test_hydra_full_error_shows_the_traceback(tmp_path):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1", "FEDRECON_BENCH_DATA": str(tmp_path)}
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "+task=movielens", "+algo=fedrecon",
                        "task.download=false", f"hydra.run.dir={tmp_path}/run"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" in p.stderr and "UserError" in p.stderr
