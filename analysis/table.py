"""Paper-style results table from run or sweep dirs.

    python -m analysis.table <run or sweep dirs...> [--metrics rating_accuracy,rmse]
        [--split test] [--select final|best-val] [--val-metric M] [--rows algo,split/train]
        [--cols task] [--out DIR] [--decimals 3] [--tune KEY] [--accountant poisson|replace_one]
        [--doc docs/results.md --doc-name NAME]
    python -m analysis.table --wandb ENTITY/PROJECT [...]

Rows: algorithm (plus the DP noise multiplier, `eval_mode` and `split_by` where they differ;
`--rows` to choose, any summary key (dotted: privacy.noise_multiplier), dotted config key or
config group such as `split/train`). Columns: task x metric. Cells: mean ± sample std (ddof=1)
over seeds, with the number of runs n; the best mean per column in bold (lower is better for
loss/rmse/error, higher otherwise). Runs with differential privacy add an ε column (their
ε at δ after the rounds the row's values come from; ∞ without noise, – without DP): the
one each run's dp.accountant names (poisson by default; --accountant to override), and the
caption says which.
Only completed runs count; the others are listed under the table.
--tune KEY (e.g. algo.client_optimizer.learning_rate, a swept hyperparameter): for each
row (all eval modes of a training config together), keep only the runs with the KEY value
whose mean final val metric (the headline mode's --val-metric) over seeds is best, and
say which value was picked; values with a diverged or failed run are not candidates.
Test numbers are then those of the val-tuned setting.
Writes <out>/table.md, table.tex (booktabs) and table.csv (one line per run and metric),
and prints the Markdown. <out> defaults to the single dir given, else outputs/analysis.
"""
from __future__ import annotations

import argparse
import csv
import itertools
import os
import statistics
import sys
from collections import defaultdict

from analysis import runs as R
from analysis.docblock import add_doc_args, write_doc
from fedrecon_bench.errors import UserError


# How the caption names each ε (docs/privacy.md).
EPSILON_NAMES = {"poisson": "Poisson-sampled RDP, add/remove, q = clients_per_round / N",
                 "replace_one": "RDP without replacement, replace-one (conservative)"}


def _sort_key(v):
    return (0, v) if isinstance(v, (int, float)) else (1, str(v))


class Table:
    def __init__(self, runs, metrics=None, split="test", select="final", val_metric=None,
                 rows=None, cols=None, decimals=3, tune=None, accountant=None, client_stats=None,
                 reference=None, col_metrics=None):
        """col_metrics: {column value (its first key's, e.g. a task): the metrics it shows}; the
        others show every metric."""
        if select not in ("final", "best-val"):
            raise UserError(f"--select {select!r}: use final or best-val")
        self.all_runs = runs
        self.runs = [r for r in runs if r.status == "completed"]
        self.excluded = [r for r in runs if r.status != "completed"]
        if not self.runs:
            raise UserError(f"no completed runs among {len(runs)} (statuses: "
                            f"{', '.join(sorted({r.status for r in runs}))}); nothing to tabulate")
        self.split, self.select, self.decimals = split, select, decimals
        R.check_accountant(accountant)
        self.accountant = accountant  # None: each run's dp.accountant
        avail = R.metric_names(self.runs, split)
        if not avail:
            raise UserError(f"no {split!r} metrics in the runs' summary.json final; "
                            f"use --split with one of: train, val, test")
        self.metrics = metrics or [m for m in avail if not R.is_client_stat(m)]
        for stat in client_stats or []:  # the per-client spread of each metric (records.py)
            self.metrics += [f"{m}_client_{stat}" for m in list(self.metrics) if not R.is_client_stat(m)
                             and f"{m}_client_{stat}" in avail]
        bad = [m for m in self.metrics if m not in avail]
        if bad:
            raise UserError(f"--metrics {bad[0]!r} is not in the runs' final {split} metrics; "
                            f"available: {', '.join(avail)}")
        self.val_metric = val_metric or R.default_val_metric(self.metrics)
        if select == "best-val" and self.val_metric not in R.metric_names(self.runs, "val"):
            raise UserError(f"--val-metric {self.val_metric!r} is not a val metric; available: "
                            f"{', '.join(R.metric_names(self.runs, 'val'))}")
        self.row_keys = rows or R.default_row_keys(self.runs)
        self.constants = {k: v for k, v in R.constant_keys(self.runs).items()
                          if k not in self.row_keys}
        self.col_keys = cols or ["task"]
        self.col_metrics = col_metrics or {}
        self.notes: list[str] = []
        self.tuned: dict = {}
        if tune:
            self._tune(tune)
        self.fractions = {}
        if reference:  # per-user fractions of the headline metric against a reference algorithm
            from analysis import per_client

            head = next(m for m in self.metrics if not R.is_client_stat(m))
            match = [k for k in self.row_keys + self.col_keys if k not in ("algo", "eval_mode", "task")]
            self.fractions = per_client.reference_fractions(self.runs, reference, head, split, match=match)
            ref = reference.replace(":", " ")
            self.metrics += [f"helped vs {ref}", f"hurt vs {ref}"]
            self.notes.append(f"helped / hurt vs {ref}: the fraction of users whose per-user {split} {head} "
                              f"is better / worse than with {ref} (same seed and users)")
        self._build()

    def _tune(self, key: str):
        """Keeps, per row (eval modes aside), the runs of the `key` value best on val."""
        by_row = defaultdict(lambda: defaultdict(list))
        row_of = lambda r: tuple(R.value(r, k) for k in self.row_keys + self.col_keys if k != "eval_mode")
        # A value some of whose runs diverged or failed is not a usable setting.
        unstable = {(row_of(r), R.value(r, key)) for r in self.excluded}
        for run in self.runs:
            if (row_of(run), R.value(run, key)) in unstable:
                continue
            val = R.entries(run, "val")  # the headline mode's final val record first
            v = R.select(run, "val", self.val_metric, "final", None, val[0][0]) if val else None
            if v is not None:
                by_row[row_of(run)][R.value(run, key)].append(v)
        if not by_row:
            raise UserError(f"--tune {key}: no final val {self.val_metric} in the runs")
        sign = 1 if R.lower_is_better(self.val_metric) else -1
        for row, cands in by_row.items():
            best = min(cands, key=lambda c: sign * statistics.fmean(cands[c]))
            self.tuned[row] = best
            tried = ", ".join(f"{c}: {statistics.fmean(v):.4f}" for c, v in
                              sorted(cands.items(), key=lambda t: _sort_key(t[0])))
            dropped = sorted({v for r, v in unstable if r == row}, key=_sort_key)
            self.notes.append(f"{' / '.join(map(str, row))}: {key}={best} picked by mean val "
                              f"{self.val_metric} ({tried})"
                              + (f"; not stable on every seed: {', '.join(map(str, dropped))}" if dropped else ""))
        self.runs = [r for r in self.runs if self.tuned.get(row_of(r), object()) == R.value(r, key)]

    # ------------------------------------------------------------------
    def _build(self):
        cells = defaultdict(list)  # (row, col, metric) -> [(seed, value, run)]
        self.eps = defaultdict(list)  # row -> each run's ε (DP runs)
        self.per_run = []
        for run in self.runs:
            # one entry per evaluation mode the run reports (one entry, mode None, usually)
            modes = [mode for mode, _ in R.entries(run, self.split)]
            if "eval_mode" not in self.row_keys and len(modes) > 1:
                modes = [mode for mode, _ in R.entries(run, self.split)[:1]]  # headline only
            for mode in modes:
                row = tuple(R.value(run, k, mode) for k in self.row_keys)
                col = tuple(R.value(run, k, mode) for k in self.col_keys)
                eps = R.epsilon(run, self.select, self.val_metric, mode, self.accountant)
                if eps is not None:
                    self.eps[row].append(eps)
                for m in self.metrics:
                    v = (self.fractions.get((run.path, mode), {}).get(m.split(" ")[0])
                         if m.startswith(("helped vs ", "hurt vs ")) else
                         R.select(run, self.split, m, self.select, self.val_metric, mode))
                    if v is None:
                        if self.select == "best-val":
                            self.notes.append(
                                f"{run.path}{f' ({mode})' if mode else ''}: no {self.split} {m} "
                                f"at its best-val round {R.best_val_round(run, self.val_metric, mode)}"
                                "; not counted")
                        continue
                    cells[(row, col, m)].append((run.key("seed"), v, run))
                    self.per_run.append({"path": run.path, **dict(zip(self.row_keys, row)),
                                         **dict(zip(self.col_keys, col)), "seed": run.key("seed"),
                                         "split": self.split, "select": self.select, "metric": m,
                                         "value": v, **({"accountant": R.accountant(run, self.accountant),
                                                         "epsilon": eps} if eps is not None else {})})
        for (row, col, m), vals in cells.items():
            seeds = [s for s, _, _ in vals]
            dup = {s for s in seeds if seeds.count(s) > 1}
            if dup:
                self.notes.append(f"{' / '.join(map(str, row))}, {' / '.join(map(str, col))}, {m}: "
                                  f"seed(s) {sorted(dup, key=_sort_key)} appear more than once "
                                  "(several sweeps given?); each run counts")
        self.row_vals = sorted({k[0] for k in cells}, key=lambda t: tuple(map(_sort_key, t)))
        self.col_vals = sorted({k[1] for k in cells}, key=lambda t: tuple(map(_sort_key, t)))
        self.stats = {}
        for key, vals in cells.items():
            xs = [v for _, v, _ in vals]
            self.stats[key] = (statistics.fmean(xs),
                               statistics.stdev(xs) if len(xs) > 1 else None, len(xs))
        # best per column, compared as displayed (ties at the shown precision are all bold)
        self.best = {}
        for col in self.col_vals:
            for m in self.metrics:
                means = {row: round(self.stats[(row, col, m)][0], self.decimals)
                         for row in self.row_vals if (row, col, m) in self.stats}
                if means:
                    pick = min if R.lower_is_better(m) else max
                    self.best[(col, m)] = pick(means.values())
        for r in self.excluded:
            self.notes.append(f"{r.path}: status {r.status}"
                              + (f" ({r.summary.get('error')})" if r.summary.get("error") else "")
                              + "; not counted")

    def columns(self):
        """(column value, metric) pairs that some row has (self.best: a task without the metric has
        no column), and that col_metrics lets that column show."""
        return [(col, m) for col in self.col_vals for m in self.metrics
                if (col, m) in self.best and m in self.col_metrics.get(col[0], [m])]

    def _cells(self, row, fmt, missing: str) -> list[str]:
        """One formatted cell per column: fmt(mean, std, n, is_best), or `missing`."""
        out = []
        for col, m in self.columns():
            s = self.stats.get((row, col, m))
            out.append(missing if s is None else fmt(*s, self._is_best(row, col, m)))
        return out

    def _is_best(self, row, col, m) -> bool:
        s = self.stats.get((row, col, m))
        return s is not None and round(s[0], self.decimals) == self.best.get((col, m))

    def _fmt(self, x):
        return f"{x:.{self.decimals}f}"

    def _eps_cells(self, row, infinity: str, missing: str) -> list[str]:
        """The row's ε cell (none when no run has DP): one value, or the range of its runs'."""
        if not self.eps:
            return []
        vals = sorted(set(self.eps.get(row, [])))
        fmt = lambda x: infinity if x == float("inf") else f"{x:.2f}"
        return [missing if not vals else "–".join(dict.fromkeys(fmt(v) for v in (vals[0], vals[-1])))]

    @staticmethod
    def _arrow(m):
        return "↓" if R.lower_is_better(m) else "↑"

    # ------------------------------------------------------------------
    def caption(self) -> str:
        what = ("final values (summary.json)" if self.select == "final" else
                f"at the round with the best val {self.val_metric} (metrics.jsonl)")
        same = "".join(f"; {k} = {v} for all runs" for k, v in self.constants.items())
        dp_runs = [r for r in self.runs if R.epsilon(r) is not None]
        deltas = sorted({r.key("privacy.delta") for r in dp_runs})
        if deltas:  # docs/privacy.md: which of the two ε, at which δ
            shown = sorted({R.accountant(r, self.accountant) for r in dp_runs})
            same += (f"; ε at δ = {' / '.join(f'{d:.3g}' for d in deltas)}: "
                     + " / ".join(EPSILON_NAMES[a] for a in shown) + " (dp.accountant)")
        return (f"{self.split} metrics, {what}; mean ± sample std over seeds (n runs); "
                f"best per column in bold{same}")

    def markdown(self) -> str:
        eps = ["ε"] if self.eps else []
        head = [*self.row_keys, *eps] + [f"{' / '.join(map(str, c))} {m} {self._arrow(m)}"
                                         for c, m in self.columns()]
        lines = ["| " + " | ".join(head) + " |",
                 "|" + "|".join([":--"] * len(self.row_keys) + ["--:"] * (len(eps) + len(self.columns())))
                 + "|"]
        def cell(mean, std, n, best):
            txt = self._fmt(mean) + ("" if std is None else f" ± {self._fmt(std)}")
            return f"{f'**{txt}**' if best else txt} (n={n})"

        for row in self.row_vals:
            cells = (["–" if v is None else str(v) for v in row] + self._eps_cells(row, "∞", "–")
                     + self._cells(row, cell, "–"))
            lines.append("| " + " | ".join(cells) + " |")
        out = "\n".join(lines) + f"\n\n{self.caption()}.\n"
        if self.notes:
            out += "\n" + "\n".join(f"- {n}" for n in self.notes) + "\n"
        return out

    def latex(self) -> str:
        esc = lambda s: (str(s).replace("\\", r"\textbackslash{}").replace("_", r"\_")
                         .replace("&", r"\&").replace("%", r"\%").replace("#", r"\#"))
        nr = len(self.row_keys) + bool(self.eps)  # the leading columns
        shown = [c for c, _ in self.columns()]
        widths = [(c, shown.count(c)) for c in self.col_vals if c in shown]
        lines = [r"% requires \usepackage{booktabs}",
                 r"\begin{tabular}{" + "l" * nr + "c" * len(shown) + "}", r"\toprule"]
        groups = " & ".join([""] * nr + [rf"\multicolumn{{{w}}}{{c}}{{{esc(' / '.join(map(str, c)))}}}"
                                          for c, w in widths])
        lines.append(groups + r" \\")
        ends = list(itertools.accumulate(w for _, w in widths))
        lines.append(" ".join(rf"\cmidrule(lr){{{nr + 1 + a}-{nr + b}}}" for a, b in zip([0, *ends[:-1]], ends)))
        arrow = lambda m: r"$\downarrow$" if R.lower_is_better(m) else r"$\uparrow$"
        lines.append(" & ".join([esc(k) for k in self.row_keys] + ([r"$\varepsilon$"] if self.eps else []) +
                                [f"{esc(m)} {arrow(m)}" for _, m in self.columns()]) + r" \\")
        lines.append(r"\midrule")
        def cell(mean, std, n, best):
            body = self._fmt(mean) + ("" if std is None else rf" \pm {self._fmt(std)}")
            body = rf"\mathbf{{{body}}}" if best else body
            return f"${body}$ {{\\scriptsize $n{{=}}{n}$}}"

        for row in self.row_vals:
            cells = (["--" if v is None else esc(v) for v in row] + self._eps_cells(row, r"$\infty$", "--")
                     + self._cells(row, cell, "--"))
            lines.append(" & ".join(cells) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}", f"% {self.caption()}"]
        return "\n".join(lines) + "\n"

    def write(self, out_dir: str, name: str = "table") -> list[str]:
        os.makedirs(out_dir, exist_ok=True)
        paths = [os.path.join(out_dir, f"{name}.{ext}") for ext in ("md", "tex", "csv")]
        with open(paths[0], "w") as f:
            f.write(self.markdown())
        with open(paths[1], "w") as f:
            f.write(self.latex())
        with open(paths[2], "w", newline="") as f:
            fields = ["path", *self.row_keys, *self.col_keys, "seed", "split", "select",
                      *(["accountant"] if self.eps else []), "metric", "value", *(["epsilon"] if self.eps else [])]
            w = csv.DictWriter(f, fieldnames=list(dict.fromkeys(fields)))
            w.writeheader()
            w.writerows(self.per_run)
        return paths


def default_out(dirs: list[str]) -> str:
    return dirs[0] if len(dirs) == 1 else os.path.join("outputs", "analysis")


def add_common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("dirs", nargs="*", help="run dirs or sweep dirs")
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs through the wandb API")
    p.add_argument("--rows", help="row keys, comma-separated (default: algo [+ eval mode])")
    p.add_argument("--out", help="output dir (default: the single dir given, else outputs/analysis)")
    p.add_argument("--accountant", help="DP runs: the ε to show, poisson or replace_one (default: each "
                                        "run's dp.accountant; runs logged before both: replace_one)")


def load(args, api=None) -> list:
    if args.wandb:
        if args.dirs:
            raise UserError("give either run/sweep dirs or --wandb ENTITY/PROJECT, not both")
        return R.from_wandb(args.wandb, api=api)
    if not args.dirs:
        raise UserError("no runs given; pass run or sweep dirs (the paths printed as "
                        "run_dir: / sweep_dir:) or --wandb ENTITY/PROJECT")
    return R.load_runs(args.dirs)


def main(argv=None, api=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.table", description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--metrics", help="metrics, comma-separated (default: all in summary final)")
    p.add_argument("--split", default="test", help="train, val or test (default: test)")
    p.add_argument("--select", default="final", help="final (default) or best-val")
    p.add_argument("--val-metric", help="the val metric best-val picks the round by "
                                        "(default: the first accuracy-like metric)")
    p.add_argument("--cols", help="column keys besides the metric (default: task)")
    p.add_argument("--decimals", type=int, default=3)
    p.add_argument("--tune", help="a swept config key; per row keep its value best on val")
    p.add_argument("--name", default="table", help="output file stem (default: table)")
    p.add_argument("--client-stats", help="per-client statistics to add per metric, e.g. p10,p50,p90 "
                                          "(records of eval_per_client runs: mean, std, p10..p90, min)")
    p.add_argument("--reference", help="ALGO or ALGO:MODE: add the fraction of users each row helps / "
                                       "hurts against that algorithm's run with the same seed")
    add_doc_args(p)
    args = p.parse_args(argv)
    try:
        runs = load(args, api)
        t = Table(runs, R.parse_list(args.metrics), args.split, args.select, args.val_metric,
                  R.parse_list(args.rows), R.parse_list(args.cols), args.decimals, args.tune,
                  args.accountant, R.parse_list(args.client_stats), args.reference)
        paths = t.write(args.out or (default_out(args.dirs) if args.dirs else "outputs/analysis"),
                        args.name)
        paths += [write_doc(args, t.markdown(), runs, "python -m analysis.table",
                            sys.argv[1:] if argv is None else argv)] if args.doc else []
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(t.markdown())
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
