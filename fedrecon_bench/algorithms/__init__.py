"""Algorithm registry: one module per algorithm and engine, named as in conf/algo/.

engine=tff runs on TensorFlow Federated (the reference); engine=fast runs the same
algorithm in JAX with all clients of a round at once (algorithms/fast/).
"""
import importlib

from fedrecon_bench.errors import UserError

NAMES = {
    "fedrecon": "FedRecon",
    "fedavg": "FedAvg",
    "stateful_fedavg": "StatefulFedAvg",
    "centralized": "Centralized",
}
ENGINES = ("tff", "fast")
FINETUNE_VARIABLES = ("all", "local", "global")  # algo.finetune.variables (FedAvg + fine-tuning)


def get(name: str, engine: str = "tff"):
    package = "fedrecon_bench.algorithms" + (".fast" if engine == "fast" else "")
    return getattr(importlib.import_module(f"{package}.{name}"), NAMES[name])


def client_schedule(a) -> tuple[int, int | None]:
    """(epochs, step cap) of a FedAvg client's training, checked (both engines)."""
    epochs, cap = a.get("client_epochs", 1), a.get("client_steps_max")
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise UserError(f"algo.client_epochs={epochs!r} must be an integer >= 1")
    if cap is not None and (not isinstance(cap, int) or isinstance(cap, bool) or cap < 1):
        raise UserError(f"algo.client_steps_max={cap!r} must be null (no cap) or an integer >= 1")
    return epochs, cap
