"""The algorithm registry: every folder here with a SPEC in its __init__.py is an algorithm
(algorithms/api.py says what a folder holds). Nothing to register by hand."""
from __future__ import annotations

import functools
import importlib
import os
import pkgutil

from fedrecon_bench.algorithms.api import Refusal, Spec
from fedrecon_bench.errors import UserError

ENGINES = ("fast", "tff")


@functools.lru_cache(maxsize=None)
def specs() -> dict[str, Spec]:
    """name -> Spec of every algorithm folder (imports only the light __init__ modules)."""
    out = {}
    for m in pkgutil.iter_modules([os.path.dirname(__file__)]):
        if m.ispkg:
            spec = getattr(importlib.import_module(f"{__name__}.{m.name}"), "SPEC", None)
            if isinstance(spec, Spec):
                if spec.name != m.name:
                    raise ValueError(f"algorithms/{m.name}: SPEC.name is {spec.name!r}")
                out[spec.name] = spec
    return dict(sorted(out.items()))


def spec(name: str) -> Spec:
    found = specs()
    if name not in found:
        raise UserError(f"unknown algo {name!r}; available: {', '.join(found)} (use +algo=<name>)")
    return found[name]


def refusal(name: str, engine: str) -> str | None:
    """The one-line reason an algorithm does not run on `engine`, or None."""
    impl = spec(name).engines.get(engine)
    if impl is None:
        return f"+algo={name} has no engine={engine} implementation"
    return impl.reason if isinstance(impl, Refusal) else None


def get(name: str, engine: str = "tff"):
    """The algorithm's class for `engine` (its module is imported only now: TFF or JAX)."""
    why = refusal(name, engine)
    if why is not None:
        other = [e for e in ENGINES if e != engine and refusal(name, e) is None]
        raise UserError(f"+algo={name} does not run on engine={engine}: {why}"
                        + (f"; use engine={other[0]}" if other else ""))
    module, _, cls = spec(name).engines[engine].partition(":")
    return getattr(importlib.import_module(f"{__name__}.{name}.{module}"), cls)
