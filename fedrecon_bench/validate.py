"""Config checks that run before any data is read or any model is built: every group's
declared schema (schema.py), then what relates keys across groups, read from the
algorithm's declaration (algorithms/api.py) and the engine's refusals."""
from __future__ import annotations

from fedrecon_bench import algorithms, engines, optimizers, privacy, schema, splits, weighting
from fedrecon_bench.errors import UserError


def check_config(cfg) -> None:
    import tasks  # the task's own keys and metric names, before anything is loaded

    task_cls = tasks.get(cfg.task.name)
    spec = algorithms.spec(cfg.algo.name)
    schema.check(cfg, (*schema.FIELDS, *task_cls.fields, *spec.fields))
    for key in ("server_optimizer", "client_optimizer", "reconstruction_optimizer"):
        if key in cfg.algo:
            optimizers.check(cfg.algo[key], f"algo.{key}")
    if "finetune" in cfg.algo:
        optimizers.check(cfg.algo.finetune.optimizer, "algo.finetune.optimizer")
    weighting.check(cfg, spec, task_cls.metric_names)
    splits.check(cfg.split.train, "split.train", evaluation=False)
    splits.check(cfg.split.eval, "split.eval", evaluation=True)
    privacy.check(cfg, spec)
    engines.check(cfg, spec, cfg.get("engine", "fast"))


def check_population(cfg, data) -> None:
    """Checks that need the loaded data, still before training."""
    n = len(data.train)
    if cfg.clients_per_round > n:
        raise UserError(
            f"clients_per_round={cfg.clients_per_round} is larger than the {n} training clients; "
            f"set clients_per_round<={n}")
    for split in ("val", "test"):
        m = len(getattr(data, split))
        if m == 0:
            raise UserError(f"the {split} population is empty; use more users (task.max_users)")
        ec = cfg.get("eval_clients", "all")
        if ec != "all" and ec > m:
            raise UserError(f"eval_clients={ec} is larger than the {m} {split} clients; "
                            f"set eval_clients<={m} or eval_clients=all")
    if data.split_by == "example":  # seen users reconstruct from their training data
        for split in ("val", "test"):
            missing = [c for c in getattr(data, split).ids if data.train.index_of(c) is None]
            if missing:
                raise UserError(
                    f"task.split_by=example: {len(missing)} {split} clients (e.g. {missing[0]!r}) have "
                    "no training data; use task.split_by=user or give every client more examples")
