"""The command line before Hydra (fedrecon_bench/cli_check.py): its own --help, one-line errors with
the closest names for unknown keys and group values (the `+key=` trap included), a sweep's
preview, --info, and no directory left behind by a refused run."""
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fedrecon_bench import cli_check
from fedrecon_bench.errors import UserError


def _cli(*args, cwd=ROOT):
    env = {**os.environ, "WANDB_MODE": "offline"}
    return subprocess.run([sys.executable, "-m", "fedrecon_bench", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_help_names_usage_groups_and_examples():
    p = _cli("--help")
    assert p.returncode == 0
    out = p.stdout
    assert out.startswith("usage: python -m fedrecon_bench +task=<task> +algo=<algo>")
    assert "+task and +algo are required" in out
    for name in ("movielens", "emnist", "nwp", "fedrecon", "fedavg", "stateful_fedavg", "centralized", "fedprox",
                 "movielens_paper (movielens, fedrecon)", "movielens_dp_study", "engine=fast"):
        assert name in out, name
    assert out.count("\n  python -m fedrecon_bench ") == 3 and "docs/configuration.md" in out
    assert "${" not in out  # no unresolved interpolation shown as a default


@pytest.mark.parametrize("overrides,message", [
    (["round=3"], "round is not a config key; did you mean rounds?"),
    (["+round=3"], "+round=3 adds a key the suite never reads (set an existing key without +: rounds=3)"),
    (["algo.client_optimizer.learning_rat=0.1"], "did you mean algo.client_optimizer.learning_rate or"),
    (["split/train=dijsoint"], "unknown split/train 'dijsoint'; did you mean disjoint?"),
    (["logger=wandbb"], "unknown logger 'wandbb'; did you mean wandb?"),
    (["dp.clip=3"], "dp.clip is not a key of the chosen dp option; dp=gaussian_adaptive, dp=gaussian_fixed have it"),
])
def test_unknown_keys_and_values_get_one_line_with_the_closest_names(overrides, message):
    with pytest.raises(UserError) as e:
        cli_check.check(["+task=movielens", "+algo=fedrecon", *overrides])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_a_typo_exits_2_in_one_line_and_leaves_no_directory(tmp_path):
    p = _cli("+task=movielens", "+algo=fedrecon", "+round=3", cwd=tmp_path)
    assert p.returncode == 2 and p.stderr.strip().count("\n") == 0 and p.stderr.startswith("error: +round=3")
    assert os.listdir(tmp_path) == []


def test_a_run_refused_after_hydra_started_leaves_no_directory(tmp_path):
    """The data check happens inside the run (clients_per_round above the population):
    the run dir Hydra made, and its empty runs/<task>/<algo>/ parents, are removed."""
    ratings = tmp_path / "r.csv"
    ratings.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},3\n" for u in range(1, 11) for i in range(1, 6)))
    work = tmp_path / "work"
    work.mkdir()
    p = _cli("+task=movielens", "+algo=fedrecon", f"task.ratings_file={ratings}", "clients_per_round=500",
             "logger=none", cwd=work)
    assert p.returncode == 2 and "clients_per_round=500 is larger" in p.stderr
    assert os.listdir(work) == []


@pytest.mark.parametrize("flag", [["--cfg", "job"], ["--dry-run"]])
def test_a_sweep_is_previewed_job_by_job_without_running(tmp_path, flag):
    p = _cli("-m", "+sweep=movielens_tutorial_table", *flag, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert lines[-1] == "4 jobs (nothing run: --dry-run)" and "Traceback" not in p.stderr
    assert lines[0].startswith("job 0: +task=movielens +algo=fedrecon seed=0")
    assert os.listdir(tmp_path) == []


def test_a_previewed_job_with_a_bad_value_is_marked():
    lines = cli_check.preview(["+task=movielens", "+algo=fedrecon", "algo.client_optimizer.learning_rate=-1,0.1"])
    first, second, count = lines.splitlines()
    assert "<- refused: algo.client_optimizer.learning_rate=-1 must be a positive number" in first
    assert "refused" not in second and count == "2 jobs (nothing run: --dry-run)"


def test_bare_info_works():
    p = _cli("--info")
    assert p.returncode == 0 and "Config search path" in p.stdout
