"""The command line checked before Hydra starts: a run refused here writes nothing anywhere.

    help      python -m fedrecon_bench --help: usage, the groups' options, examples
    preview   python -m fedrecon_bench -m ... --dry-run (or --cfg job): the sweep's jobs, one
              line of overrides each, each job's config checked; nothing runs
    compose   every other command: the (first) job's config is composed (Hydra's own rules)
              and, for a single run, checked (validate.check_config) here; an unknown key or
              group value gets one line naming it, the closest valid names and the fix (exit 2)

Hydra appends a `+key=value` whose key does not exist: for a key the suite does not read
(a typo such as `+round=3`) that would be a run that silently ignores it, so it is refused.
"""
from __future__ import annotations

import difflib
import itertools
import re

from fedrecon_bench.errors import UserError

APPENDED = ("task", "algo", "experiment", "sweep")  # the groups a command appends with +


def _keys(cfg, prefix: str = "") -> list[str]:
    out = []
    for k, v in cfg.items():
        key = f"{prefix}{k}"
        out.append(key)
        if hasattr(v, "items"):
            out += _keys(v, key + ".")
    return out


def _suggest(key: str, keys: list[str]) -> str:
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(close)}?" if close else ""


def _owners(key: str) -> list[str]:
    """`group=option` for each option of the key's config group whose YAML has the key."""
    import os

    from omegaconf import OmegaConf

    from fedrecon_bench.cli_args import CONF_DIR, options

    group, _, rest = key.partition(".")
    found = []
    for opt in options(group) if rest else []:
        cfg = OmegaConf.load(os.path.join(CONF_DIR, group, f"{opt}.yaml"))
        if OmegaConf.select(cfg, rest, default="__absent__") != "__absent__":
            found.append(f"{group}={opt}")
    return found


def _one_line(e: Exception, overrides: list[str], keys: list[str]) -> str:
    """Hydra's multi-line composition errors, as one line with the fix."""
    msg = str(e)
    m = re.search(r"Could not override '([^']+)'", msg) or re.search(r"Key '([^']+)' is not in struct", msg)
    if m:
        key = m.group(1)
        owners = _owners(key)
        if owners:  # a key of another option of its group (dp.clip under dp=none)
            group = key.split(".")[0]
            return (f"{key} is not a key of the chosen {group} option; {', '.join(owners)} "
                    f"{'has' if len(owners) == 1 else 'have'} it: choose one, or drop {key}")
        return (f"{key} is not a config key{_suggest(key, keys)} (see `python -m fedrecon_bench --help` and "
                "docs/configuration.md)")
    m = re.search(r"Could not find '([^']+)'", msg)
    if m:
        group, _, name = m.group(1).rpartition("/")
        from fedrecon_bench.cli_args import options

        avail = options(group)
        close = difflib.get_close_matches(name, avail, n=3, cutoff=0.5)
        return (f"unknown {group} {name!r}" + (f"; did you mean {' or '.join(close)}?" if close else "")
                + f" available: {', '.join(avail)} (use {group}=<name>)")
    return msg.strip().splitlines()[0]


def first_job(overrides: list[str]) -> list[str]:
    """A command's (first) job: a sweep preset's params and each comma list at its first value."""
    return jobs(overrides, preset_params(overrides))[0]


def preset_params(overrides: list[str]) -> dict:
    """The hydra.sweeper.params of a `+sweep=<preset>` among the overrides ({} without one)."""
    from omegaconf import OmegaConf

    from fedrecon_bench.argv import find
    from fedrecon_bench.cli_args import CONF_DIR

    _, name = find(overrides, "sweep")
    if not name:
        return {}
    preset = OmegaConf.load(f"{CONF_DIR}/sweep/{name}.yaml")
    return {k: str(v) for k, v in (OmegaConf.select(preset, "hydra.sweeper.params") or {}).items()}


def jobs(overrides: list[str], preset_params: dict) -> list[list[str]]:
    """Every job of a sweep: the preset's hydra.sweeper.params and the command line's comma
    lists (the command line wins), as Hydra's basic sweeper expands them."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    given = {o.lstrip("+").partition("=")[0] for o in overrides}
    merged = [f"{k}={v}" for k, v in preset_params.items() if k.lstrip("+") not in given] + overrides
    parsed = OverridesParser.create().parse_overrides(merged)
    axes = [[f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override()
            else [f"{o.get_key_element()}={o.get_value_element_as_str()}"] for o in parsed]
    return [list(job) for job in itertools.product(*axes)]


def check(overrides: list[str], values: bool = True) -> None:
    """Composes one job's overrides and (values) validates them; raises UserError in one line.
    A sweep checks its keys only: a job with a bad value is recorded as failed, the rest run."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from fedrecon_bench import validate

    groups = [o for o in overrides if o.lstrip("+").partition("=")[0] in APPENDED or "/" in o.partition("=")[0]]
    try:
        keys = _keys(_compose(groups))
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(_one_line(e, overrides, [])) from None
    for o in overrides:
        k = o.partition("=")[0].lstrip("+")
        if o.startswith("+") and k not in APPENDED and "/" not in k and not k.startswith("hydra.") and k not in keys:
            close = difflib.get_close_matches(k, keys, n=1, cutoff=0.6)
            fix = f"set an existing key without +: {close[0]}={o.partition('=')[2]}" if close else \
                "see docs/configuration.md for the keys"
            raise UserError(f"{o} adds a key the suite never reads ({fix})")
    try:
        cfg = _compose(overrides)
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(_one_line(e, overrides, keys)) from None
    if values:
        validate.check_config(cfg)


def _compose(overrides: list[str]):
    """Hydra's composition of already normalized overrides, with a preset's picks (tuned.py)."""
    from hydra import compose, initialize_config_dir

    from fedrecon_bench import tuned
    from fedrecon_bench.cli_args import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    tuned.apply(cfg, tuned.override_keys(overrides))
    return cfg


# --------------------------------------------------------------------------
# --help and the sweep preview
# --------------------------------------------------------------------------
def help_text() -> str:
    from fedrecon_bench import algorithms, sweep
    from fedrecon_bench.cli_args import CONF_DIR, options

    width = max(len(n) for n in algorithms.specs())
    algos = "\n".join(f"  {n:<{width}}  {s.title}" for n, s in algorithms.specs().items())
    exps = []
    for e in options("experiment"):
        meta = sweep.experiment_meta(e, CONF_DIR)
        exps.append(f"  {e}" + (f" ({meta.get('task')}, {meta.get('algo')})" if meta else ""))
    return "\n".join([
        "usage: python -m fedrecon_bench +task=<task> +algo=<algo> [experiment=<preset>] [key=value ...]",
        "       python -m fedrecon_bench -m +sweep=<preset> [key=a,b ...] [--dry-run]",
        "       python -m fedrecon_bench resume=<run dir>",
        "",
        "Federated Reconstruction and baselines on partially local federated learning tasks.",
        "+task and +algo are required (an experiment preset names both; +algo=<name> picks another).",
        "",
        f"tasks: {', '.join(options('task'))}", "algorithms:", algos, "experiments (presets):", *exps,
        f"sweeps (-m +sweep=<name>): {', '.join(options('sweep'))}",
        "engines: engine=fast (JAX; every task's default) | engine=tff (TensorFlow Federated, the reference)",
        "",
        "examples:",
        "  python -m fedrecon_bench +task=movielens +algo=fedrecon            # the TFF tutorial's setting",
        "  python -m fedrecon_bench experiment=movielens_paper +algo=fedavg    # a paper-table row",
        "  python -m fedrecon_bench -m +sweep=movielens_paper_table --dry-run  # a sweep's jobs, not run",
        "",
        "A run writes runs/<task>/<algo>/<time>/ (metrics.jsonl, summary.json) and prints run_dir: <path> last.",
        "Every key with its default: docs/configuration.md; README.md and docs/ for the rest; --hydra-help, --info.",
    ])


def preview(argv: list[str]) -> str:
    """The jobs a multirun would run, one line of overrides each, each checked."""
    overrides = [a for a in argv if not a.startswith("-")]
    all_jobs = jobs(overrides, preset_params(overrides))
    lines = []
    for i, job in enumerate(all_jobs):
        try:
            check(job)
            status = ""
        except UserError as e:
            status = f"   <- refused: {e}"
        lines.append(f"job {i}: {' '.join(job)}{status}")
    lines.append(f"{len(all_jobs)} jobs (nothing run: --dry-run)")
    return "\n".join(lines)
