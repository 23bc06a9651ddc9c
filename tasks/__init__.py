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


def build(cfg):
    """The run's task: data from `split_seed` (null: the run's `seed`), initial weights from `seed`."""
    return get(cfg.task.name)(cfg.task, cfg.data_dir, cfg.seed, cfg.get("split_seed"))
