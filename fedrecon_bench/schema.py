"""Types, ranges and defaults of config keys, declared once and checked before anything loads.

Every group declares its keys as `Field`s: the run's own keys (FIELDS below), tasks
(`Task.fields`), algorithms (`Spec.fields`), splits (splits.FIELDS) and DP
(privacy.FIELDS). `check` turns the first bad value into one line naming the key,
what it must be, and so the fix. Checks that relate several keys stay with their owner.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

from fedrecon_bench.errors import UserError

_ABSENT = object()


@dataclasses.dataclass(frozen=True)
class Field:
    key: str                    # dotted config key, e.g. "task.batch_size"
    kind: str                   # int | number | bool | choice | str
    low: float | None = None    # int / number: the smallest allowed value
    strict: bool = False        # number: low itself is excluded (> low)
    high: float | None = None   # number: the largest allowed value (included)
    none: str | None = None     # null is allowed, and means this (e.g. "no cap")
    choices: tuple = ()         # choice: the allowed values
    also: tuple = ()            # int: other literal values allowed (e.g. "all")
    default: Any = _ABSENT      # value assumed when the key is absent (absent and no default: skipped)
    note: str = ""              # appended to the message, e.g. "(0 = no checkpoints)"

    def problem(self, v) -> str | None:
        """What is wrong with value v, or None."""
        if v is None:
            return None if self.none is not None else self._must()
        if v in self.also:
            return None
        ok = {"int": lambda: _is_int(v) and (self.low is None or v >= self.low),
              "number": lambda: _is_number(v) and self._in_range(v),
              "bool": lambda: isinstance(v, bool),
              "str": lambda: isinstance(v, str),
              "choice": lambda: v in self.choices}[self.kind]()
        if ok:
            return None
        if self.kind == "choice":
            return (f"{self.key}={v!r} is unknown; use one of {', '.join(map(str, self.choices))}"
                    + (f" {self.note}" if self.note else ""))
        return self._must(v)

    def _in_range(self, v) -> bool:
        low = self.low is None or (v > self.low if self.strict else v >= self.low)
        return low and (self.high is None or v <= self.high)

    def _must(self, v=None) -> str:
        head = f"{self.key}={v!r} must be "
        if self.kind == "int":
            what = ("all or " if self.also else "") + "an integer" + (
                f" >= {self.low:g}" if self.low is not None else "")
            null = f" or null ({self.none})" if self.low is not None else f", or null ({self.none})"
            what += null if self.none is not None else ""
        elif self.kind == "number":
            what = "a number"
            if self.low is not None:
                what += f" {'>' if self.strict else '>='} {self.low:g}"
            if self.high is not None:
                what += f" and <= {self.high:g}"
        elif self.kind == "bool":
            what = "true or false"
        elif self.kind == "choice":
            what = "one of " + ", ".join(map(str, self.choices))
        else:
            what = "a string"
        return head + what + (f" {self.note}" if self.note else "")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def select(cfg, key: str, default=None):
    """cfg's value at a dotted key, or default when any part is absent."""
    node = cfg
    for part in key.split("."):
        if node is None or not hasattr(node, "get"):
            return default
        node = node.get(part, _ABSENT)
        if node is _ABSENT:
            return default
    return node


def check(cfg, fields) -> None:
    """Raises UserError for the first field whose value is wrong."""
    for f in fields:
        v = select(cfg, f.key, _ABSENT)
        if v is _ABSENT:
            if f.default is _ABSENT:
                continue
            v = f.default
        why = f.problem(v)
        if why:
            raise UserError(why)


def positive_int(key: str, **kw) -> Field:
    return Field(key, "int", low=1, **kw)


# The run's own keys (conf/config.yaml).
FIELDS = (
    positive_int("rounds"), positive_int("clients_per_round"), positive_int("eval_every"),
    positive_int("task.batch_size"),
    Field("checkpoint_every", "int", low=0, default=0, note="(0 = no checkpoints)"),
    Field("seed", "int"),
    Field("split_seed", "int", none="follow seed"),
    Field("eval_clients", "int", low=1, also=("all",), default="all", note="(clients sampled per evaluation)"),
    Field("engine", "choice", choices=("fast", "tff"), default="fast"),
    Field("eval_per_client", "bool", default=False),
)
