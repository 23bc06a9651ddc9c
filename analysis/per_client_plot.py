"""Per-user plots from per-client records (analysis/per_client.py's `plot`): the distribution of
a metric over users, one ECDF per row label (every seed's users pooled), and one label's
per-user values against another's (seeds paired by their run seed), with the diagonal."""
from __future__ import annotations

import os
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")  # files only

from analysis import per_client as PC  # noqa: E402
from analysis import runs as R  # noqa: E402
from fedrecon_bench.errors import UserError  # noqa: E402


def _by_label(runs, metric, split, rows):
    """{label: [(seed, {client: value}), ...]} of the completed runs."""
    out = defaultdict(list)
    for run in runs:
        if run.status != "completed":
            continue
        out[R.label(run, rows)].append((run.key("seed"), PC.values(PC.records(run, split), metric)))
    if not out:
        raise UserError("no completed runs with per-client records")
    return out


def plot(runs, out_dir: str, metric=None, split: str = "test", rows=None, scatter: str | None = None,
         dpi: int = 150) -> list[str]:
    """Writes ecdf_<split>_<metric>.png (and scatter_<ref>_vs_<method>_<split>_<metric>.png)."""
    import matplotlib.pyplot as plt
    import numpy as np

    metric = metric or R.default_val_metric(R.metric_names(runs, split))
    rows = rows or R.default_row_keys(runs)
    groups = _by_label(runs, metric, split, rows)
    os.makedirs(out_dir, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, seeds in sorted(groups.items()):
        x = np.sort(np.concatenate([np.fromiter(v.values(), float) for _, v in seeds]))
        ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", label=f"{label} (n={len(x)})")
    ax.set(xlabel=f"per-user {split} {metric}", ylabel="fraction of users <= x")
    ax.legend(fontsize="small")
    paths = [os.path.join(out_dir, f"ecdf_{split}_{metric}.png")]
    fig.tight_layout()
    fig.savefig(paths[0], dpi=dpi)
    plt.close(fig)
    if scatter:
        paths.append(_scatter(groups, scatter, metric, split, out_dir, dpi))
    return paths


def _scatter(groups, scatter: str, metric: str, split: str, out_dir: str, dpi: int) -> str:
    import matplotlib.pyplot as plt
    import numpy as np

    ref, _, new = scatter.partition(",")
    missing = [x for x in (ref, new) if x not in groups]
    if missing:
        raise UserError(f"--scatter {missing[0]!r} is not a row label; labels: {', '.join(sorted(groups))}")
    xs, ys = [], []
    by_seed = dict(groups[new])
    for seed, a in groups[ref]:
        if seed in by_seed:
            _, x, y = PC.paired(a, by_seed[seed], metric)
            xs.append(x)
            ys.append(y)
    if not xs:
        raise UserError(f"--scatter: {ref!r} and {new!r} share no seed")
    x, y = np.concatenate(xs), np.concatenate(ys)
    fig, ax = plt.subplots(figsize=(4.8, 4.8))
    ax.scatter(x, y, s=6, alpha=0.4)
    lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
    ax.plot([lo, hi], [lo, hi], color="gray", linewidth=1)
    frac = PC.fractions(x, y, metric)
    ax.set(xlabel=f"{ref}: per-user {metric}", ylabel=f"{new}: per-user {metric}",
           title=f"{split}: {new} helps {frac['helped']:.0%}, hurts {frac['hurt']:.0%} of {len(x)} users")
    path = os.path.join(out_dir, f"scatter_{_safe(ref)}_vs_{_safe(new)}_{split}_{metric}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in s)
