"""Studies (analysis/study.py): picks read validation users only, and a dry run lists the sweeps."""
import pytest

from analysis import runs as R
from analysis import study as S


def _run(path, algo, z, clip, val, test, status="completed"):
    final = {"val": {"rating_accuracy": val}, "test": {"rating_accuracy": test}}
    return R.Run(path, {"algo": algo, "status": status, "final": final, "seed": 0},
                 {"dp": {"noise_multiplier": z, "clip": clip}})


def test_picks_use_validation_users_only_and_skip_unstable_candidates():
    runs = [_run("a", "fedrecon", 1.0, 0.3, val=0.30, test=0.50),   # best on test, not on val
            _run("b", "fedrecon", 1.0, 3.0, val=0.40, test=0.20),   # best on val: picked
            _run("c", "fedrecon", 1.0, 10.0, val=0.90, test=0.90, status="diverged"),  # unstable
            _run("d", "fedrecon", 2.0, 3.0, val=0.10, test=0.99),
            _run("e", "fedrecon", 2.0, 1.0, val=0.20, test=0.01)]
    got = S.pick(runs, ["algo", "dp.noise_multiplier"], ["dp.clip"], "rating_accuracy")
    assert got[("fedrecon", 1.0)]["pick"] == (3.0,) and got[("fedrecon", 2.0)]["pick"] == (1.0,)
    assert got[("fedrecon", 1.0)]["unstable"] == [(10.0,)]
    assert got[("fedrecon", 1.0)]["scores"] == {(0.3,): 0.30, (3.0,): 0.40}
    # The test values never enter: changing them changes no pick.
    for r in runs:
        r.summary["final"]["test"]["rating_accuracy"] = 1.0 - r.summary["final"]["test"]["rating_accuracy"]
    assert S.pick(runs, ["algo", "dp.noise_multiplier"], ["dp.clip"], "rating_accuracy") == got


def test_lower_is_better_metrics_pick_the_lowest():
    runs = [R.Run(p, {"algo": "x", "status": "completed", "final": {"val": {"rmse": v}}}, {"k": k})
            for p, k, v in (("a", 1, 0.9), ("b", 2, 0.8))]
    assert S.pick(runs, ["algo"], ["k"], "rmse")[("x",)]["pick"] == (2,)


def test_dp_study_dry_run_lists_its_first_stage(tmp_path, capsys):
    assert S.main(["dp", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * 6  # three algorithms x six clips, each a sweep over the noise multipliers
    assert all("+sweep=movielens_dp_study" in l and "dp.noise_multiplier=0,1,2,4,8" in l for l in lines)
    assert not (tmp_path / "clip").exists()


def test_paper_study_dry_run_tunes_every_new_algorithm_on_both_user_splits(tmp_path, capsys):
    from analysis import study_paper as P

    assert S.main(["paper-movielens", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    known, tune = lines[:8], lines[8:]
    assert len(tune) == len(P.available(P.ALGOS)) - 4 >= 4  # FedRep's folder may land later
    assert all("algo.client_optimizer.learning_rate=0.02,0.05,0.1,0.2,0.5" in l and
               "task.split_by=user,example seed=0 " in l for l in tune)
    assert sum("+algo=hypcluster" in l for l in tune) == 2  # K = 2 and 4
    # the paper's four at the Baselines table's picks, 3 seeds, unseen and seen users
    assert "+algo=fedavg algo.eval=finetune algo.client_optimizer.learning_rate=0.2 task.split_by=example " \
           "seed=0,1,2" in known[3]
    assert all("seed=0,1,2" in l for l in known) and not (tmp_path / "tune").exists()


def test_paper_study_reduced_runs_fedrecon_and_fedavg_at_the_preset_rates(tmp_path, capsys):
    assert S.main(["paper-movielens", "--reduced", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    assert "+algo=fedrecon" in lines[0] and "learning_rate=0.5 task.split_by=user seed=0,1,2" in lines[0]
    assert "+algo=fedavg" in lines[1] and "learning_rate=0.1 task.split_by=user seed=0,1,2" in lines[1]


def test_participation_rounds_give_the_nominal_mean_visits(tmp_path, capsys):
    from analysis import study_participation as P

    # 100 clients a round over 4,832 (unseen) / 6,040 (seen) training users
    assert P.rounds_for("user") == [24, 48, 97, 242, 966]
    assert P.rounds_for("example") == [30, 60, 121, 302, 1208]
    assert S.main(["participation", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 * len(P.available(P.ALGOS))
    assert all("seed=0,1,2" in l and "eval_every=${rounds}" in l for l in lines)


def test_dp_study_reuses_each_picks_seed0_tuning_run(tmp_path, monkeypatch):
    """The final table's seed 0 is the pick's tuning run: from the clip stage when the rate
    x 1 won, from the rates stage otherwise; other candidates are not."""
    from analysis import study_dp as D

    def run(path, clip, lr):
        cfg = {"dp": {"noise_multiplier": 1.0, "name": "gaussian_fixed", "clip": clip, "target_quantile": 0.5},
               "algo": {"client_optimizer": {"learning_rate": lr}, "server_optimizer": {"learning_rate": 1.0}}}
        return R.Run(path, {"algo": "fedrecon", "status": "completed", "final": {}, "seed": 0}, cfg)

    stages = {"clip": [run("c1", 1.0, 0.5), run("c3", 3.0, 0.5)], "rates": [run("r1", 1.0, 0.25), run("r2", 1.0, 1.0)],
              "server": []}
    study = S.Study(str(tmp_path))
    monkeypatch.setattr(study, "runs", lambda *names: [r for n in names for r in stages[n]])
    pick = {"dp.name": "gaussian_fixed", "dp.clip": 1.0, "dp.target_quantile": 0.5,
            "algo.server_optimizer.learning_rate": 1.0}
    at = lambda lr: {("fedrecon", 1.0): {**pick, "algo.client_optimizer.learning_rate": lr}}
    assert [r.path for r in D.tuning_runs(study, at(0.5))] == ["c1"]
    assert [r.path for r in D.tuning_runs(study, at(1.0))] == ["r2"]


def test_dp_study_reduced_tries_the_fixed_clips_only(tmp_path, capsys):
    assert S.main(["dp", "--reduced", "--dry-run", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 * 4 and all("dp.name=gaussian_fixed" in l for l in lines)


@pytest.mark.parametrize("weighting", ["examples", "uniform"])
def test_dp_study_ablation_jobs_compose_without_dp(weighting):
    """Each ablation job passes the CLI's check (dp=none failed it: the preset sweeps dp keys)
    and runs without DP with the weighting it names."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from analysis import study_dp as D
    from fedrecon_bench import cli_check, privacy
    from fedrecon_bench.cli_args import CONF_DIR

    job = cli_check.first_job(["+task=movielens", *D.no_dp("fedrecon", weighting, ["seed=0"])])
    cli_check.check(job)
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=job)
    assert privacy.params(cfg) is None and cfg.algo.client_weighting == weighting


def test_dp_study_runs_a_changed_pick_in_new_dirs_and_reports_only_the_picks_runs(monkeypatch):
    """Stage dirs are named by the pick (clip, rates): after a pick changes (a grown grid),
    its rates, final and ablation runs go to new dirs instead of being refused by the
    old ones, and the report reads only the current picks' dirs."""
    import argparse

    from analysis import study_dp as D

    def clip_run(name, clip, score):
        cfg = {"dp": {"noise_multiplier": 0.0, "name": "gaussian_fixed", "clip": clip, "target_quantile": 0.5},
               "algo": {"client_optimizer": {"learning_rate": 0.5}, "server_optimizer": {"learning_rate": 1.0}}}
        final = {"val": {"rating_accuracy": score}}
        return R.Run(name, {"algo": "fedrecon", "status": "completed", "final": final, "seed": 0}, cfg)

    monkeypatch.setattr(D, "ALGOS", {"fedrecon": 0.5})
    monkeypatch.setattr(D, "ZS", (0.0,))
    got = {}
    monkeypatch.setattr(D, "_report", lambda study, picks, tuning, stages: got.setdefault("stages", []).append(stages))

    def dirs(clip_scores):
        study = S.Study("out")
        names = []
        monkeypatch.setattr(study, "sweep", lambda name, overrides: (names.append(name), got.update({name: overrides})))
        clip = [clip_run(f"c{c}", c, v) for c, v in clip_scores.items()]
        monkeypatch.setattr(study, "runs", lambda *n: clip if n == ("clip",) else [])
        D.run(study, argparse.Namespace(reduced=False))
        return [n for n in names if not n.startswith("clip/")], got["stages"][-1]

    first, stages1 = dirs({1.0: 0.40, 10.0: 0.39})
    again, _ = dirs({1.0: 0.40, 10.0: 0.39})
    changed, stages2 = dirs({1.0: 0.39, 10.0: 0.40})
    assert first == again == ["rates/fedrecon/z0/fixed1", "server/fedrecon/z0/fixed1-lr0.5",
                              "final/fedrecon/z0/fixed1-lr0.5-server1",
                              "ablation/fedrecon/examples/lr0.5-server1", "ablation/fedrecon/uniform/lr0.5-server1"]
    assert changed[:3] == ["rates/fedrecon/z0/fixed10", "server/fedrecon/z0/fixed10-lr0.5",
                           "final/fedrecon/z0/fixed10-lr0.5-server1"]
    assert stages1["final"] == [first[2]] and stages2["final"] == [changed[2]]
    assert stages2["ablation"] == first[3:]  # the Baselines rates: the same ablation runs
    # each rate stage tries its rate x {1/2, 2} with the other values at the pick so far
    assert "algo.client_optimizer.learning_rate=0.25,1" in got[first[0]]
    assert {"algo.server_optimizer.learning_rate=0.5,2", "algo.client_optimizer.learning_rate=0.5",
            "dp.clip=1.0"} <= set(got[first[1]])


def test_participation_reduced_jobs_are_the_first_jobs_of_the_full_grid(tmp_path, capsys):
    """--reduced (seed 0) and the full grid (seeds 0-2) share their sweep dirs, so job k of the
    one must be job k of the other: a relaunch with all seeds reuses seed 0's runs."""
    import subprocess
    import sys

    def jobs(*flags):
        assert S.main(["participation", "--dry-run", "--out", str(tmp_path), *flags]) == 0
        first = capsys.readouterr().out.splitlines()[0].split()  # stateful FedAvg, unseen users
        p = subprocess.run([sys.executable, *first[1:], "--dry-run"], cwd=S.ROOT, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]
        return [l.split(": ", 1)[1] for l in p.stdout.splitlines() if l.startswith("job ")]

    reduced, full = jobs("--reduced"), jobs()
    assert len(reduced) == 5 and len(full) == 15 and full[:5] == reduced
    assert [j.split("seed=")[1].split()[0] for j in full] == ["0"] * 5 + ["1"] * 5 + ["2"] * 5


def test_paper_study_tunes_dittos_own_keys_at_its_picked_rate_and_runs_its_finals_there(monkeypatch, tmp_path):
    """The personal stage: at each split's picked client rate, seed 0 of Ditto's grid (lambda,
    personal rate; on seen users also where v starts); the finals, the seed-0 run the table
    keeps and the preset's tuned row all use the full pick."""
    import argparse

    from analysis import study_paper as P

    def run(name, split, lr, val, lam=0.1, plr=0.1, init="initial"):
        cfg = {"task": {"split_by": split}, "algo": {"client_optimizer": {"learning_rate": lr}, "lam": lam,
                                                     "personal_optimizer": {"learning_rate": plr}, "personal_init": init}}
        return R.Run(name, {"algo": "ditto", "status": "completed", "final": {"val": {"rating_accuracy": val}},
                            "seed": 0}, cfg)

    stages = {"tune/ditto": [run("t1", "user", 0.1, 0.33), run("t2", "user", 0.2, 0.30),
                             run("t3", "example", 0.2, 0.22)],
              "personal/ditto/user/lr0.1": [run("u1", "user", 0.1, 0.36, lam=1.0, plr=0.03),
                                            run("u2", "user", 0.1, 0.34, lam=0.1, plr=0.03)],
              "personal/ditto/example/lr0.2": [run("e1", "example", 0.2, 0.39, lam=1.0, plr=0.01, init="global"),
                                               run("e2", "example", 0.2, 0.25, lam=1.0, plr=0.01)]}
    monkeypatch.setattr(P, "KNOWN", {})
    monkeypatch.setattr(P, "ALGOS", {"ditto": P.ALGOS["ditto"]})
    got = {}
    monkeypatch.setattr(P, "_report", lambda study, stages, picks, algos: got.update(picks=picks, stages=stages))
    study = S.Study(str(tmp_path))
    sweeps = {}
    monkeypatch.setattr(study, "sweep", lambda name, overrides: sweeps.update({name: overrides}))
    monkeypatch.setattr(study, "runs", lambda *names: [r for n in names for r in stages.get(n, [])])
    P.run(study, argparse.Namespace(reduced=False))
    assert {"algo.lam=0.1,1,3", "algo.personal_optimizer.learning_rate=0.01,0.03,0.1",
            "algo.client_optimizer.learning_rate=0.1", "seed=0"} <= set(sweeps["personal/ditto/user/lr0.1"])
    assert "algo.personal_init=initial,global" in sweeps["personal/ditto/example/lr0.2"]
    assert not any("personal_init" in o for o in sweeps["personal/ditto/user/lr0.1"])
    final = "final/ditto/example/lr0.2-lam1-plr0.01-initglobal"
    assert got["stages"] == ["known", "final/ditto/example/lr0.2-lam1-plr0.01-initglobal",
                             "final/ditto/user/lr0.1-lam1-plr0.03"]
    assert {"algo.lam=1", "algo.personal_optimizer.learning_rate=0.01", "algo.personal_init=global",
            "algo.client_optimizer.learning_rate=0.2", "seed=1,2"} <= set(sweeps[final])
    assert sorted(r.path for r in P.picked_runs(study, got["picks"])) == ["e1", "u1"]
    tuned = P._tuned_yaml(got["picks"], P.ALGOS)
    assert ("{when: {algo.name: ditto, task.split_by: example}, set: {algo.client_optimizer.learning_rate: 0.2, "
            "algo.lam: 1, algo.personal_optimizer.learning_rate: 0.01, algo.personal_init: global}}") in tuned
    md = open(P._tuning_md(study, got["picks"])).read()
    assert "| ditto | user | lr=0.1 **(picked)** | 0.3300 |" in md and "| ditto | user | lr=0.2 | 0.3000 |" in md
    assert "| ditto | user | lam=1, plr=0.03 **(picked)** | 0.3600 |" in md
    assert "| ditto | example | lam=1, plr=0.01, init=global **(picked)** | 0.3900 |" in md


def test_tasks_study_gives_each_algorithm_fedrecons_step_budget_on_both_presets(tmp_path, capsys):
    """make tasks-study: 6 algorithms x 2 presets, 2 seeds; FedAvg-style clients take FedRecon's
    global epochs (EMNIST 2, Shakespeare 1), FedRep 1 local epoch, fine-tuning the preset's
    reconstruction rate."""
    assert S.main(["tasks", "--dry-run", "--out", str(tmp_path)]) == 0
    jobs = {line.split("hydra.sweep.dir=")[1].split(str(tmp_path) + "/runs/")[1]: line
            for line in capsys.readouterr().out.splitlines()}
    assert len(jobs) == 12 and all("seed=0,1" in j for j in jobs.values())
    assert "experiment=emnist_fedrecon" in jobs["emnist/fedavg"] and "algo.client_epochs=2" in jobs["emnist/fedavg"]
    assert "algo.finetune.optimizer.learning_rate=0.5" in jobs["shakespeare/fedprox"]
    assert "algo.client_epochs=1" in jobs["shakespeare/hypcluster"] and "algo.clusters=2" in jobs["shakespeare/hypcluster"]
    assert {"algo.local_epochs=1", "algo.global_epochs=2"} <= set(jobs["emnist/fedrep"].split())
    assert "algo.personal_optimizer.learning_rate=1" in jobs["shakespeare/ditto"].split()


def test_tasks_study_readme_table_shows_each_tasks_headline_metric(tmp_path, monkeypatch):
    """The README table: a column per task with that task's own metric (EMNIST accuracy, NWP
    accuracy_no_oov), read from the runs once."""
    from analysis import study_tasks as T

    def run(task, algo, **test):
        return R.Run(f"{task}-{algo}", {"task": task, "algo": algo, "status": "completed", "seed": 0,
                                        "final": {"test": test}}, {})
    stages = {"runs/emnist": [run("emnist", "fedrecon", accuracy=0.66), run("emnist", "ditto", accuracy=0.68)],
              "runs/shakespeare": [run("nwp", "fedrecon", accuracy=0.07, accuracy_no_oov=0.09)]}
    study = S.Study(str(tmp_path))
    reads = []
    monkeypatch.setattr(study, "runs", lambda *names: reads.extend(names) or [r for n in names for r in stages[n]])
    T._report(study, "make tasks-study")
    md = (tmp_path / "readme" / "table.md").read_text().splitlines()
    assert md[0] == "| algo | emnist accuracy ↑ | nwp accuracy_no_oov ↑ |"
    assert md[2] == "| ditto | **0.680** (n=1) | – |" and md[3] == "| fedrecon | 0.660 (n=1) | **0.090** (n=1) |"
    assert sorted(reads) == ["runs/emnist", "runs/shakespeare"]
