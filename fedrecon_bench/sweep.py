"""Sweeps (Hydra multirun): argv for sweep presets, failed jobs recorded, a report at the end.

    python -m fedrecon_bench -m +task=movielens +algo=fedrecon,fedavg seed=0,1,2
    python -m fedrecon_bench -m +sweep=movielens_tutorial_table [hydra/launcher=joblib]

A sweep preset (`conf/sweep/<name>.yaml`, `# @package _global_`) lists what it
sweeps under `hydra.sweeper.params` (`+task`, `+algo`, `seed`, any key) and pins
the rest. In a sweep a job that fails or diverges is recorded in its
`summary.json` (status, error) and the sweep goes on; `SweepReport` prints one
line per job that did not complete and `sweep_dir: <path>` last.
"""
from __future__ import annotations

import glob
import json
import os
import sys
import time

from omegaconf import OmegaConf

from fedrecon_bench.argv import find as _find
from fedrecon_bench.errors import UserError

# Hydra's options that take a value (hydra/_internal/utils.py: get_args_parser).
_VALUE_FLAGS = {"--cfg", "-c", "--package", "-p", "--config-path", "-cp", "--config-name",
                "-cn", "--config-dir", "-cd", "--experimental-rerun"}
_INFO_CHOICES = {"all", "config", "defaults", "defaults-tree", "plugins", "searchpath"}


def split_flags(argv: list[str]) -> tuple[list[str], list[str]]:
    """(Hydra options, overrides). Hydra's argparse stops collecting overrides at the
    first option, so `+task=x -m seed=0,1` fails there; options are moved first."""
    flags, rest, i = [], [], 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-"):  # overrides never do: key=, +key=, ++key=, ~key
            flags.append(a)
            if a in _VALUE_FLAGS and i + 1 < len(argv):
                flags.append(argv[i + 1])
                i += 1
            elif a in ("--info", "-i") and i + 1 < len(argv) and argv[i + 1] in _INFO_CHOICES:
                flags.append(argv[i + 1])
                i += 1
        else:
            rest.append(a)
        i += 1
    return flags, rest



def experiment_meta(names: str, conf_dir: str) -> dict:
    """The task/algo an experiment (or a comma list of them) names. A sweep over
    experiments must share them: Hydra would cross any +task list with the list."""
    metas = [OmegaConf.load(os.path.join(conf_dir, "experiment", n + ".yaml")).get(
        "experiment_meta", {}) for n in names.split(",")]
    out = {}
    for group in ("task", "algo"):
        vals = {m.get(group) for m in metas}
        if len(vals) > 1:
            raise UserError(f"experiment={names}: the experiments name different {group}s "
                            f"({', '.join(sorted(map(str, vals)))}); sweep them in separate "
                            f"commands, or give +{group}=<name> yourself")
        out[group] = vals.pop()
    return out


def preset_groups(argv: list[str], multirun: bool, conf_dir: str, options) -> dict[str, str]:
    """For `[+]sweep=<name>` in argv: rewrites it to `+sweep=<name>` in place, checks the
    names the preset sweeps over, and returns {group: values} for task/algo that the
    preset supplies (through the sweeper, so they must not also be appended here)."""
    i, name = _find(argv, "sweep")
    if i is None:
        return {}
    avail = sorted(f[:-5] for f in os.listdir(os.path.join(conf_dir, "sweep")) if f.endswith(".yaml"))
    if name not in avail:
        raise UserError(f"unknown sweep preset {name!r}; available: {', '.join(avail)} "
                        "(use -m +sweep=<name>)")
    if not multirun:
        raise UserError(f"sweep={name} is a multirun preset; add -m "
                        f"(python -m fedrecon_bench -m +sweep={name})")
    argv[i] = f"+sweep={name}"
    path = os.path.join("conf", "sweep", name + ".yaml")
    preset = OmegaConf.load(os.path.join(conf_dir, "sweep", name + ".yaml"))
    params = OmegaConf.select(preset, "hydra.sweeper.params") or {}
    out = {}
    for key, value in params.items():
        group = key.lstrip("+")
        if group in ("task", "algo", "experiment") and not key.startswith("+"):
            raise UserError(f"{path}: hydra.sweeper.params key {key!r} must be '+{group}' "
                            f"({group} is an appended group)")
        if group not in ("task", "algo", "experiment") or _find(argv, group)[0] is not None:
            continue  # a command-line +task/+algo replaces the preset's list
        avail = options(group)
        missing = [v for v in str(value).split(",") if v not in avail]
        if missing:
            raise UserError(
                f"{path}: hydra.sweeper.params {key} lists {group} {missing[0]!r}, which does "
                f"not exist (available: {', '.join(avail)}); add conf/{group}/{missing[0]}.yaml, "
                f"or override the list: {key}={','.join(v for v in str(value).split(',') if v in avail)}")
        out[group] = str(value)
    return out


# --------------------------------------------------------------------------
# In a job
# --------------------------------------------------------------------------
def is_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    try:
        return HydraConfig.get().mode == RunMode.MULTIRUN
    except ValueError:  # no Hydra config set: called outside a Hydra job
        return False


def record_failure(cfg, run_dir: str, error: str, t0: float) -> None:
    """summary.json with status failed, unless the loop already wrote one (errors
    raised during training are recorded there, with the rounds reached)."""
    from fedrecon_bench.run_log import write_json_atomic

    path = os.path.join(run_dir, "summary.json")
    if os.path.isfile(path) and os.path.getmtime(path) >= t0 - 1:  # written by this job
        return
    sel = lambda key: OmegaConf.select(cfg, key, default=None)
    os.makedirs(run_dir, exist_ok=True)
    write_json_atomic(path, {
        "task": sel("task.name"), "algo": sel("algo.name"), "seed": sel("seed"),
        "status": "failed", "error": error, "final": {}, "wall_s": round(time.time() - t0, 3),
        "global_params": None, "local_params": None, "rounds": sel("rounds"),
        "clients_per_round": sel("clients_per_round"), "round_reached": 0, "run_dir": run_dir})


# --------------------------------------------------------------------------
# After the sweep
# --------------------------------------------------------------------------
try:
    from hydra.experimental.callback import Callback
except ImportError:  # pragma: no cover
    Callback = object


class SweepReport(Callback):
    """Prints each job that did not complete and `sweep_dir: <abs path>` (stdout, last)."""

    def on_multirun_end(self, config, **kwargs) -> None:
        sweep_dir = os.path.abspath(str(config.hydra.sweep.dir))
        summaries = sorted(glob.glob(os.path.join(sweep_dir, "**", "summary.json"), recursive=True))
        status = {}
        for p in summaries:
            try:
                with open(p) as f:
                    s = json.load(f)
            except (OSError, ValueError) as e:
                s = {"status": "unreadable", "error": str(e)}
            status[os.path.dirname(p)] = s
        bad = {d: s for d, s in status.items() if s.get("status") != "completed"}
        counts = {}
        for s in status.values():
            counts[s.get("status")] = counts.get(s.get("status"), 0) + 1
        print("sweep: " + (", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no runs"),
              flush=True)
        for d, s in bad.items():
            print(f"  {s.get('status')}: {os.path.relpath(d, sweep_dir)}: {s.get('error', '')}",
                  file=sys.stderr, flush=True)
        print(f"sweep_dir: {sweep_dir}", flush=True)
