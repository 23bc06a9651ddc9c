"""Algorithm registry: one module per algorithm and engine, named as in conf/algo/.

engine=tff runs on TensorFlow Federated (the reference); engine=fast runs the same
algorithm in JAX with all clients of a round at once (algorithms/fast/).
"""
import importlib

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
