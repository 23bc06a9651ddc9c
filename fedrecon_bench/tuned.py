"""Values a preset picked per setting (`tuned:`), applied after Hydra composes a job.

A preset (conf/experiment/*, conf/sweep/*) that was tuned per algorithm, or per algorithm
and noise multiplier, lists what it picked:

    tuned:
      - when: {algo.name: fedavg}                                 # every key must match
        set: {algo.client_optimizer.learning_rate: 0.1}
      - when: {algo.name: fedavg, task.split_by: example}         # a later match wins
        set: {algo.client_optimizer.learning_rate: 0.2}

so `experiment=<preset> +algo=<name>` runs that algorithm's own setting. A key given on the
command line (or a sweep's grid) wins over the preset's pick. Keys `set` names must exist
in the composed config (a typo is a one-line error).
"""
from __future__ import annotations

from omegaconf import OmegaConf, open_dict

from fedrecon_bench.errors import UserError


def override_keys(overrides) -> set[str]:
    """The keys a list of Hydra overrides sets (`+k=v`, `++k=v`, `k=v`)."""
    return {o.lstrip("+~").partition("=")[0] for o in overrides if "=" in o}


def _matches(cfg, when: dict) -> bool:
    for key, want in when.items():
        got = OmegaConf.select(cfg, key, default=None)
        if got != want and str(got) != str(want):
            return False
    return True


def picks(cfg, explicit: set[str] = frozenset()) -> dict:
    """{key: value} of the matching `tuned` entries, later ones winning, without the keys
    in `explicit`."""
    out = {}
    for i, entry in enumerate(cfg.get("tuned") or []):
        if not hasattr(entry, "get") or "when" not in entry or "set" not in entry:
            raise UserError(f"tuned[{i}]: each entry needs `when: {{key: value}}` and `set: {{key: value}}`")
        if _matches(cfg, entry["when"]):
            out.update({k: v for k, v in entry["set"].items() if k not in explicit})
    return out


def apply(cfg, explicit: set[str] = frozenset()):
    """cfg with the preset's picks for its setting set (in place); returns what it set."""
    chosen = picks(cfg, explicit)
    for key, value in chosen.items():
        if OmegaConf.select(cfg, key, default="__absent__") == "__absent__":
            raise UserError(f"tuned: {key} is not a config key of this run; fix the preset's tuned: entry")
        with open_dict(cfg):
            OmegaConf.update(cfg, key, value, merge=False)
    return chosen
