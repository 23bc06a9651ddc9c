"""Run-dir integrity (fedrecon_bench/rundir.py): one writer at a time, one experiment per run
dir, a damaged checkpoint falls back to the one before, a completed run extends."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import pytest

from conftest import ROOT, compose, crash, untimed_rows

ARGS = ("+task=movielens", "clients_per_round=4", "eval_every=4",
        "checkpoint_every=2", "logger=none", "engine=fast")
# A CLI run blocked inside round 4 (after the round-2 checkpoint) until a file appears.
_BLOCKED = """
import os, runpy, sys, time
from fedrecon_bench import algorithms
cls = algorithms.get("fedrecon", "fast")
real, calls, (blocked, go) = cls.next, [0], sys.argv[1:3]
def next_(self, *a, **kw):
    calls[0] += 1
    if calls[0] == 4:
        open(blocked, "w").close()
        while not os.path.exists(go):
            time.sleep(0.05)
    return real(self, *a, **kw)
cls.next = next_
sys.argv = ["fedrecon_bench", *sys.argv[3:]]
runpy.run_module("fedrecon_bench", run_name="__main__")
"""


def _args(tiny_ratings, rounds, *extra, algo="fedrecon"):
    return (*ARGS, f"+algo={algo}", f"task.ratings_file={tiny_ratings}", f"rounds={rounds}", *extra)


def _cli(*args, **kw):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


def listing(run_dir) -> dict:
    """Every path under run_dir (and run_dir itself): mtime, size and content hash."""
    root = pathlib.Path(run_dir)
    out = {}
    for p in [root, *sorted(root.rglob("*"))]:
        st = p.stat()
        digest = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None
        out[str(p.relative_to(root))] = (st.st_mtime_ns, st.st_size, digest)
    return out


@pytest.fixture(scope="module")
def full(tiny_ratings, tmp_path_factory):
    """Uninterrupted runs of 6 rounds: {algo: run dir}."""
    from fedrecon_bench import loop

    out = {}
    for algo, extra in (("fedrecon", ()), ("stateful_fedavg", ("algo.store=disk",))):
        d = tmp_path_factory.mktemp(f"full_{algo}")
        loop.run(compose(*_args(tiny_ratings, 6, *extra, algo=algo)), str(d))
        out[algo] = d
    return out


def _crashed(monkeypatch, tiny_ratings, run_dir, crash_call: int) -> None:
    """A 6-round run that raised inside round crash_call (checkpoints every 2 rounds)."""
    from fedrecon_bench import algorithms

    crash(monkeypatch, algorithms.get("fedrecon", "fast"), compose(*_args(tiny_ratings, 6)),
          run_dir, crash_call)


def _truncate(path) -> None:
    data = pathlib.Path(path).read_bytes()
    pathlib.Path(path).write_bytes(data[: len(data) // 2])


# --------------------------------------------------------------------------
def test_second_writer_is_refused_and_the_first_completes_unchanged(tiny_ratings, tmp_path, full):
    run_dir, blocked, go = tmp_path / "run", tmp_path / "blocked", tmp_path / "go"
    args = [*_args(tiny_ratings, 6), f"hydra.run.dir={run_dir}"]
    first = _cli("-c", _BLOCKED, str(blocked), str(go), *args)
    deadline = time.time() + 120
    while not blocked.exists():
        if first.poll() is not None or time.time() > deadline:
            first.kill()
            pytest.fail(f"the first run never reached round 4: {first.communicate()[1][-2000:]}")
        time.sleep(0.05)
    before = listing(run_dir)
    second = _cli("-m", "fedrecon_bench", *args)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 2 and out == ""
    assert len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {run_dir} is in use by pid {first.pid} on host {socket.gethostname()}")
    assert listing(run_dir) == before  # the second process touched nothing
    go.touch()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err[-2000:]
    assert out.strip().splitlines()[-1] == f"run_dir: {run_dir}"
    assert untimed_rows(run_dir) == untimed_rows(full["fedrecon"])
    assert (run_dir / ".hydra" / "config.yaml").is_file()
    assert (run_dir / ".lock").read_text() == ""  # released: it names no writer


def test_a_changed_config_is_refused_and_the_run_dir_is_left_as_it_was(
        tiny_ratings, tmp_path, monkeypatch, full):
    from fedrecon_bench import loop, rundir

    run_dir = tmp_path / "run"
    _crashed(monkeypatch, tiny_ratings, run_dir, crash_call=5)  # checkpoints 2 and 4
    before = listing(run_dir)
    p = _cli("-m", "fedrecon_bench", *_args(tiny_ratings, 6, "seed=9"), f"hydra.run.dir={run_dir}")
    out, err = p.communicate(timeout=120)
    assert p.returncode == 2 and out == "" and len(err.splitlines()) == 1, err
    assert err.startswith(f"error: {run_dir} holds a run made with other values (seed 0 -> 9); ")
    assert "use a new run dir" in err
    assert listing(run_dir) == before  # Hydra wrote no .hydra/ either
    for override, change in (("algo.client_optimizer.learning_rate=0.25",
                              "algo.client_optimizer.learning_rate 0.5 -> 0.25"),
                             ("task.embedding_dim=8", "task.embedding_dim 50 -> 8")):
        with pytest.raises(rundir.Refused) as e:
            loop.run(compose(*_args(tiny_ratings, 6, override)), str(run_dir))
        assert "\n" not in str(e.value) and f"other values ({change})" in str(e.value)
        assert listing(run_dir) == before, override
    with pytest.raises(rundir.Refused, match=r"rounds=3 is below round 4"):
        loop.run(compose(*_args(tiny_ratings, 3)), str(run_dir))
    assert listing(run_dir) == before
    # Keys that cannot change results may differ.
    s = loop.run(compose(*_args(tiny_ratings, 6, "data_cache_mb=1", "checkpoint_every=3")), str(run_dir))
    assert s["status"] == "completed" and s["resumed_from_round"] == 4
    assert untimed_rows(run_dir) == untimed_rows(full["fedrecon"])


def test_a_truncated_newest_checkpoint_falls_back_to_the_one_before(
        tiny_ratings, tmp_path, monkeypatch, capsys, full):
    from fedrecon_bench import loop

    run_dir = tmp_path / "run"
    _crashed(monkeypatch, tiny_ratings, run_dir, crash_call=6)  # in round 6: checkpoints 2 and 4
    ckpts = run_dir / "checkpoints"
    assert sorted(p.name for p in ckpts.iterdir()) == ["round_000002.npz", "round_000004.npz"]
    _truncate(ckpts / "round_000004.npz")
    capsys.readouterr()
    s = loop.run(compose(*_args(tiny_ratings, 6)), str(run_dir))
    notes = [l for l in capsys.readouterr().err.splitlines() if "unreadable" in l]
    assert len(notes) == 1 and notes[0].startswith("note: checkpoint round_000004.npz is unreadable (")
    assert notes[0].endswith("continuing from round_000002.npz instead")
    assert s["status"] == "completed" and s["resumed_from_round"] == 2
    assert untimed_rows(run_dir) == untimed_rows(full["fedrecon"])
    assert sorted(p.name for p in ckpts.iterdir()) == ["round_000004.npz", "round_000006.npz"]


def test_a_flipped_byte_makes_a_checkpoint_unreadable(tiny_ratings, tmp_path):
    from fedrecon_bench import checkpoint, loop

    loop.run(compose(*_args(tiny_ratings, 2)), str(tmp_path))
    path = tmp_path / "checkpoints" / "round_000002.npz"
    assert checkpoint.read(str(tmp_path), str(path)).round == 2
    data = bytearray(path.read_bytes())
    data[1000] ^= 0x01  # inside the first stored array (the server's item embeddings): only its CRC-32 notices
    path.write_bytes(bytes(data))
    with pytest.raises(checkpoint.Unreadable, match="CRC"):
        checkpoint.read(str(tmp_path), str(path))


def test_no_readable_checkpoint_is_refused_unless_restart_is_asked_for(
        tiny_ratings, tmp_path, monkeypatch, full):
    from fedrecon_bench import loop, rundir

    run_dir = tmp_path / "run"
    _crashed(monkeypatch, tiny_ratings, run_dir, crash_call=5)
    for p in (run_dir / "checkpoints").glob("round_*.npz"):
        _truncate(p)
    before = listing(run_dir)
    with pytest.raises(rundir.Refused) as e:
        loop.run(compose(*_args(tiny_ratings, 6)), str(run_dir))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{run_dir}: no checkpoint can be read (round_000004.npz: ")
    assert "round_000002.npz: " in msg and "restart_on_bad_checkpoint=true" in msg
    assert listing(run_dir) == before
    s = loop.run(compose(*_args(tiny_ratings, 6, "restart_on_bad_checkpoint=true")), str(run_dir))
    assert s["status"] == "completed" and s["resumed_from_round"] is None
    assert untimed_rows(run_dir) == untimed_rows(full["fedrecon"])


@pytest.mark.parametrize("algo,extra", [("fedrecon", ()), ("stateful_fedavg", ("algo.store=disk",))])
def test_a_completed_run_extends_to_more_rounds_as_if_run_so_from_the_start(
        tiny_ratings, tmp_path, capsys, full, algo, extra):
    from fedrecon_bench import loop

    cfg = lambda rounds: compose(*_args(tiny_ratings, rounds, *extra, algo=algo))
    first = loop.run(cfg(5), str(tmp_path))  # val at 4, then round 5's end-only val and test rows
    ends = [(r["round"], r["split"]) for r in untimed_rows(tmp_path) if r["split"] != "train"]
    assert set(ends) == {(4, "val"), (5, "val"), (5, "test")}
    before = listing(tmp_path)
    for rounds, why in ((5, "this run, completed"), (3, "a completed run of 5 rounds, and rounds=3")):
        assert loop.run(cfg(rounds), str(tmp_path)) == json.loads(json.dumps(first))
        assert f"already holds {why}" in capsys.readouterr().err
        assert listing(tmp_path) == before
    s = loop.run(cfg(6), str(tmp_path))
    assert f"note: extending {tmp_path} from 5 to 6 rounds" in capsys.readouterr().err
    assert s["status"] == "completed" and s["resumed_from_round"] == 5 and s["rounds"] == 6
    assert untimed_rows(tmp_path) == untimed_rows(full[algo])
    want = json.loads((full[algo] / "summary.json").read_text())
    assert s["final"]["test"]["loss"] == want["final"]["test"]["loss"]
    assert s["comm"] == want["comm"]


def test_a_relaunched_sweep_skips_a_job_in_use_and_leaves_finished_ones_as_they_are(
        tiny_ratings, tmp_path):
    from fedrecon_bench import rundir

    d = tmp_path / "sweep"
    args = ("-m", "fedrecon_bench", "-m", *_args(tiny_ratings, 2), "seed=0,1", f"hydra.sweep.dir={d}")
    p = _cli(*args)
    assert p.wait(timeout=300) == 0, p.communicate()[1][-2000:]
    jobs = sorted(j for j in d.iterdir() if j.is_dir())
    assert len(jobs) == 2 and all((j / ".hydra" / "config.yaml").is_file() for j in jobs)
    lock = rundir.Lock(str(jobs[0]))  # as if the first sweep were still writing job 0
    lock.claim()
    try:
        before = [listing(j) for j in jobs]
        p = _cli(*args)
        out, err = p.communicate(timeout=300)
        after = [listing(j) for j in jobs]
    finally:
        lock.release()
    assert p.returncode == 0, err[-2000:]
    assert f"error: {jobs[0]} is in use by pid {os.getpid()} on host {socket.gethostname()}" in err
    assert f"note: {jobs[1]} already holds this run, completed; nothing to do" in err
    assert out.strip().splitlines()[-1] == f"sweep_dir: {d}"
    assert after == before


def test_a_diverged_run_is_a_result_and_a_presets_tuned_table_may_change(tiny_ratings, tmp_path):
    from fedrecon_bench import rundir

    run_dir = tmp_path / "run"
    launch = lambda lr: _cli("-m", "fedrecon_bench", *_args(tiny_ratings, 6, "checkpoint_every=0"),
                             f"algo.server_optimizer.learning_rate={lr}", f"hydra.run.dir={run_dir}").communicate(
                                 timeout=120)
    launch("1e30")
    first = json.loads((run_dir / "summary.json").read_text())
    assert first["status"] == "diverged" and first["round_reached"] < 6
    before = listing(run_dir)
    # Relaunched (a study resuming its sweeps), the same seed is not trained again ...
    out, err = launch("1e30")
    assert f"note: {run_dir} already holds this run, diverged at round {first['round_reached']}" in err
    assert listing(run_dir) == before
    # ... and other values are refused, as for a completed run.
    out, err = launch("1.0")
    assert err.startswith(f"error: {run_dir} holds a run made with other values "
                          "(algo.server_optimizer.learning_rate 1e+30 -> 1.0); "), err
    assert listing(run_dir) == before
    # A preset's `tuned:` table is compared through the keys it sets, not as itself.
    table = [{"when": {"algo.name": "fedrecon"}, "set": {"algo.client_optimizer.learning_rate": 0.5}}]
    same = {"algo": {"client_optimizer": {"learning_rate": 0.5}}}
    assert rundir.differences({**same, "tuned": None}, {**same, "tuned": table}) == []
    changed = {"algo": {"client_optimizer": {"learning_rate": 0.1}}, "tuned": table}
    assert rundir.differences(same, changed) == [("algo.client_optimizer.learning_rate", 0.5, 0.1)]
