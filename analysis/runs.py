"""Reading runs: only the run contract files (docs/run-contract.md).

A run dir holds `summary.json`, `metrics.jsonl` and `.hydra/config.yaml` (+ `hydra.yaml`
for the config-group choices). A sweep dir holds run dirs, found by their summary.json.
The same `Run` records can come from the wandb API (`from_wandb`), so a table can be
built from an online project as well.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
from typing import Any, Callable, Iterable

from fedrecon_bench.errors import UserError
from fedrecon_bench.privacy import DEFAULT_ACCOUNTANT, EPSILON_KEYS

# Per-row bookkeeping, not metrics (ε and δ are the privacy of a DP run: table.py's ε column;
# `epsilon` alone is what runs logged before both ε were, the replace-one one).
BOOKKEEPING = {"round", "split", "clients", "round_s", "eval_s", "rss_mb", "num_examples",
               "num_batches", "epsilon", "delta", *EPSILON_KEYS.values()}
# A metric whose name contains one of these is better when lower.
_LOWER_BETTER = ("loss", "rmse", "mse", "mae", "error", "perplexity", "wall_s", "hurt")


def is_client_stat(key: str) -> bool:
    """A per-client statistic (`<metric>_client_<stat>`, records.py), not a pooled metric."""
    return "_client_" in key or key == "clients_measured"


def lower_is_better(metric: str) -> bool:
    return any(t in metric.lower() for t in _LOWER_BETTER)


@dataclasses.dataclass
class Run:
    path: str
    summary: dict
    config: dict = dataclasses.field(default_factory=dict)
    choices: dict = dataclasses.field(default_factory=dict)  # config groups: {"split/train": ...}
    _rows: list | None = None
    _load_rows: Callable[[], list] | None = None

    @property
    def status(self) -> str:
        return str(self.summary.get("status", "unknown"))

    def key(self, name: str) -> Any:
        """A grouping value: summary key (dotted: `privacy.epsilon`), else dotted config key,
        else config-group choice."""
        if name in self.summary:
            return self.summary[name]
        for tree in (self.summary, self.config):
            node = _dotted(tree, name)
            if node is not None:
                return node
        return self.choices.get(name)

    def has_key(self, name: str) -> bool:
        return self.key(name) is not None

    def rows(self) -> list[dict]:
        """metrics.jsonl rows ({round, split, metrics...}), read once."""
        if self._rows is None:
            self._rows = self._load_rows() if self._load_rows else []
        return self._rows



def _dotted(tree: dict, name: str) -> Any:
    node: Any = tree
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


# --------------------------------------------------------------------------
# Run dirs
# --------------------------------------------------------------------------
def _read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        return []
    out = []
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                out.append(json.loads(line))
            except ValueError:
                # a run killed mid-write leaves a torn last line; anything else is an error
                print(f"warning: {path}:{lineno}: unreadable metrics row skipped", file=sys.stderr)
    return out


def _read_yaml(path: str) -> dict:
    if not os.path.isfile(path):
        return {}
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(path)
    try:  # values that point at other keys (algo.client_weighting: ${dp.client_weighting})
        return OmegaConf.to_container(cfg, resolve=True) or {}
    except Exception:  # an interpolation this process cannot resolve (an unset env var, hydra's)
        return OmegaConf.to_container(cfg, resolve=False) or {}


def load_run(run_dir: str) -> Run:
    path = os.path.join(run_dir, "summary.json")
    try:
        with open(path) as f:
            summary = json.load(f)
    except ValueError as e:
        raise UserError(f"{path}: not valid JSON ({e}); delete that run dir or rerun it") from None
    config = _read_yaml(os.path.join(run_dir, ".hydra", "config.yaml"))
    hydra_cfg = _read_yaml(os.path.join(run_dir, ".hydra", "hydra.yaml"))
    choices = {k: v for k, v in (hydra_cfg.get("hydra", {}).get("runtime", {})
                                 .get("choices", {}) or {}).items()
               if not k.startswith("hydra/")}
    return Run(run_dir, summary, config, choices,
               _load_rows=lambda: _read_jsonl(os.path.join(run_dir, "metrics.jsonl")))


def find_run_dirs(paths: Iterable[str]) -> list[str]:
    """Run dirs at or below each path (a run dir, a sweep dir, or a dir of sweeps)."""
    found: list[str] = []
    for p in paths:
        if not os.path.isdir(p):
            raise UserError(f"{p}: no such directory; pass run or sweep dirs "
                            "(the paths printed as run_dir: / sweep_dir:)")
        here = []
        for root, dirs, files in os.walk(p):
            dirs[:] = sorted(d for d in dirs if d not in (".hydra", ".submitit", "wandb"))
            if "summary.json" in files:
                here.append(root)
                dirs[:] = []  # a run dir holds no further runs
        if not here:
            raise UserError(f"{p}: no runs found (no summary.json at or below it); pass run or "
                            "sweep dirs (the paths printed as run_dir: / sweep_dir:)")
        found += [d for d in here if d not in found]
    return found


def load_runs(paths: Iterable[str]) -> list[Run]:
    return [load_run(d) for d in find_run_dirs(paths)]


# --------------------------------------------------------------------------
# wandb: the same records through the API (RunLog mirrors the contract there)
# --------------------------------------------------------------------------
def _wandb_rows(history: Iterable[dict]) -> list[dict]:
    """wandb history rows {"_step": r, "<split>/<metric>": v} -> metrics.jsonl-style rows."""
    rows = []
    for h in history:
        by_split: dict[str, dict] = {}
        for k, v in h.items():
            split, sep, metric = k.partition("/")
            if sep and split in ("train", "val", "test") and v is not None:
                by_split.setdefault(split, {})[metric] = v
        for split, m in by_split.items():
            rows.append({"round": int(h.get("_step", 0)), "split": split, **m})
    return rows


def from_wandb(project: str, api=None, filters: dict | None = None) -> list[Run]:
    """Runs of `entity/project` as Run records. `api` defaults to wandb.Api()."""
    if api is None:
        import wandb

        api = wandb.Api()
    runs = []
    for r in api.runs(project, filters=filters):
        config = dict(r.config)
        s = dict(r.summary)
        final: dict[str, dict] = {}
        for k, v in s.items():
            parts = k.split("/")
            if len(parts) == 3 and parts[0] == "final":
                final.setdefault(parts[1], {})[parts[2]] = v
        summary = {"task": config.get("task", {}).get("name"), "algo": config.get("algo", {}).get("name"),
                   "seed": config.get("seed"), "status": s.get("status", "unknown"),
                   "final": final, **{k: v for k, v in s.items()
                                      if k in ("wall_s", "global_params", "local_params")}}
        privacy = {k.split("/", 1)[1]: v for k, v in s.items() if k.startswith("privacy/")}
        if privacy:  # RunLog mirrors summary.json's numeric `privacy` values as privacy/<key>
            summary["privacy"] = privacy
        runs.append(Run(f"wandb:{project}/{getattr(r, 'id', '?')}", summary, config, {},
                        _load_rows=lambda r=r: _wandb_rows(r.scan_history())))
    if not runs:
        raise UserError(f"wandb project {project}: no runs found (filters={filters}); check "
                        "ENTITY/PROJECT and that the runs were synced (wandb sync)")
    return runs


# --------------------------------------------------------------------------
# Selecting one value per run (and evaluation mode)
# --------------------------------------------------------------------------
def entries(run: Run, split: str) -> list[tuple[str | None, dict]]:
    """(eval_mode, final record) of `split`. An algorithm with several evaluation modes
    writes final[split] (its headline mode) and final[f"{split}_{mode}"], each record
    naming its `eval_mode`; other runs have one entry with mode None."""
    out = []
    for k, rec in run.summary.get("final", {}).items():
        if isinstance(rec, dict) and (k == split or k.startswith(split + "_")):
            out.append((rec.get("eval_mode") or (k[len(split) + 1:] if k != split else None), rec,
                        k != split))
    return [(mode, rec) for mode, rec, _ in sorted(out, key=lambda t: t[2])]  # headline first


def metric_names(runs: list[Run], split: str) -> list[str]:
    """Metrics present in the runs' final[split] records, in first-seen order."""
    out: list[str] = []
    for r in runs:
        for _, rec in entries(r, split):
            for k, v in rec.items():
                if k not in BOOKKEEPING and isinstance(v, (int, float)) and not isinstance(v, bool) \
                        and k not in out:
                    out.append(k)
    return out


def has_modes(runs: list[Run]) -> bool:
    return any(mode is not None for r in runs for s in ("val", "test") for mode, _ in entries(r, s))


def default_val_metric(metrics: list[str]) -> str:
    """The headline for best-val: the first higher-is-better metric (an accuracy), else the first."""
    return next((m for m in metrics if not lower_is_better(m)), metrics[0])


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None


def best_val_round(run: Run, val_metric: str, mode: str | None = None) -> int | None:
    vals = [(r["round"], _num(r.get(val_metric))) for r in run.rows()
            if r.get("split") == "val" and r.get("eval_mode") == mode]
    vals = [(rnd, v) for rnd, v in vals if v is not None]
    if not vals:
        return None
    sign = 1 if lower_is_better(val_metric) else -1
    return min(vals, key=lambda t: (sign * t[1], t[0]))[0]  # ties: the earliest round


def select(run: Run, split: str, metric: str, mode_sel: str, val_metric: str | None,
           eval_mode: str | None = None) -> float | None:
    """The run's value: `final` (summary.json) or `best-val` (the metrics.jsonl row of
    `split` at the round whose val `val_metric` is best), for one evaluation mode."""
    if mode_sel == "final":
        rec = dict(entries(run, split)).get(eval_mode)
        return _num(rec.get(metric)) if rec else None
    r_best = best_val_round(run, val_metric, eval_mode)
    if r_best is None:
        return None
    for row in run.rows():
        if row.get("split") == split and row.get("round") == r_best \
                and row.get("eval_mode") == eval_mode:
            return _num(row.get(metric))
    return None


def value(run: Run, key: str, eval_mode: str | None = None):
    """A grouping value; `eval_mode` is the entry's own."""
    return eval_mode if key == "eval_mode" else run.key(key)


def label(run: Run, keys: list[str], eval_mode: str | None = None) -> str:
    return " / ".join("–" if value(run, k, eval_mode) is None else str(value(run, k, eval_mode))
                      for k in keys)


def _mode_keys(runs: list[Run]) -> list[str]:
    """Evaluation-mode keys the runs record: eval_mode (per entry), split_by (summary or config)."""
    keys = ["eval_mode"] if has_modes(runs) else []
    if any("split_by" in r.summary for r in runs):
        keys.append("split_by")
    elif any(r.has_key("task.split_by") for r in runs):
        keys.append("task.split_by")
    return keys


def _values(runs: list[Run], key: str, split: str = "test") -> set:
    return {value(r, key, mode) for r in runs for mode, _ in (entries(r, split) or [(None, {})])}


NOISE = "privacy.noise_multiplier"  # in the summary of a DP run


def default_row_keys(runs: list[Run]) -> list[str]:
    """algo, plus the DP noise multiplier and the evaluation modes where they differ between
    the runs (privacy.noise_multiplier, eval_mode, split_by)."""
    noise = [NOISE] if len({r.key(NOISE) for r in runs}) > 1 else []
    return ["algo", *noise] + [k for k in _mode_keys(runs) if len(_values(runs, k)) > 1]


def check_accountant(choice: str | None) -> None:
    if choice not in (None, *EPSILON_KEYS):
        raise UserError(f"--accountant {choice!r}: use {' or '.join(EPSILON_KEYS)}")


def accountant(run: Run, choice: str | None = None) -> str:
    """Which of a DP run's two ε tables and plots show: `choice` (--accountant), else the
    run's dp.accountant (summary.json privacy.accountant, or its config), else poisson. A run
    logged before both ε were has only `epsilon`, the replace-one one: that is what it shows."""
    a = choice or run.key("privacy.accountant")
    a = a if a in EPSILON_KEYS else run.key("dp.accountant")
    a = a if a in EPSILON_KEYS else DEFAULT_ACCOUNTANT
    if run.key(f"privacy.{EPSILON_KEYS[a]}") is None and run.key("privacy.epsilon") is not None:
        return "replace_one"
    return a


def epsilon_key(run: Run, choice: str | None = None) -> str:
    """The privacy / row key of the ε `accountant` picks (`epsilon` for older runs)."""
    key = EPSILON_KEYS[accountant(run, choice)]
    return key if run.key(f"privacy.{key}") is not None else "epsilon"


def epsilon(run: Run, mode_sel: str = "final", val_metric: str | None = None,
            eval_mode: str | None = None, choice: str | None = None) -> float | None:
    """A DP run's ε by `accountant` (inf without noise; None for a run without DP): after all
    its rounds (summary.json privacy), or with best-val selection after its best val round."""
    key = epsilon_key(run, choice)
    v = run.key(f"privacy.{key}")
    if not isinstance(v, (int, float)):
        return None
    if mode_sel == "best-val":
        r_best = best_val_round(run, val_metric, eval_mode)
        v = next((row[key] for row in run.rows() if row.get("split") == "val"
                  and row.get("round") == r_best and key in row), v)
    return float(v)


def constant_keys(runs: list[Run]) -> dict:
    """Evaluation-mode keys with one value across the runs (said once, in the caption)."""
    out = {}
    for k in _mode_keys(runs):
        vals = _values(runs, k)
        if len(vals) == 1 and None not in vals:
            out[k] = vals.pop()
    return out


def parse_list(s: str | None) -> list[str] | None:
    return [x.strip() for x in s.split(",") if x.strip()] if s else None
