"""Command-line checks that Hydra cannot phrase as one line, done before Hydra runs.

`+task`, `+algo` and `experiment` name YAML files under conf/. An unknown or
missing name is reported with the available options. An experiment names its
task and algorithm (`experiment_meta`), which are appended when not given, and
the experiment is applied after them so that its values win.
"""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from fedrecon_bench import sweep
from fedrecon_bench.argv import find as _find
from fedrecon_bench.errors import UserError

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def options(group: str) -> list[str]:
    d = os.path.join(CONF_DIR, group)
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml")) if os.path.isdir(d) else []



def _check(group: str, value: str) -> None:
    avail = options(group)
    usage = f"+{group}" if group in ("task", "algo") else group  # appended groups take a +
    for v in value.split(","):  # multirun sweeps: +algo=fedrecon,fedavg
        if v not in avail:
            raise UserError(f"unknown {group} {v!r}; available: {', '.join(avail)} "
                            f"(use {usage}=<name>)")


def _resume(argv: list[str]) -> list[str]:
    """`resume=<run dir>`: that run's own overrides, into that dir (later args win)."""
    i, run_dir = _find(argv, "resume")
    argv = argv[:i] + argv[i + 1:]
    path = os.path.join(run_dir, ".hydra", "overrides.yaml")
    if not os.path.isfile(path):
        raise UserError(f"resume={run_dir}: no {path}; give the run dir of an earlier run "
                        "(the path printed as run_dir:)")
    saved = [o for o in OmegaConf.load(path) if not o.startswith("hydra.run.dir=")]
    keys = {a.lstrip("+").partition("=")[0] for a in argv}
    return [o for o in saved if o.lstrip("+").partition("=")[0] not in keys] + argv + [
        f"hydra.run.dir={os.path.abspath(run_dir)}"]


def _check_writable(argv: list[str]) -> None:
    """Hydra creates the run dir itself and fails with a traceback when it can't."""
    _, run_dir = _find(argv, "hydra.run.dir")
    if run_dir is None or "${" in run_dir:
        run_dir = "runs"
    p = os.path.abspath(run_dir)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p) or not os.access(p, os.W_OK):
        raise UserError(f"hydra.run.dir={run_dir}: cannot create it ({p} is not a writable "
                        "directory); pass hydra.run.dir=<a writable path>")


def normalize(argv: list[str]) -> list[str]:
    """Returns argv for Hydra, or raises UserError naming what is missing/unknown."""
    if any(a in ("--help", "-h", "--hydra-help") for a in argv):
        return argv
    flags, argv = sweep.split_flags(list(argv))  # -m, --cfg job, ... go first for Hydra
    if {"--info", "-i"} & set(flags) and not argv:
        return flags  # Hydra's own --info needs no task
    if _find(argv, "resume")[0] is not None:
        argv = _resume(argv)
    _check_writable(argv)
    _, dp = _find(argv, "dp")
    if dp is not None:
        _check("dp", dp)
    i, exp = _find(argv, "experiment")
    if exp is not None:
        _check("experiment", exp)
        argv.pop(i)
        meta = sweep.experiment_meta(exp, CONF_DIR)  # a comma list (sweep) must agree
        for group in ("task", "algo"):
            if _find(argv, group)[0] is None and meta.get(group):
                argv.append(f"+{group}={meta[group]}")
    # +sweep=<preset>: its hydra.sweeper.params may supply +task/+algo to each job.
    swept = sweep.preset_groups(argv, bool({"-m", "--multirun"} & set(flags)), CONF_DIR, options)
    head = []  # appended groups go first, in merge order: task, algo, then the preset
    for group in ("task", "algo"):
        j, val = _find(argv, group)
        if j is None and group in swept:
            continue
        if j is None:
            raise UserError(f"no {group} given; add +{group}=<name> with one of: "
                            f"{', '.join(options(group))}")
        _check(group, val)
        argv.pop(j)
        head.append(f"+{group}={val}")  # task/algo are appended groups
    if exp is not None:
        head.append(f"+experiment={exp}")  # after task/algo: the preset's values win
    argv = flags + head + argv
    return argv
