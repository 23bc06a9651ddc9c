"""Comparison plots from run or sweep dirs (seaborn), PNG and PDF.

    python -m analysis.plot <run or sweep dirs...> [--metric rating_accuracy] [--split val]
        [--final-split test] [--rows algo] [--x KEY] [--out DIR] [--dpi 150]

Per task, two figures:
  curve_<task>_<split>_<metric>: the metric vs round (metrics.jsonl), one line per
      algorithm (row key), the mean over seeds with a 95% bootstrap confidence band;
  final_<task>_<final-split>_<metric>: the final value (summary.json) per algorithm,
      a bar at the mean with its 95% interval and one dot per seed.
With --x KEY (a summary key, dotted for nested ones such as privacy.noise_multiplier, or a
config key; privacy.epsilon is the ε each run's dp.accountant names, or --accountant's),
one figure per task instead:
  vs_<task>_<final-split>_<metric>_<KEY>: the final value against KEY, one line per
      algorithm, the mean over seeds with a 95% confidence band; runs whose KEY is
      infinite (ε without noise) are a dashed line at their mean; a log x axis when
      KEY spans more than a factor of 20.
Only completed runs are drawn. <out> defaults to the single dir given, else outputs/analysis.
"""
from __future__ import annotations

import argparse
import os
import sys

import matplotlib

matplotlib.use("Agg")  # files only; no display on servers and in tests

from analysis import runs as R  # noqa: E402
from analysis.table import EPSILON_NAMES, add_common_args, default_out, load  # noqa: E402
from fedrecon_bench.errors import UserError  # noqa: E402

FIGSIZE = (6.4, 4.0)  # inches; at the default 150 dpi: 960 x 600 px


def _frames(runs, rows, split, metric, final_split):
    import pandas as pd

    curve, final = [], []
    for run in runs:
        task = str(run.key("task"))
        modes = [mode for mode, _ in R.entries(run, final_split)] or [None]
        if "eval_mode" not in rows:
            modes = modes[:1]  # the headline mode only
        for mode in modes:
            lab = R.label(run, rows, mode)
            for row in run.rows():
                v = row.get(metric)
                if row.get("split") == split and row.get("eval_mode") == mode \
                        and isinstance(v, (int, float)):
                    curve.append({"task": task, "label": lab, "seed": run.key("seed"),
                                  "round": int(row["round"]), metric: float(v), "run": run.path})
            v = R.select(run, final_split, metric, "final", None, mode)
            if v is not None:
                final.append({"task": task, "label": lab, "seed": run.key("seed"), metric: v,
                              "run": run.path})
    return pd.DataFrame(curve), pd.DataFrame(final)


def _direction(metric):
    return "lower is better" if R.lower_is_better(metric) else "higher is better"


def _save(fig, out_dir, stem):
    paths = []
    for ext in ("png", "pdf"):
        path = os.path.join(out_dir, f"{stem}.{ext}")
        fig.savefig(path)
        paths.append(path)
    return paths


def plot(runs, out_dir, metric=None, split="val", final_split="test", rows=None, dpi=150):
    import matplotlib.pyplot as plt
    import seaborn as sns
    from matplotlib.ticker import MaxNLocator

    done = [r for r in runs if r.status == "completed"]
    skipped = [r for r in runs if r.status != "completed"]
    if not done:
        raise UserError(f"no completed runs among {len(runs)}; nothing to plot")
    avail = R.metric_names(done, final_split)
    if not avail:
        raise UserError(f"no {final_split!r} metrics in the runs' summary.json final; "
                        "use --final-split with one of: train, val, test")
    metric = metric or R.default_val_metric(avail)
    if metric not in avail:
        raise UserError(f"--metric {metric!r} is not in the runs' metrics; available: "
                        f"{', '.join(avail)}")
    rows = rows or R.default_row_keys(done)
    same = ", ".join(f"{k}={v}" for k, v in R.constant_keys(done).items() if k not in rows)
    same = f" ({same})" if same else ""
    curve, final = _frames(done, rows, split, metric, final_split)
    if curve.empty:
        raise UserError(f"no {split!r} rows with {metric!r} in the runs' metrics.jsonl; "
                        "use --split train (val rows come every eval_every rounds)")
    os.makedirs(out_dir, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook")
    hue_order = sorted(final["label"].unique()) if not final.empty else None
    written = []
    for task in sorted(curve["task"].unique()):
        c = curve[curve.task == task]
        n = c.groupby("label")["seed"].nunique()
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=dpi, layout="constrained")
        sns.lineplot(data=c, x="round", y=metric, hue="label", hue_order=hue_order, marker="o",
                     errorbar=("ci", 95), seed=0, ax=ax)
        ax.set_title(f"{task}{same}: {split} {metric} by round\nmean over seeds, 95% CI band "
                     f"(n = {', '.join(f'{k}: {v}' for k, v in n.items())})", fontsize=11)
        ax.set_xlabel("round")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(f"{split} {metric} ({_direction(metric)})")
        ax.legend(title=" / ".join(rows), fontsize=9, title_fontsize=9)
        written += _save(fig, out_dir, f"curve_{task}_{split}_{metric}")
        plt.close(fig)

        f = final[final.task == task]
        if f.empty:
            continue
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=dpi, layout="constrained")
        order = sorted(f["label"].unique())
        sns.barplot(data=f, x="label", y=metric, order=order, hue="label", hue_order=order,
                    errorbar=("ci", 95), seed=0, alpha=0.6, legend=False, ax=ax)
        sns.stripplot(data=f, x="label", y=metric, order=order, color="black", size=6,
                      jitter=0.15, ax=ax)
        ax.set_title(f"{task}{same}: final {final_split} {metric}\nbar = mean, line = 95% CI, "
                     f"dots = seeds", fontsize=11)
        ax.set_xlabel(" / ".join(rows))
        ax.set_ylabel(f"{final_split} {metric} ({_direction(metric)})")
        written += _save(fig, out_dir, f"final_{task}_{final_split}_{metric}")
        plt.close(fig)
    for r in skipped:
        print(f"note: {r.path}: status {r.status}; not drawn", file=sys.stderr)
    return written


EPSILON = "privacy.epsilon"  # --x: the ε each run's dp.accountant (or --accountant) names


def plot_against(runs, out_dir, x, metric=None, final_split="test", rows=None, dpi=150, accountant=None):
    """Final `metric` against the summary/config key `x` (see the module doc)."""
    import math

    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    R.check_accountant(accountant)

    done = [r for r in runs if r.status == "completed"]
    avail = R.metric_names(done, final_split)
    metric = metric or (R.default_val_metric(avail) if avail else None)
    rows = rows or [k for k in R.default_row_keys(done) if k != R.NOISE]  # x follows the noise
    data = []
    for run in done:
        xv = R.epsilon(run, choice=accountant) if x == EPSILON else run.key(x)
        modes = [mode for mode, _ in R.entries(run, final_split)] or [None]
        for mode in (modes if "eval_mode" in rows else modes[:1]):
            v = R.select(run, final_split, metric, "final", None, mode) if metric else None
            if isinstance(xv, (int, float)) and not isinstance(xv, bool) and v is not None:
                data.append({"task": str(run.key("task")), "label": R.label(run, rows, mode),
                             "x": float(xv), metric: v})
    if not data:
        raise UserError(f"--x {x}: no completed run has a number for it and a final {final_split} "
                        f"{metric}; e.g. --x privacy.epsilon (runs with dp=...) or a config key")
    df = pd.DataFrame(data)
    os.makedirs(out_dir, exist_ok=True)
    sns.set_theme(style="whitegrid", context="notebook")
    order = sorted(df["label"].unique())
    colors = dict(zip(order, sns.color_palette(n_colors=len(order))))
    written = []
    for task in sorted(df["task"].unique()):
        d = df[df.task == task]
        finite, infinite = d[d.x.map(math.isfinite)], d[~d.x.map(math.isfinite)]
        fig, ax = plt.subplots(figsize=FIGSIZE, dpi=dpi, layout="constrained")
        if not finite.empty:
            sns.lineplot(data=finite, x="x", y=metric, hue="label", hue_order=order, palette=colors,
                         marker="o", errorbar=("ci", 95), seed=0, ax=ax)
            lo, hi = finite.x.min(), finite.x.max()
            if lo > 0 and hi / lo > 20:
                ax.set_xscale("log")
        for lab, g in infinite.groupby("label"):
            ax.axhline(g[metric].mean(), ls="--", color=colors[lab], label=f"{lab} ({x} = ∞)")
        ax.set_title(f"{task}: final {final_split} {metric} vs {x}\nmean over seeds, 95% CI band; "
                     f"dashed: {x} = ∞", fontsize=11)
        ax.set_xlabel(x if x != EPSILON else "ε, " + " / ".join(
            EPSILON_NAMES[a] for a in sorted({R.accountant(r, accountant) for r in done
                                              if R.epsilon(r) is not None})))
        ax.set_ylabel(f"{final_split} {metric} ({_direction(metric)})")
        ax.legend(title=" / ".join(rows), fontsize=9, title_fontsize=9)
        written += _save(fig, out_dir, f"vs_{task}_{final_split}_{metric}_{x}")
        plt.close(fig)
    return written


def main(argv=None, api=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.plot", description=__doc__.split("\n")[0])
    add_common_args(p)
    p.add_argument("--metric", help="metric to draw (default: the first accuracy-like one)")
    p.add_argument("--split", default="val", help="split of the curves (default: val)")
    p.add_argument("--final-split", default="test", help="split of the final plot (default: test)")
    p.add_argument("--dpi", type=int, default=150)
    p.add_argument("--x", help="draw the final metric against this summary or config key "
                               "(e.g. privacy.epsilon) instead of the two default figures")
    args = p.parse_args(argv)
    try:
        runs = load(args, api)
        out = args.out or (default_out(args.dirs) if args.dirs else "outputs/analysis")
        if args.x:
            paths = plot_against(runs, out, args.x, args.metric, args.final_split,
                                 R.parse_list(args.rows), args.dpi, args.accountant)
        else:
            paths = plot(runs, out, args.metric, args.split, args.final_split,
                         R.parse_list(args.rows), args.dpi)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
