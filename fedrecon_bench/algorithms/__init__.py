"""Algorithm registry: one module per algorithm, named as in conf/algo/."""
import importlib

_MODULES = {
    "fedrecon": ("fedrecon_bench.algorithms.fedrecon", "FedRecon"),
    "fedavg": ("fedrecon_bench.algorithms.fedavg", "FedAvg"),
    "stateful_fedavg": ("fedrecon_bench.algorithms.stateful_fedavg", "StatefulFedAvg"),
    "centralized": ("fedrecon_bench.algorithms.centralized", "Centralized"),
}


def get(name: str):
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)
