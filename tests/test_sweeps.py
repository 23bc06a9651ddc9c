"""Sweeps through the real CLI with Hydra's launchers, and the analysis of their output.

- argv: `-m` anywhere, sweep presets, experiment lists (no Hydra, no TF: fast);
- a failing / diverging job is recorded and the sweep goes on (basic launcher);
- the acceptance sweep: 2 algorithms x 2 seeds through the joblib launcher, then the
  table (checked against the runs' summary.json), the plots and the recon curve;
- 2-job sweeps on a local Ray cluster (started and stopped here, on 127.0.0.1) and
  with submitit's local executor.
All on the 40-user synthetic ratings file, 2 rounds per job.
"""
from __future__ import annotations

import csv
import json
import os
import pathlib
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import ROOT
from fedrecon_bench.cli_args import normalize
from fedrecon_bench.errors import UserError


def tiny_job(ratings) -> list[str]:
    return ["+task=movielens", f"task.ratings_file={ratings}", "rounds=2", "clients_per_round=4",
            "eval_every=1", "logger=none", "checkpoint_every=0"]


def run_sweep(*args, sweep_dir, timeout=420, env=None):
    env = {**os.environ, "WANDB_MODE": "offline", "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", *args,
                        f"hydra.sweep.dir={sweep_dir}"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=timeout)
    return p


def summaries(sweep_dir) -> dict[str, dict]:
    return {p.parent.name: json.loads(p.read_text())
            for p in sorted(pathlib.Path(sweep_dir).glob("*/summary.json"))}


def last_line(text: str) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    return lines[-1] if lines else ""


# --------------------------------------------------------------------------
# argv
# --------------------------------------------------------------------------
def test_multirun_flag_anywhere_goes_first():
    # Hydra's argparse stops collecting overrides at the first option
    assert normalize(["+task=movielens", "-m", "+algo=fedrecon,fedavg", "seed=0,1"]) == \
        ["-m", "+task=movielens", "+algo=fedrecon,fedavg", "seed=0,1"]
    assert normalize(["seed=1", "--cfg", "job", "+algo=fedrecon", "+task=movielens"]) == \
        ["--cfg", "job", "+task=movielens", "+algo=fedrecon", "seed=1"]


def test_sweep_preset_supplies_task_and_algo():
    assert normalize(["-m", "sweep=movielens_tutorial_table", "rounds=2"]) == \
        ["-m", "+sweep=movielens_tutorial_table", "rounds=2"]
    # a command-line list replaces the preset's (same override key, +algo)
    assert normalize(["-m", "+sweep=movielens_paper_table", "+algo=fedrecon"]) == \
        ["-m", "+algo=fedrecon", "+sweep=movielens_paper_table"]


@pytest.mark.parametrize("argv,fragment", [
    (["sweep=movielens_tutorial_table"], "sweep=movielens_tutorial_table is a multirun preset; add -m"),
    (["-m", "+sweep=nope"], "unknown sweep preset 'nope'; available: "),
    (["-m", "+task=movielens", "+algo=fedrecon,nope"], "unknown algo 'nope'"),
])
def test_sweep_argv_errors(argv, fragment):
    with pytest.raises(UserError) as e:
        normalize(argv)
    assert fragment in str(e.value) and "\n" not in str(e.value)


def test_every_sweep_preset_names_existing_groups_or_says_which_is_missing():
    from fedrecon_bench.cli_args import options

    for name in options("sweep"):
        try:
            argv = normalize(["-m", f"+sweep={name}"])
        except UserError as e:  # e.g. a paper table listing an algorithm still being written
            msg = str(e)
            assert msg.startswith(f"conf/sweep/{name}.yaml: hydra.sweeper.params +"), msg
            assert "which does not exist" in msg and "or override the list: +" in msg, msg
        else:
            assert argv == ["-m", f"+sweep={name}"]


@pytest.mark.parametrize("algo", ["fedrecon", "fedavg", "stateful_fedavg", "centralized"])
def test_paper_preset_composes_the_paper_setting_for_each_algorithm(algo):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from fedrecon_bench.cli_args import CONF_DIR

    # a job's overrides, in the sweeper's order: the preset's params, then the command line
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+task=movielens", f"+algo={algo}", "seed=2", "+sweep=movielens_paper_table"])
    assert (cfg.algo.name, cfg.seed, cfg.rounds, cfg.clients_per_round) == (algo, 2, 500, 100)
    assert cfg.task.max_users is None and cfg.task.dataset == "ml-1m"
    assert OmegaConf.to_container(cfg.split.train) == {
        "mode": "disjoint", "proportion": 2, "recon_epochs": 5, "recon_epochs_constant": True,
        "recon_steps_max": 50, "post_recon_epochs": 1, "post_recon_steps_max": 50}
    assert cfg.split.eval.recon_steps_max == 50


def test_experiment_list_shares_task_and_algo():
    assert normalize(["-m", "experiment=movielens_tutorial,movielens_paper"]) == \
        ["-m", "+task=movielens", "+algo=fedrecon", "+experiment=movielens_tutorial,movielens_paper"]


# --------------------------------------------------------------------------
# Failures are recorded; the sweep goes on
# --------------------------------------------------------------------------
def test_failed_and_diverged_jobs_are_recorded_and_the_sweep_goes_on(tiny_ratings, tmp_path):
    # -1: refused before training (UserError), 1e30: diverges, 1.0: completes
    d = tmp_path / "sweep"
    p = run_sweep(*tiny_job(tiny_ratings), "+algo=fedrecon", "-m",
                  "algo.server_optimizer.learning_rate=-1,1e30,1.0", sweep_dir=d)
    assert p.returncode == 0, p.stderr[-3000:]
    s = summaries(d)
    assert [v["status"] for v in s.values()] == ["failed", "diverged", "completed"], s
    failed = s["movielens-fedrecon-seed0-0"]
    assert failed["error"].startswith(
        "UserError: algo.server_optimizer.learning_rate=-1 must be a positive number"), failed
    assert (failed["task"], failed["algo"], failed["seed"]) == ("movielens", "fedrecon", 0)
    assert s["movielens-fedrecon-seed0-1"]["error"].startswith("non-finite training loss")
    assert (d / "movielens-fedrecon-seed0-2" / "global_weights.npz").is_file()
    assert "run_dir: " + str(d / "movielens-fedrecon-seed0-2") in p.stdout
    assert "sweep: 1 completed, 1 diverged, 1 failed" in p.stdout
    assert last_line(p.stdout) == f"sweep_dir: {d}"
    assert "  failed: movielens-fedrecon-seed0-0: UserError: " in p.stderr
    assert "Traceback" not in p.stderr


# --------------------------------------------------------------------------
# Acceptance: joblib sweep -> table, plots, recon curve
# --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def joblib_sweep(tiny_ratings, tmp_path_factory):
    d = tmp_path_factory.mktemp("joblib") / "sweep"
    t = time.time()
    p = run_sweep("-m", *tiny_job(tiny_ratings), "+algo=fedrecon,fedavg", "seed=0,1",
                  "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", sweep_dir=d)
    assert p.returncode == 0, p.stderr[-3000:]
    assert last_line(p.stdout) == f"sweep_dir: {d}"
    print(f"joblib sweep: {time.time() - t:.1f} s")
    return d


def test_joblib_sweep_runs_every_job(joblib_sweep):
    s = summaries(joblib_sweep)
    assert sorted((v["algo"], v["seed"], v["status"]) for v in s.values()) == [
        ("fedavg", 0, "completed"), ("fedavg", 1, "completed"),
        ("fedrecon", 0, "completed"), ("fedrecon", 1, "completed")]
    assert {v["local_params"] for v in s.values() if v["algo"] == "fedrecon"} == {50}
    assert {v["local_params"] for v in s.values() if v["algo"] == "fedavg"} == {0}
    # the job processes ran in parallel (loky workers), each with its own TFF worker
    assert all((joblib_sweep / k / ".hydra" / "config.yaml").is_file() for k in s)


def test_table_of_the_sweep_matches_its_summaries(joblib_sweep, tmp_path):
    from analysis import table

    out = tmp_path / "table"
    assert table.main([str(joblib_sweep), "--out", str(out), "--metrics", "rating_accuracy,rmse",
                       "--rows", "algo", "--decimals", "4"]) == 0
    md = (out / "table.md").read_text()
    rows = {l.split("|")[1].strip(): [c.strip() for c in l.strip().strip("|").split("|")[1:]]
            for l in md.splitlines() if l.startswith("| fed")}
    s = summaries(joblib_sweep).values()
    means = {}
    for algo in ("fedavg", "fedrecon"):
        for j, m in enumerate(("rating_accuracy", "rmse")):
            xs = [v["final"]["test"][m] for v in s if v["algo"] == algo]
            assert len(xs) == 2
            means[algo, m] = statistics.mean(xs)
            expect = f"{statistics.mean(xs):.4f} ± {statistics.stdev(xs):.4f}"
            assert rows[algo][j].replace("**", "") == f"{expect} (n=2)", (algo, m, md)
    # bold: the higher accuracy, the lower rmse
    best_acc = max(("fedavg", "fedrecon"), key=lambda a: round(means[a, "rating_accuracy"], 4))
    best_rmse = min(("fedavg", "fedrecon"), key=lambda a: round(means[a, "rmse"], 4))
    assert rows[best_acc][0].startswith("**") and rows[best_rmse][1].startswith("**")
    assert (out / "table.tex").read_text().count(r"\mathbf{") >= 2


def test_plots_of_the_sweep(joblib_sweep, tmp_path):
    import matplotlib.image as mpimg

    from analysis import plot

    out = tmp_path / "plots"
    assert plot.main([str(joblib_sweep), "--out", str(out)]) == 0
    for stem in ("curve_movielens_val_rating_accuracy", "final_movielens_test_rating_accuracy"):
        img = mpimg.imread(out / f"{stem}.png")
        assert img.shape[:2] == (600, 960)
        assert img[..., :3].var() > 0.005, stem
        assert (out / f"{stem}.pdf").stat().st_size > 1000


@pytest.mark.tff
def test_recon_curve_of_a_fedrecon_run(joblib_sweep, tmp_path, capsys):
    from analysis import recon_curve

    run = joblib_sweep / "movielens-fedrecon-seed0-0"
    out = tmp_path / "rc"
    assert recon_curve.main([str(run), "--steps", "0,5", "--out", str(out)]) == 0
    with open(out / "recon_curve.csv") as f:
        rows = {r["steps"]: r for r in csv.DictReader(f)}
    final = json.loads((run / "summary.json").read_text())["final"]["test"]
    # the run's own split.eval reproduces summary.json: same model, weights and users
    assert float(rows["run"]["loss"]) == pytest.approx(final["loss"], abs=1e-5)
    assert float(rows["run"]["rmse"]) == pytest.approx(final["rmse"], abs=1e-5)
    # reconstruction steps fit the user embedding: the measured loss goes down with k
    assert float(rows["0"]["loss"]) > float(rows["5"]["loss"]), rows
    assert "check: the run's own split.eval gives test" in capsys.readouterr().out
    assert (out / "recon_curve.png").stat().st_size > 10_000
    # FedAvg has no local variables: nothing to reconstruct, one-line error
    assert recon_curve.main([str(joblib_sweep / "movielens-fedavg-seed0-2")]) == 2
    assert "has no local variables (local_params=0)" in capsys.readouterr().err


# --------------------------------------------------------------------------
# Ray and submitit
# --------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# Ray replaces 127.0.0.1 with the machine's interface address unless "cluster mode"
# is off (ray._private.services.resolve_ip_for_localhost); off keeps all traffic on loopback.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}


@pytest.fixture
def ray_cluster():
    """A one-node Ray cluster on 127.0.0.1 (`ray start --head --block`), stopped afterwards."""
    port = _free_port()
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths have a limit
    ray_bin = pathlib.Path(sys.executable).with_name("ray")
    log = open(pathlib.Path(temp) / "start.log", "w+")
    proc = subprocess.Popen(
        [str(ray_bin), "start", "--head", "--block", "--node-ip-address=127.0.0.1",
         f"--port={port}", "--num-cpus=2", "--include-dashboard=false", "--disable-usage-stats",
         f"--temp-dir={temp}"], stdout=log, stderr=subprocess.STDOUT,
        env={**os.environ, **RAY_ENV}, start_new_session=True)  # own group: stopped as one
    try:
        deadline = time.time() + 90
        while "Ray runtime started" not in pathlib.Path(log.name).read_text():
            assert proc.poll() is None, pathlib.Path(log.name).read_text()[-2000:]
            assert time.time() < deadline, "ray start took over 90 s"
            time.sleep(0.5)
        yield f"127.0.0.1:{port}"
    finally:
        proc.send_signal(signal.SIGTERM)  # --block: stops the node's processes on SIGTERM
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # anything of this cluster still running
        except ProcessLookupError:
            pass
        log.close()
        subprocess.run(["rm", "-rf", temp])


def test_ray_launcher_sweep_on_a_local_cluster(ray_cluster, tiny_ratings, tmp_path):
    d = tmp_path / "sweep"
    p = run_sweep("-m", *tiny_job(tiny_ratings), "+algo=fedrecon", "seed=0,1",
                  "hydra/launcher=ray_cluster", f"hydra.launcher.ray.init.address={ray_cluster}",
                  sweep_dir=d, env=RAY_ENV)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert f"Connecting to existing Ray cluster at address: {ray_cluster}" in p.stderr + p.stdout
    s = summaries(d)
    assert sorted((v["seed"], v["status"]) for v in s.values()) == [(0, "completed"),
                                                                   (1, "completed")]
    # Ray relays the jobs' output asynchronously, so their lines may come after this one
    assert f"sweep_dir: {d}" in p.stdout.splitlines()


def test_submitit_local_sweep(tiny_ratings, tmp_path):
    d = tmp_path / "sweep"
    p = run_sweep("-m", *tiny_job(tiny_ratings), "+algo=fedrecon", "seed=0,1",
                  "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10", sweep_dir=d)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    s = summaries(d)
    assert sorted((v["seed"], v["status"]) for v in s.values()) == [(0, "completed"),
                                                                   (1, "completed")]
    # each job ran as its own submitit process, with submitit's logs in the sweep dir
    logs = list((d / ".submitit").glob("*/*_log.out"))
    assert len(logs) == 2 and any("run_dir: " in l.read_text() for l in logs)
    assert last_line(p.stdout) == f"sweep_dir: {d}"


@pytest.mark.parametrize("algo", ["fedprox", "fedrep", "ditto", "hypcluster"])
def test_paper_preset_runs_the_other_algorithms_which_ignore_fedavgs_eval_key(algo, tiny_ratings, tmp_path):
    """The preset sets algo.eval=finetune for FedAvg; an algorithm that does not declare
    the key reports its own evaluation modes (it crashed Ditto and HypCluster before)."""
    from hydra import compose, initialize_config_dir

    from fedrecon_bench import algorithms, loop, tuned
    from fedrecon_bench.cli_args import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "+task=movielens", f"+algo={algo}", "+sweep=movielens_paper_table", f"task.ratings_file={tiny_ratings}",
            "task.max_users=40", "rounds=1", "clients_per_round=4", "eval_every=1", "algo.store=memory"
            if algo in ("fedrep", "ditto") else "seed=0"])
    tuned.apply(cfg)
    assert cfg.algo.eval == "finetune"
    s = loop.run(cfg, str(tmp_path))
    modes = {r.get("eval_mode", "") for r in map(json.loads, (tmp_path / "metrics.jsonl").read_text().splitlines())
             if r["split"] == "test"}
    assert s["status"] == "completed"
    assert ("finetune" in modes) == algorithms.spec(algo).declares("algo.eval") == (algo == "fedprox"), modes
