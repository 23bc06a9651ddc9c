"""The two engines, behind one object each (`get`): engine=fast (JAX, engines/fast/) and
engine=tff (TensorFlow Federated, the reference, engines/tff/). Each concern has its two
halves in parallel files with the same name in both folders:

    algorithm.py   the algorithm base class (interface: algorithms/api.py)
    aggregate.py   how client updates combine: a weighted mean, or DP (dp.py)
    data.py        client data in the engine's form, read per round through a byte cache
    evaluators.py  evaluation pieces: reconstruct, global model, fine-tune, stored state
    optim.py       optimizers from config (fedrecon_bench/optimizers.py checks them)
    split.py       which batches reconstruct and which train (fedrecon_bench/splits.py)
    weighting.py   a client's weight in the mean (fedrecon_bench/weighting.py)

An Engine answers what the driver needs: `requires` (the modules it imports; `check`
refuses an engine whose modules this environment lacks, e.g. engine=tff in the TF-free
`modern` environment), `start`, `populations`, `device` and `stats` (engine facts for
summary.json).
"""
from __future__ import annotations

import importlib
import importlib.util

from fedrecon_bench.errors import UserError

NAMES = ("fast", "tff")


def get(name: str):
    """The Engine object of engine=<name> (its package imports no framework until used)."""
    if name not in NAMES:
        raise UserError(f"engine={name!r} is unknown; use one of {', '.join(NAMES)}")
    return importlib.import_module(f"{__name__}.{name}").ENGINE


def installed(name: str) -> None:
    """One line if engine=<name> needs modules this environment does not have (found, not imported)."""
    eng = get(name)
    absent = [m for m in eng.requires if importlib.util.find_spec(m) is None]
    if absent:
        raise UserError(f"engine={name} needs {', '.join(absent)}, which this environment does not have; "
                        f"{eng.install_hint}")


def _shown(v) -> str:
    return str(v).lower() if isinstance(v, bool) else str(v)


def check(cfg, spec, engine: str) -> None:
    """One line for an algorithm or a key value `engine` cannot run, naming the fix."""
    from fedrecon_bench import algorithms, schema

    why = algorithms.refusal(spec.name, engine)
    if why is not None:
        algorithms.get(spec.name, engine)  # raises the algorithm's one-line refusal
    for ek in spec.engine_keys:
        if ek.engine != engine and schema.select(cfg, ek.key) == ek.value:
            raise UserError(f"{ek.key}={_shown(ek.value)} with +algo={spec.name} is not available on "
                            f"engine={engine} ({ek.why}); use engine={ek.engine}")
    installed(engine)  # last: a refusal above names a fix that holds in every environment
