"""What an algorithm declares, and all the driver may call on it.

An algorithm is one folder, `fedrecon_bench/algorithms/<name>/`, plus `conf/algo/<name>.yaml`:

    __init__.py   the paper's pseudo-code (docstring) and SPEC, the declaration below
    fast.py       engine=fast (JAX): the class SPEC.engines["fast"] names
    tff.py        engine=tff (TensorFlow Federated), or a one-line Refusal in SPEC.engines

The registry (algorithms/__init__.py) finds the folders itself. Shared code (driver,
validation, weighting, privacy, engines) reads SPEC and calls the interface of
`Algorithm`; it never tests an algorithm's name.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Mapping


@dataclasses.dataclass(frozen=True)
class Refusal:
    """An engine the algorithm does not run on: why, in one line (the error names the fix)."""
    reason: str


@dataclasses.dataclass(frozen=True)
class EngineKey:
    """A config value only one engine runs, e.g. a client-step option TFF's builder lacks."""
    key: str        # dotted config key, e.g. "algo.jointly_train_variables"
    value: Any      # the value that needs `engine`
    engine: str     # the one engine that runs it
    why: str        # what the other engine lacks, for the one-line refusal


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str                       # as conf/algo/<name>.yaml and +algo=<name>
    title: str                      # one line: the method and its paper
    engines: Mapping[str, Any]      # engine -> "module:Class" in the folder, or a Refusal
    federated: bool = True          # False: centralized training, no client updates (no DP, no weighting)
    sends: str = "global"           # what a client receives and sends: "global" variables, or "all"
                                    # (the task's local layers are trained as global ones)
    weightings: tuple = ("examples",)  # algo.client_weighting values it can aggregate with
    dp: bool = True                 # can its client updates go through the DP aggregator
    client_state: bool = False      # keeps per-client state across rounds (a client store)
    eval_modes: tuple = ("",)       # evaluation modes it can report, headline first ("" = one mode)
    engine_keys: tuple = ()         # EngineKey values
    fields: tuple = ()              # schema.Field of its algo.* keys, checked before anything loads

    def __post_init__(self):
        if self.sends not in ("global", "all"):
            raise ValueError(f"{self.name}: sends={self.sends!r} must be 'global' or 'all'")

    def declares(self, key: str) -> bool:
        """Whether `key` is one of its declared fields: a preset may set a key for some
        algorithms only (algo.eval for FedAvg), which another one then ignores."""
        return any(f.key == key for f in self.fields)


Weights = collections.namedtuple("Weights", "trainable non_trainable names")
Weights.__new__.__defaults__ = ((), ())


class Algorithm:
    """The interface both engines' algorithms implement (engines/<engine>/algorithm.py has
    each engine's base). States are engine-specific; the driver only passes them back."""

    spec: Spec
    client_store = None  # a client_store.Store when spec.client_state, else None

    def initialize(self):
        """The server state before round 1."""
        raise NotImplementedError

    def next(self, state, clients, client_ids) -> tuple[Any, dict]:
        """One round on the sampled clients: (new state, the round's training metrics)."""
        raise NotImplementedError

    def evaluate(self, state, clients, client_ids, seen: bool = False, recon_from=None,
                 records=None) -> dict:
        """{mode: metrics}, headline first ("" when only one). `records` (records.Records),
        when given, receives every evaluated client's own metrics, mode by mode."""
        raise NotImplementedError

    def eval_modes(self, seen: bool) -> tuple:
        """The modes `evaluate` reports for unseen or seen users, headline first."""
        raise NotImplementedError

    def global_weights(self, state) -> Weights:
        """What the server holds, numpy arrays in the task model's order, with their names."""
        raise NotImplementedError

    def dp_clip(self, state) -> float | None:
        """The DP clip the next round would use (None without DP)."""
        return None
