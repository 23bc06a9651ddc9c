"""Command-line checks that Hydra cannot phrase as one line, done before Hydra runs.

`+task`, `+algo` and `experiment` name YAML files under conf/. An unknown or
missing name is reported with the available options. An experiment names its
task and algorithm (`experiment_meta`), which are appended when not given, and
the experiment is applied after them so that its values win.
"""
from __future__ import annotations

import os

from omegaconf import OmegaConf

from fedrecon_bench.errors import UserError

CONF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf")


def options(group: str) -> list[str]:
    d = os.path.join(CONF_DIR, group)
    return sorted(f[:-5] for f in os.listdir(d) if f.endswith(".yaml")) if os.path.isdir(d) else []


def _find(argv, group):
    """Index and value of `[+|++]group=value`, or (None, None)."""
    for i, a in enumerate(argv):
        key, sep, val = a.lstrip("+").partition("=")
        if sep and key == group:
            return i, val
    return None, None


def _check(group: str, value: str) -> None:
    avail = options(group)
    for v in value.split(","):  # multirun sweeps: +algo=fedrecon,fedavg
        if v not in avail:
            raise UserError(f"unknown {group} {v!r}; available: {', '.join(avail)} "
                            f"(use +{group}=<name>)" if group != "experiment" else
                            f"unknown experiment {v!r}; available: {', '.join(avail)} "
                            f"(use experiment=<name>)")


def normalize(argv: list[str]) -> list[str]:
    """Returns argv for Hydra, or raises UserError naming what is missing/unknown."""
    if any(a in ("--help", "-h", "--hydra-help") for a in argv):
        return argv
    argv = list(argv)
    i, exp = _find(argv, "experiment")
    if exp is not None:
        _check("experiment", exp)
        argv.pop(i)
        if "," not in exp:
            meta = OmegaConf.load(os.path.join(CONF_DIR, "experiment", exp + ".yaml")).get(
                "experiment_meta", {})
            for group in ("task", "algo"):
                if _find(argv, group)[0] is None and meta.get(group):
                    argv.append(f"+{group}={meta[group]}")
    head = []  # appended groups go first, in merge order: task, algo, then the preset
    for group in ("task", "algo"):
        j, val = _find(argv, group)
        if j is None:
            raise UserError(f"no {group} given; add +{group}=<name> with one of: "
                            f"{', '.join(options(group))}")
        _check(group, val)
        argv.pop(j)
        head.append(f"+{group}={val}")  # task/algo are appended groups
    if exp is not None:
        head.append(f"+experiment={exp}")  # after task/algo: the preset's values win
    argv = head + argv
    return argv
