"""Per-client comparisons and plots from the runs' per-client records (run_dir/per_client/*.parquet).

    python -m analysis.per_client compare <reference run>[:mode] <method run>[:mode]
        [--metric rating_accuracy] [--split test] [--tol 0] [--bootstrap 2000] [--level 0.95]
    python -m analysis.per_client plot <run or sweep dirs...> [--metric M] [--split test]
        [--rows algo] [--scatter REF,METHOD] [--out DIR]

Two runs with the same `split_seed` (and task settings) evaluate the same users, so their
per-user values are paired. `compare` reports, over the users measured in both:

  helped / hurt / unchanged   the fraction of users whose metric is better / worse / within
                              --tol (default 0: only exact ties are unchanged) with the
                              method than with the reference ("better" follows the metric:
                              lower for loss and rmse, higher otherwise)
  mean difference             method - reference, with a paired bootstrap interval (users
                              resampled with replacement, --bootstrap draws, seed 0)
  Wilcoxon signed-rank        scipy.stats.wilcoxon of the differences (zero differences
                              dropped, two-sided)

`:mode` picks an evaluation mode (e.g. `run:global` against `run:finetune` compares one
FedAvg run's global model with its fine-tuned copies: Motley's fraction_clients_hurt is
`hurt`); without it, the headline mode. `plot` draws the per-user distribution (an ECDF,
one curve per row key, every seed's users pooled) and, with --scatter, one row's per-user
values against another's (seeds paired), with the diagonal.
"""
from __future__ import annotations

import argparse
import glob
import math
import os
import sys

import numpy as np

from analysis import runs as R
from fedrecon_bench.errors import UserError


def records(run, split: str = "test", round_: int | None = None):
    """The run's per-client records (a pandas DataFrame) of one evaluation: the latest of
    `split` unless round_ is given."""
    import pandas as pd

    files = sorted(glob.glob(os.path.join(run.path, "per_client", f"{split}_round*.parquet")))
    if round_ is not None:
        files = [f for f in files if f.endswith(f"_round{round_:06d}.parquet")]
    if not files:
        raise UserError(f"{run.path}: no per-client records of {split!r} (per_client/{split}_round*.parquet); "
                        "rerun with eval_per_client=true")
    return pd.read_parquet(files[-1])


def values(df, metric: str, mode: str | None = None):
    """{client_id: value} of one mode (None: the headline) over clients measured at all."""
    rows = df[df["headline"]] if mode is None else df[df["eval_mode"] == mode]
    if rows.empty:
        raise UserError(f"no per-client records of mode {mode!r}; the run has "
                        f"{', '.join(repr(m) for m in sorted(set(df['eval_mode'])))}")
    if metric not in rows:
        raise UserError(f"no per-client {metric!r}; the records have "
                        f"{', '.join(c for c in rows.columns if c not in _FIXED and not c.startswith('tally_'))}")
    rows = rows[rows["num_examples"] > 0]
    return dict(zip(rows["client_id"], rows[metric].astype(float)))


_FIXED = ("round", "split", "eval_mode", "headline", "client_id", "num_examples")


def paired(reference: dict, method: dict, metric: str):
    """(client ids, reference values, method values) over the clients both measured."""
    ids = sorted(set(reference) & set(method))
    if not ids:
        raise UserError("the two runs share no measured client; compare runs with the same split_seed")
    return ids, np.array([reference[c] for c in ids]), np.array([method[c] for c in ids])


def fractions(ref, new, metric: str, tol: float = 0.0) -> dict:
    """Fractions of users the method helps, hurts and leaves within tol of the reference."""
    better = (ref - new) if R.lower_is_better(metric) else (new - ref)
    n = len(better)
    return {"helped": float(np.sum(better > tol) / n), "hurt": float(np.sum(better < -tol) / n),
            "unchanged": float(np.sum(np.abs(better) <= tol) / n)}


def bootstrap_ci(diff, reps: int = 2000, level: float = 0.95, seed: int = 0) -> tuple[float, float]:
    """Percentile interval of the mean difference over users resampled with replacement."""
    diff = np.asarray(diff, np.float64)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(reps, len(diff)))].mean(axis=1)
    a = (1 - level) / 2
    return float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def wilcoxon(diff) -> tuple[float, float]:
    """(statistic, two-sided p) of the Wilcoxon signed-rank test; (nan, 1.0) when every
    difference is zero."""
    from scipy import stats

    diff = np.asarray(diff, np.float64)
    diff = diff[diff != 0]  # Wilcoxon's own treatment of ties at zero, dropped before scipy, whose
    if not diff.size:        # exact p-value needs no zeros
        return math.nan, 1.0
    res = stats.wilcoxon(diff, alternative="two-sided")
    return float(res.statistic), float(res.pvalue)


def compare(reference: dict, method: dict, metric: str, tol: float = 0.0, reps: int = 2000,
            level: float = 0.95) -> dict:
    """Everything `compare` reports, for two {client: value} maps."""
    _, ref, new = paired(reference, method, metric)
    diff = new - ref
    stat, p = wilcoxon(diff)
    lo, hi = bootstrap_ci(diff, reps, level)
    return {"clients": len(diff), **fractions(ref, new, metric, tol), "mean_diff": float(diff.mean()),
            "ci_low": lo, "ci_high": hi, "level": level, "wilcoxon_stat": stat, "wilcoxon_p": p, "tol": tol}


def _run_and_mode(arg: str):
    path, _, mode = (arg, "", "") if os.path.isdir(arg) else arg.rpartition(":")
    runs = R.load_runs([path])
    if len(runs) != 1:
        raise UserError(f"{path}: give one run dir (it holds {len(runs)} runs)")
    return runs[0], (mode or None)


def report(res: dict, metric: str, names: tuple[str, str]) -> str:
    return (f"{names[1]} vs {names[0]} on {res['clients']} users ({metric}): helped {res['helped']:.1%}, "
            f"hurt {res['hurt']:.1%}, unchanged {res['unchanged']:.1%} (tol {res['tol']:g}); mean difference "
            f"{res['mean_diff']:+.4f} [{res['ci_low']:+.4f}, {res['ci_high']:+.4f}] ({res['level']:.0%} paired "
            f"bootstrap); Wilcoxon signed-rank W={res['wilcoxon_stat']:.1f}, p={res['wilcoxon_p']:.3g}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("compare", help="paired per-user comparison of two runs (or modes)")
    c.add_argument("reference")
    c.add_argument("method")
    p = sub.add_parser("plot", help="per-user distributions (ECDF) and a scatter")
    p.add_argument("dirs", nargs="+")
    p.add_argument("--rows", default="algo")
    p.add_argument("--scatter", help="REF,METHOD: two row labels to draw per user against each other")
    p.add_argument("--out")
    for q in (c, p):
        q.add_argument("--metric")
        q.add_argument("--split", default="test")
    c.add_argument("--tol", type=float, default=0.0)
    c.add_argument("--bootstrap", type=int, default=2000)
    c.add_argument("--level", type=float, default=0.95)
    a = ap.parse_args(argv)
    try:
        if a.cmd == "compare":
            (r0, m0), (r1, m1) = _run_and_mode(a.reference), _run_and_mode(a.method)
            df0, df1 = records(r0, a.split), records(r1, a.split)
            metric = a.metric or R.default_val_metric(R.metric_names([r0], a.split))
            res = compare(values(df0, metric, m0), values(df1, metric, m1), metric, a.tol, a.bootstrap, a.level)
            print(report(res, metric, (f"{a.reference}", f"{a.method}")))
        else:
            from analysis import per_client_plot

            for path in per_client_plot.plot(R.load_runs(a.dirs), a.out or "outputs/analysis", a.metric,
                                             a.split, R.parse_list(a.rows), a.scatter):
                print(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())


# --------------------------------------------------------------------------
# For analysis.table: the fraction of users a run helps against a reference run
# --------------------------------------------------------------------------
MATCH = ("seed", "task", "split_by", "split_seed")  # runs that evaluate the same users


def reference_fractions(runs, reference: str, metric: str, split: str = "test", tol: float = 0.0,
                        match=()) -> dict:
    """{(run path, eval mode): fractions(...)} against the `reference` run (ALGO or ALGO:MODE)
    with the same seed, task, split_by and split_seed (and `match` keys, e.g. the noise
    multiplier of a DP table's rows); runs without one are left out."""
    algo, _, ref_mode = reference.partition(":")
    key = lambda run: tuple(run.key(k) for k in (*MATCH, *match))
    refs = {key(r): r for r in runs if r.key("algo") == algo and r.status == "completed"}
    if not refs:
        raise UserError(f"--reference {reference!r}: no completed run of algo {algo!r} among the runs")
    out = {}
    for run in runs:
        ref = refs.get(key(run))
        if ref is None or run.status != "completed":
            continue
        base = values(records(ref, split), metric, ref_mode or None)
        for mode, _ in R.entries(run, split):
            try:
                _, a, b = paired(base, values(records(run, split), metric, mode), metric)
            except UserError:
                continue
            out[(run.path, mode)] = fractions(a, b, metric, tol)
    return out
