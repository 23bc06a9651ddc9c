"""Task registry: one module per task, named as in conf/task/."""
import importlib

_MODULES = {
    "movielens": ("tasks.movielens", "MovieLens"),
    "emnist": ("tasks.emnist", "EMNIST"),
    "nwp": ("tasks.nwp", "NWP"),
}


def get(name: str):
    module, cls = _MODULES[name]
    return getattr(importlib.import_module(module), cls)
