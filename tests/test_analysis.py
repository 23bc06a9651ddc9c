"""analysis.table / analysis.plot on hand-made run dirs: numbers, selection, errors.

The run dirs here are written by hand in the run-contract layout, so the expected
values are known exactly; tests/test_sweeps.py does the same on real sweep output.
"""
from __future__ import annotations

import json
import pathlib
import statistics

import numpy as np
import pytest
from omegaconf import OmegaConf

from analysis import plot as plot_mod
from analysis import runs as R
from analysis import table as table_mod


def make_run(root: pathlib.Path, name: str, *, algo: str, seed: int, final: dict,
             rows: list[dict] = (), status: str = "completed", task: str = "movielens",
             choices: dict | None = None, config: dict | None = None, **extra) -> pathlib.Path:
    d = root / name
    (d / ".hydra").mkdir(parents=True)
    summary = {"task": task, "algo": algo, "seed": seed, "status": status, "final": final, **extra}
    (d / "summary.json").write_text(json.dumps(summary))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    OmegaConf.save(OmegaConf.create(config or {"seed": seed, "task": {"name": task},
                                              "algo": {"name": algo}}), d / ".hydra" / "config.yaml")
    OmegaConf.save(OmegaConf.create({"hydra": {"runtime": {"choices": {
        "task": task, "algo": algo, "hydra/launcher": "basic", **(choices or {})}}}}),
        d / ".hydra" / "hydra.yaml")
    return d


# Two algorithms: "a" (3 seeds) is better in accuracy, "b" (2 seeds) better in loss.
A = {0: (0.50, 1.10), 1: (0.54, 1.00), 2: (0.55, 1.05)}   # seed: (accuracy, loss)
B = {0: (0.40, 0.90), 1: (0.45, 0.80)}


@pytest.fixture
def sweep(tmp_path):
    root = tmp_path / "sweep"
    for algo, vals in (("a", A), ("b", B)):
        for seed, (acc, loss) in vals.items():
            make_run(root, f"{algo}-{seed}", algo=algo, seed=seed,
                     final={"test": {"loss": loss, "accuracy": acc, "clients": 9, "eval_s": 1.0},
                            "val": {"loss": loss + 0.1, "accuracy": acc - 0.1}})
    make_run(root, "a-9", algo="a", seed=9, status="diverged", final={},
             error="non-finite training loss (nan) at round 3")
    return root


def _cells(md: str) -> dict[str, list[str]]:
    """Markdown table -> {first cell: [other cells]}."""
    out = {}
    for line in md.splitlines():
        if line.startswith("| ") and not line.startswith("| algo") and "--" not in line[:6]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            out[cells[0]] = cells[1:]
    return out


def test_table_mean_std_n_and_bold_by_metric_direction(sweep, tmp_path, capsys):
    out = tmp_path / "out"
    assert table_mod.main([str(sweep), "--out", str(out)]) == 0
    md = (out / "table.md").read_text()
    assert md in capsys.readouterr().out
    head = md.splitlines()[0]
    assert head == "| algo | movielens loss ↓ | movielens accuracy ↑ |"  # bookkeeping keys left out
    cells = _cells(md)
    a_acc = [v[0] for v in A.values()]
    b_loss = [v[1] for v in B.values()]
    # independent mean / sample std: a accuracy = 0.53 ± 0.0264575, b loss = 0.85 ± 0.0707107
    assert f"{statistics.mean(a_acc):.3f}" == "0.530" and f"{statistics.stdev(a_acc):.3f}" == "0.026"
    assert cells["a"] == ["1.050 ± 0.050 (n=3)", "**0.530 ± 0.026** (n=3)"]
    assert cells["b"] == [f"**{statistics.mean(b_loss):.3f} ± {statistics.stdev(b_loss):.3f}** (n=2)",
                          "0.425 ± 0.035 (n=2)"]
    assert "a-9: status diverged (non-finite training loss (nan) at round 3); not counted" in md
    tex = (out / "table.tex").read_text()
    for rule in (r"\toprule", r"\midrule", r"\bottomrule", r"\cmidrule(lr){2-3}"):
        assert rule in tex
    assert r"a & $1.050 \pm 0.050$ {\scriptsize $n{=}3$} & $\mathbf{0.530 \pm 0.026}$" in tex
    assert r"\multicolumn{2}{c}{movielens}" in tex
    rows = (out / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + 5 * 2  # header + 5 completed runs x 2 metrics


def test_table_val_split_and_metric_choice(sweep, tmp_path):
    out = tmp_path / "out"
    assert table_mod.main([str(sweep), "--out", str(out), "--split", "val",
                           "--metrics", "accuracy", "--decimals", "2"]) == 0
    cells = _cells((out / "table.md").read_text())
    assert cells["a"] == ["**0.43 ± 0.03** (n=3)"] and cells["b"] == ["0.33 ± 0.04 (n=2)"]  # 0.32500000000000007


def test_best_val_picks_the_round_of_the_best_val_metric(tmp_path):
    root = tmp_path / "s"
    val = [(1, 0.20, 2.0), (2, 0.50, 1.5), (3, 0.40, 1.4)]  # best val accuracy at round 2
    rows = [{"round": r, "split": "val", "accuracy": acc, "loss": loss} for r, acc, loss in val]
    rows.append({"round": 3, "split": "test", "accuracy": 0.41, "loss": 1.3})
    make_run(root, "r0", algo="a", seed=0, rows=rows,
             final={"val": rows[2], "test": rows[3]})
    # seed 1 peaks at the last round, where the (only) test row is
    rows1 = [{"round": 1, "split": "val", "accuracy": 0.3, "loss": 1.9},
             {"round": 3, "split": "val", "accuracy": 0.6, "loss": 1.2},
             {"round": 3, "split": "test", "accuracy": 0.58, "loss": 1.25}]
    make_run(root, "r1", algo="a", seed=1, rows=rows1, final={"val": rows1[1], "test": rows1[2]})
    runs = R.load_runs([str(root)])
    t = table_mod.Table(runs, split="val", select="best-val")
    assert t.val_metric == "accuracy"
    mean, std, n = t.stats[(("a",), ("movielens",), "accuracy")]
    assert (mean, n) == (pytest.approx((0.5 + 0.6) / 2), 2)
    assert t.stats[(("a",), ("movielens",), "loss")][0] == pytest.approx((1.5 + 1.2) / 2)
    # test rows exist only at the end: seed 0's best round (2) has none, so only seed 1 counts
    t = table_mod.Table(runs, split="test", select="best-val")
    assert t.stats[(("a",), ("movielens",), "accuracy")] == (pytest.approx(0.58), None, 1)
    assert any("r0: no test accuracy at its best-val round 2; not counted" in n for n in t.notes)
    # --val-metric loss (lower is better): best at round 3 for both seeds
    t = table_mod.Table(runs, split="val", select="best-val", val_metric="loss")
    assert t.stats[(("a",), ("movielens",), "accuracy")][0] == pytest.approx((0.4 + 0.6) / 2)


def test_rows_by_config_group_and_eval_modes(tmp_path):
    root = tmp_path / "s"
    for seed in (0, 1):
        for variant, acc in (("disjoint", 0.3), ("tutorial_exercise", 0.35)):
            make_run(root, f"{variant}{seed}", algo="fedrecon", seed=seed,
                     choices={"split/train": variant},
                     final={"test": {"accuracy": acc + seed / 100}})
        # an algorithm with two evaluation modes: final[test] is the headline, test_fresh the other
        make_run(root, f"sf{seed}", algo="stateful_fedavg", seed=seed, split_by="user",
                 final={"test": {"accuracy": 0.2, "eval_mode": "recon"},
                        "test_fresh": {"accuracy": 0.1 + seed / 10, "eval_mode": "fresh"}})
    runs = R.load_runs([str(root)])
    t = table_mod.Table(runs, rows=["algo", "split/train"])
    assert t.stats[(("fedrecon", "tutorial_exercise"), ("movielens",), "accuracy")][0] == \
        pytest.approx(0.355)
    assert t.stats[(("stateful_fedavg", None), ("movielens",), "accuracy")][0] == pytest.approx(0.2)
    t = table_mod.Table(runs)  # default rows: algo, eval_mode (found), split_by (in a summary)
    assert t.row_keys == ["algo", "eval_mode", "split_by"]
    assert t.stats[(("stateful_fedavg", "fresh", "user"), ("movielens",), "accuracy")] == \
        (pytest.approx(0.15), pytest.approx(0.0707107, rel=1e-5), 2)
    assert t.stats[(("stateful_fedavg", "recon", "user"), ("movielens",), "accuracy")][0] == \
        pytest.approx(0.2)
    assert "| fedrecon | – | – |" in t.markdown()


@pytest.mark.parametrize("args,fragment", [
    (["{missing}"], "no such directory"),
    (["{empty}"], "no runs found (no summary.json at or below it)"),
    (["{sweep}", "--metrics", "bleu"], "--metrics 'bleu' is not in the runs' final test metrics; "
                                        "available: loss, accuracy"),
    (["{sweep}", "--select", "best"], "--select 'best': use final or best-val"),
    (["{failed}"], "no completed runs among 1 (statuses: diverged)"),
    ([], "no runs given"),
])
def test_table_errors_are_one_line(sweep, tmp_path, capsys, args, fragment):
    (tmp_path / "empty").mkdir()
    failed = tmp_path / "failed"
    make_run(failed, "x", algo="a", seed=0, status="diverged", final={})
    subst = {"missing": tmp_path / "nope", "empty": tmp_path / "empty", "sweep": sweep,
             "failed": failed}
    assert table_mod.main([a.format(**subst) for a in args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and fragment in err, err


class FakeWandbRun:
    """What analysis.runs uses of a wandb public-API run."""

    def __init__(self, run_dir: pathlib.Path):
        s = json.loads((run_dir / "summary.json").read_text())
        self.id = run_dir.name
        self.config = {"task": {"name": s["task"]}, "algo": {"name": s["algo"]}, "seed": s["seed"]}
        # RunLog.finish's wandb summary: status and final/<split>/<metric>
        self.summary = {"status": s["status"], **{f"final/{sp}/{k}": v for sp, m in s["final"].items()
                                                  for k, v in m.items()}}
        self._history = [{"_step": r["round"], **{f"{r['split']}/{k}": v for k, v in r.items()
                                                  if k not in ("round", "split")}}
                         for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines())]

    def scan_history(self):
        return iter(self._history)


class FakeWandbApi:
    def __init__(self, runs):
        self._runs, self.calls = runs, []

    def runs(self, path, filters=None):
        self.calls.append(path)
        return list(self._runs)


def test_wandb_records_give_the_same_table(sweep, tmp_path, capsys):
    api = FakeWandbApi([FakeWandbRun(d) for d in sorted(sweep.iterdir())])
    assert table_mod.main(["--wandb", "me/fedrecon-bench", "--out", str(tmp_path / "w")], api=api) == 0
    assert api.calls == ["me/fedrecon-bench"]
    assert table_mod.main([str(sweep), "--out", str(tmp_path / "d")]) == 0
    strip_notes = lambda p: (p / "table.md").read_text().split("\n- ")[0]
    assert strip_notes(tmp_path / "w") == strip_notes(tmp_path / "d")
    # best-val through the history
    runs = R.from_wandb("me/p", api=FakeWandbApi([FakeWandbRun(sweep / "a-0")]))
    assert runs[0].rows() == [] and runs[0].summary["final"]["test"]["accuracy"] == 0.5
    with pytest.raises(Exception, match="no runs found"):
        R.from_wandb("me/empty", api=FakeWandbApi([]))


def _curve_sweep(root: pathlib.Path):
    """2 algorithms x 3 seeds, val every round for 6 rounds."""
    rng = np.random.default_rng(0)
    for algo, slope in (("fedrecon", 0.05), ("fedavg", 0.02)):
        for seed in range(3):
            rows = [{"round": r, "split": "val", "accuracy": 0.1 + slope * r + rng.normal(0, 0.01),
                     "loss": 2 - slope * r} for r in range(1, 7)]
            test = {"round": 6, "split": "test", "accuracy": rows[-1]["accuracy"] - 0.01, "loss": 1.0}
            make_run(root, f"{algo}{seed}", algo=algo, seed=seed, rows=rows + [test],
                     final={"val": rows[-1], "test": test})


def _image(path):
    import matplotlib.image as mpimg

    return mpimg.imread(path)


def test_plot_writes_readable_nonblank_figures(tmp_path, capsys):
    _curve_sweep(tmp_path / "s")
    out = tmp_path / "plots"
    assert plot_mod.main([str(tmp_path / "s"), "--out", str(out)]) == 0
    for stem in ("curve_movielens_val_accuracy", "final_movielens_test_accuracy"):
        img = _image(out / f"{stem}.png")
        assert img.shape[:2] == (600, 960)  # 6.4 x 4.0 in at 150 dpi
        assert img[..., :3].var() > 0.005  # not blank
        assert (out / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
    assert plot_mod.main([str(tmp_path / "s"), "--out", str(out), "--metric", "loss",
                          "--dpi", "100"]) == 0
    assert _image(out / "curve_movielens_val_loss.png").shape[:2] == (400, 640)


def test_plot_errors(tmp_path, capsys):
    make_run(tmp_path / "s", "r", algo="a", seed=0, final={"test": {"accuracy": 0.5}},
             rows=[{"round": 1, "split": "train", "accuracy": 0.4}])
    assert plot_mod.main([str(tmp_path / "s"), "--out", str(tmp_path / "o")]) == 2
    assert "no 'val' rows with 'accuracy'" in capsys.readouterr().err


def test_tune_keeps_per_algorithm_the_learning_rate_best_on_val_and_stable(tmp_path):
    """Per algorithm: lr 0.1 is best on val for "a" (test numbers then come from 0.1), and
    lr 0.5 would be best for "b" but diverged on one seed, so 0.2 is picked."""
    root = tmp_path / "grid"
    grid = {("a", 0.1): (0.60, 0.30), ("a", 0.5): (0.50, 0.90),
            ("b", 0.2): (0.40, 0.20), ("b", 0.5): (0.70, 0.10)}  # (val acc, test acc)
    for (algo, lr), (val, test) in grid.items():
        for seed in (0, 1):
            cfg = {"seed": seed, "task": {"name": "movielens"},
                   "algo": {"name": algo, "client_optimizer": {"learning_rate": lr}}}
            make_run(root, f"{algo}-{lr}-{seed}", algo=algo, seed=seed, config=cfg,
                     final={"val": {"accuracy": val + seed / 100}, "test": {"accuracy": test + seed / 100}})
    make_run(root, "b-0.5-2", algo="b", seed=2, status="diverged", final={},
             config={"seed": 2, "task": {"name": "movielens"},
                     "algo": {"name": "b", "client_optimizer": {"learning_rate": 0.5}}})
    t = table_mod.Table(R.load_runs([str(root)]), tune="algo.client_optimizer.learning_rate")
    assert t.tuned == {("a", "movielens"): 0.1, ("b", "movielens"): 0.2}
    cells = _cells(t.markdown())
    assert cells["a"][0].startswith("**0.305 ± 0.007**") and cells["b"][0].startswith("0.205 ± 0.007")
    assert any("not stable on every seed: 0.5" in n for n in t.notes)


# --------------------------------------------------------------------------
# Differential privacy: the ε column and a metric against ε
# --------------------------------------------------------------------------
EPS = {0.0: float("inf"), 1.0: 5.0, 2.0: 2.0}  # noise multiplier -> ε of the run


@pytest.fixture
def dp_sweep(tmp_path):
    """Two algorithms x three noise multipliers x two seeds, and one run without DP."""
    root = tmp_path / "dp"
    for algo, base in (("a", 0.5), ("b", 0.4)):
        for z, eps in EPS.items():
            for seed in (0, 1):
                acc = base - 0.1 * z + seed / 100
                make_run(root, f"{algo}-{z}-{seed}", algo=algo, seed=seed,
                         final={"test": {"accuracy": acc, "epsilon": eps, "delta": 0.25}},
                         privacy={"noise_multiplier": z, "epsilon": eps, "delta": 0.25})
    make_run(root, "a-none", algo="a", seed=0, final={"test": {"accuracy": 0.6}})
    return root


def test_table_has_an_epsilon_column_and_a_row_per_noise_multiplier(dp_sweep, tmp_path):
    t = table_mod.Table(R.load_runs([str(dp_sweep)]))
    md = t.markdown()
    assert md.splitlines()[0] == "| algo | privacy.noise_multiplier | ε | movielens accuracy ↑ |"
    rows = [[c.strip() for c in l.strip("|").split("|")] for l in md.splitlines()[2:9]]
    assert rows[:5] == [["a", "0.0", "∞", "0.505 ± 0.007 (n=2)"], ["a", "1.0", "5.00", "0.405 ± 0.007 (n=2)"],
                        ["a", "2.0", "2.00", "0.305 ± 0.007 (n=2)"], ["a", "–", "–", "**0.600** (n=1)"],
                        ["b", "0.0", "∞", "0.405 ± 0.007 (n=2)"]]
    assert "ε at δ = 0.25" in md
    assert r"$\infty$" in t.latex() and r"\cmidrule(lr){4-4}" in t.latex()
    t.write(str(tmp_path / "out"))
    per_run = (tmp_path / "out" / "table.csv").read_text().splitlines()
    assert per_run[0].endswith(",metric,value,epsilon") and len(per_run) == 1 + 13
    # a run without DP alone: no ε column
    plain = table_mod.Table(R.load_runs([str(dp_sweep / "a-none")]))
    assert "ε" not in plain.markdown().splitlines()[0]


def test_plot_metric_against_epsilon(dp_sweep, tmp_path, capsys):
    out = tmp_path / "plots"
    assert plot_mod.main([str(dp_sweep), "--out", str(out), "--x", "privacy.epsilon"]) == 0
    img = _image(out / "vs_movielens_test_accuracy_privacy.epsilon.png")
    assert img.shape[:2] == (600, 960) and img[..., :3].var() > 0.005
    assert sorted(p.name for p in out.iterdir()) == ["vs_movielens_test_accuracy_privacy.epsilon.pdf",
                                                     "vs_movielens_test_accuracy_privacy.epsilon.png"]
    assert plot_mod.main([str(dp_sweep), "--out", str(out), "--x", "privacy.nope"]) == 2
    assert "--x privacy.nope: no completed run has a number for it" in capsys.readouterr().err


def test_both_epsilons_and_the_accountant_that_picks_the_shown_one(tmp_path, capsys):
    """Runs that log both ε show the one their dp.accountant names (poisson by default);
    --accountant overrides; best-val reads that ε from the val row; runs logged before both
    were (only `epsilon`) show it as the replace-one one."""
    root = tmp_path / "both"
    for name, acc in (("p", "poisson"), ("r", "replace_one")):
        make_run(root, name, algo=name, seed=0, final={"test": {"accuracy": 0.5}, "val": {"accuracy": 0.4}},
                 rows=[{"round": r, "split": "val", "accuracy": a, "epsilon_poisson": r / 10,
                        "epsilon_replace_one": r, "delta": 0.25} for r, a in ((1, 0.45), (2, 0.4))],
                 privacy={"noise_multiplier": 1.0, "epsilon_poisson": 0.2, "epsilon_replace_one": 2.0,
                          "delta": 0.25, "accountant": acc})
    runs = {r.summary["algo"]: r for r in R.load_runs([str(root)])}
    assert (R.epsilon(runs["p"]), R.epsilon(runs["r"])) == (0.2, 2.0)
    assert R.epsilon(runs["p"], "best-val", "accuracy") == 0.1  # its round-1 val row
    assert R.epsilon(runs["r"], choice="poisson") == 0.2 and R.accountant(runs["r"], "poisson") == "poisson"
    md = table_mod.Table(list(runs.values())).markdown()
    assert [l.split("|")[2].strip() for l in md.splitlines()[2:4]] == ["0.20", "2.00"]
    assert "Poisson-sampled RDP" in md and "replace-one (conservative)" in md
    only = table_mod.Table(list(runs.values()), accountant="replace_one").markdown()
    assert [l.split("|")[2].strip() for l in only.splitlines()[2:4]] == ["2.00", "2.00"]
    assert "Poisson" not in only
    assert plot_mod.main([str(root), "--out", str(tmp_path / "plot"), "--x", "privacy.epsilon"]) == 0
    # through wandb: RunLog mirrors the numeric privacy values; dp.accountant is in the config
    w = FakeWandbRun(root / "r")
    w.summary.update({"privacy/epsilon_poisson": 0.2, "privacy/epsilon_replace_one": 2.0})
    w.config["dp"] = {"accountant": "replace_one"}
    (wr,) = R.from_wandb("me/p", api=FakeWandbApi([w]))
    assert (R.accountant(wr), R.epsilon(wr), R.epsilon(wr, "best-val", "accuracy")) == ("replace_one", 2.0, 1.0)
    old = R.load_runs([str(make_run(tmp_path, "old", algo="o", seed=0, final={"test": {"accuracy": 0.5}},
                                    privacy={"noise_multiplier": 1.0, "epsilon": 7.5, "delta": 0.25}))])[0]
    assert (R.accountant(old), R.epsilon(old), R.epsilon(old, choice="poisson")) == ("replace_one", 7.5, 7.5)
    assert table_mod.main([str(root), "--out", str(tmp_path / "t"), "--accountant", "pld"]) == 2
    assert "--accountant 'pld': use poisson or replace_one" in capsys.readouterr().err


def test_config_values_that_point_at_other_keys_are_resolved(tmp_path):
    from analysis.runs import _read_yaml

    p = tmp_path / "config.yaml"
    p.write_text("algo: {client_weighting: '${dp.client_weighting}'}\ndp: {client_weighting: uniform}\n"
                 "data_dir: '${oc.env:FEDRECON_BENCH_TEST_UNSET_VAR}'\n")
    assert _read_yaml(str(p))["algo"]["client_weighting"] == "${dp.client_weighting}"  # unresolvable env: raw
    p.write_text("algo: {client_weighting: '${dp.client_weighting}'}\ndp: {client_weighting: uniform}\n")
    assert _read_yaml(str(p))["algo"]["client_weighting"] == "uniform"


def test_tasks_side_by_side_show_each_tasks_own_metric_and_no_empty_column(tmp_path):
    """Columns by task: a (task, metric) pair that no run has is not a column, and col_metrics
    keeps one headline metric per task (EMNIST accuracy beside NWP accuracy_no_oov), in the
    Markdown and in the LaTeX (whose column groups then differ in width)."""
    root = tmp_path / "s"
    for algo, em, nwp in (("a", 0.60, 0.09), ("b", 0.65, 0.08)):
        make_run(root, f"{algo}-e", algo=algo, seed=0, task="emnist", final={"test": {"accuracy": em}})
        make_run(root, f"{algo}-n", algo=algo, seed=0, task="nwp",
                 final={"test": {"accuracy": nwp - 0.02, "accuracy_no_oov": nwp}})
    runs = R.load_runs([str(root)])
    t = table_mod.Table(runs, ["accuracy", "accuracy_no_oov"], "test", rows=["algo"], cols=["task"])
    assert [f"{c[0]} {m}" for c, m in t.columns()] == ["emnist accuracy", "nwp accuracy", "nwp accuracy_no_oov"]
    t = table_mod.Table(runs, ["accuracy", "accuracy_no_oov"], "test", rows=["algo"], cols=["task"],
                        col_metrics={"emnist": ["accuracy"], "nwp": ["accuracy_no_oov"]})
    md = t.markdown()
    assert md.splitlines()[0] == "| algo | emnist accuracy ↑ | nwp accuracy_no_oov ↑ |"
    assert _cells(md) == {"a": ["0.600 (n=1)", "**0.090** (n=1)"], "b": ["**0.650** (n=1)", "0.080 (n=1)"]}
    tex = t.latex()
    assert r"\multicolumn{1}{c}{emnist} & \multicolumn{1}{c}{nwp}" in tex and r"\cmidrule(lr){3-3}" in tex
