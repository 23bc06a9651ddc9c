"""Bad input gives a one-line `error:` before any training, and leaves no run files.

Argv-level mistakes are caught before Hydra and TensorFlow load (fast);
config and data mistakes are caught by `loop.run` before the first round.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT, compose
from fedrecon_bench.cli_args import options
from fedrecon_bench.errors import UserError

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"


def run_cli(*args, data_dir, timeout=300):
    env = dict(os.environ, FEDRECON_BENCH_DATA=str(data_dir), WANDB_MODE="offline",
               TF_CPP_MIN_LOG_LEVEL="2")
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", *args], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return p, time.perf_counter() - t


def last_line(text: str) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------
# Argv level: before Hydra, no TensorFlow import
# --------------------------------------------------------------------------
@pytest.mark.parametrize("args,expect", [
    ((), ["error: no task given", "+task=<name>", "movielens"]),
    (("+algo=fedrecon",), ["error: no task given", "movielens"]),
    (("+task=movielens",), ["error: no algo given", "fedrecon"]),
    (("+task=nope", "+algo=fedrecon"), ["error: unknown task 'nope'",
                                        "available: " + ", ".join(options("task"))]),
    (("+task=movielens", "+algo=nope"), ["error: unknown algo 'nope'",
                                        "available: " + ", ".join(options("algo"))]),
    (("experiment=nope",), ["error: unknown experiment 'nope'", "available:",
                            *options("experiment")]),
    (("+task=movielens", "+algo=fedrecon", "dp=laplace"), ["error: unknown dp 'laplace'",
                                                          "available: " + ", ".join(options("dp")),
                                                          "(use dp=<name>)"]),
    (("+task=movielens", "+algo=fedrecon", "experiment=nope"), ["unknown experiment 'nope'"]),
    (("-m", "+task=movielens,nope", "+algo=fedrecon"), ["error: unknown task 'nope'"]),
])
def test_argv_errors_are_one_line_and_fast(tmp_path, args, expect):
    p, took = run_cli(*args, data_dir=tmp_path)
    assert p.returncode == 2, p.stderr
    line = last_line(p.stderr)
    assert line.startswith("error:"), p.stderr
    for e in expect:
        assert e in line, line
    assert "Traceback" not in p.stderr and p.stdout == ""
    assert took < 10, f"argv check took {took:.1f} s (TensorFlow imported?)"


# --------------------------------------------------------------------------
# Config and data level: loop.run raises UserError before writing anything
# --------------------------------------------------------------------------
def _tiny_csv(path, n_users=20, per_user=6):
    lines = ["user_id,item_id,rating"]
    lines += [f"{u},{i},{(u + i) % 5 + 1}" for u in range(1, n_users + 1) for i in range(1, per_user + 1)]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_expecting_user_error(tmp_path, *overrides, algo="fedrecon") -> str:
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", f"+algo={algo}", f"data_dir={tmp_path / 'data'}",
                  "task.download=false", "rounds=1", "logger=none", *overrides)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with pytest.raises(UserError) as e:
        loop.run(cfg, str(run_dir))
    assert os.listdir(run_dir) == []  # no metrics.jsonl / summary.json half-written
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_no_data_names_env_var_and_url(tmp_path):
    (tmp_path / "data").mkdir()
    msg = run_expecting_user_error(tmp_path)
    assert "FEDRECON_BENCH_DATA" in msg and GROUPLENS_URL in msg
    assert str(tmp_path / "data" / "ml-1m") in msg
    assert os.listdir(tmp_path / "data") == []


def test_malformed_ratings_file_names_file_and_line(tmp_path):
    f = _tiny_csv(tmp_path / "r.csv", n_users=3)
    with open(f, "a") as fh:
        fh.write("4,2,five\n")  # line 1 header + 18 ratings, so this is line 20
    msg = run_expecting_user_error(tmp_path, f"task.ratings_file={f}")
    assert msg.startswith(f"{f}:20: malformed ratings line '4,2,five'"), msg


def test_clients_per_round_larger_than_train_population(tmp_path):
    f = _tiny_csv(tmp_path / "r.csv", n_users=20)
    msg = run_expecting_user_error(tmp_path, f"task.ratings_file={f}", "task.max_users=null",
                                   "clients_per_round=100")
    assert "clients_per_round=100 is larger than the 16 training clients" in msg
    assert "clients_per_round<=16" in msg


@pytest.mark.parametrize("overrides,fragments", [
    (("split.eval.mode=reuse",), ["split.eval.mode='reuse'", "disjoint"]),
    (("split.eval.mode=halves",), ["split.eval.mode='halves' is unknown"]),
    (("algo.client_optimizer.learning_rate=0",),
     ["algo.client_optimizer.learning_rate=0 must be a positive number"]),
    (("algo.server_optimizer.learning_rate=-1.5",),
     ["algo.server_optimizer.learning_rate=-1.5 must be a positive number"]),
    (("algo.reconstruction_optimizer.name=rmsprop",),
     ["algo.reconstruction_optimizer.name='rmsprop' is unknown", "sgd", "adam"]),
    (("task.batch_size=0",), ["task.batch_size=0 must be an integer >= 1"]),
    (("clients_per_round=0",), ["clients_per_round=0 must be an integer >= 1"]),
    (("task.max_users=0",), ["task.max_users=0 must be an integer >= 1 or null"]),
    (("task.max_examples_per_user=-3",), ["task.max_examples_per_user=-3 must be an integer"]),
    (("task.embedding_dim=0",), ["task.embedding_dim=0 must be an integer >= 1"]),
    (("split.train.recon_epochs=0",), ["split.train.recon_epochs=0 must be an integer >= 1"]),
    (("algo.client_weighting=sequences",), ["algo.client_weighting='sequences' is unknown",
                                            "examples, uniform, tokens"]),
    (("algo.client_weighting=tokens",), ["algo.client_weighting=tokens", "no num_tokens metric"]),
    (("+algo.client_optimizer.momentum=0.9",),
     ["algo.client_optimizer.momentum applies to sgdm, not sgd", "algo.client_optimizer.name=sgdm"]),
    (("dp=gaussian_adaptive", "algo.client_weighting=examples"),
     ["dp=gaussian_adaptive needs uniform client weighting", "algo.client_weighting='examples'",
      "set algo.client_weighting=uniform"]),
    (("dp=gaussian_adaptive", "dp.noise_multiplier=0.5"),  # 2 clients: count noise 0.1 < z/2
     ["dp.noise_multiplier=0.5 needs more count noise", "raise clients_per_round above 5"]),
    (("dp=gaussian_fixed", "dp.clip=0"), ["dp.clip=0 must be a number > 0"]),
    (("dp=gaussian_fixed", "dp.noise_multiplier=-1"), ["dp.noise_multiplier=-1 must be a number >= 0"]),
    (("dp=gaussian_fixed", "dp.delta=1.5"), ["dp.delta=1.5 must be a number > 0 and <= 1"]),
    (("dp=gaussian_fixed", "dp.accountant=pld"), ["dp.accountant='pld' is unknown", "poisson", "replace_one"]),
    (("split.train.post_recon_epochs=0",), ["split.train.post_recon_epochs=0 leaves nothing after reconstruction"]),
])
def test_bad_config_is_refused_before_data(tmp_path, overrides, fragments):
    # A valid tiny ratings file: only the config is wrong.
    f = _tiny_csv(tmp_path / "r.csv")
    msg = run_expecting_user_error(tmp_path, f"task.ratings_file={f}", "task.max_users=null",
                                   "clients_per_round=2", *overrides)
    for frag in fragments:
        assert frag in msg, msg


def test_dp_is_refused_for_centralized_training(tmp_path):
    f = _tiny_csv(tmp_path / "r.csv")
    msg = run_expecting_user_error(tmp_path, f"task.ratings_file={f}", "task.max_users=null",
                                   "clients_per_round=2", "dp=gaussian_fixed", algo="centralized")
    assert msg.startswith("dp=gaussian_fixed does not apply to +algo=centralized"), msg
    assert "no client updates" in msg and "use dp=none" in msg


# --------------------------------------------------------------------------
# End to end through the real CLI: a data error
# --------------------------------------------------------------------------
def test_cli_malformed_ratings_file_end_to_end(tmp_path):
    f = _tiny_csv(tmp_path / "r.csv", n_users=3)
    with open(f, "a") as fh:
        fh.write("4::2::5::1\n")  # .dat syntax inside a CSV: line 20
    run_dir = tmp_path / "run"
    p, _ = run_cli("+task=movielens", "+algo=fedrecon", f"task.ratings_file={f}",
                   f"hydra.run.dir={run_dir}", "logger=none", data_dir=tmp_path)
    assert p.returncode == 2, p.stderr
    errors = [l for l in p.stderr.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, p.stderr
    assert errors[0].startswith(f"error: {f}:20: malformed ratings line '4::2::5::1'"), errors[0]
    assert last_line(p.stderr) == errors[0]
    assert "Traceback" not in p.stderr
    assert "run_dir:" not in p.stdout
    assert not run_dir.exists()
