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
