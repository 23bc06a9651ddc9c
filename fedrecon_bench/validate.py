"""Config checks that run before any data is read or any model is built."""
from __future__ import annotations

from fedrecon_bench import optimizers, privacy, splits, weighting
from fedrecon_bench.errors import UserError

# engine=fast only: TFF's FedRecon client step has no round number, trains only the global
# variables after reconstruction and counts no metrics during it (algorithms/fedrecon.py).
FAST_ONLY = {"split.train.recon_epochs_constant": False, "algo.jointly_train_variables": True,
             "algo.evaluate_reconstruction": True}


def _positive_int(cfg, key: str, allow_none: bool = False) -> None:
    v = cfg
    for part in key.split("."):
        v = v.get(part) if v is not None else None
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        extra = " or null (no cap)" if allow_none else ""
        raise UserError(f"{key}={v!r} must be an integer >= 1{extra}")


def check_config(cfg) -> None:
    for key in ("rounds", "clients_per_round", "eval_every", "task.batch_size"):
        _positive_int(cfg, key)
    for key in ("max_examples_per_user", "max_users"):  # 0 would silently mean "no cap"
        if key in cfg.task:
            _positive_int(cfg, f"task.{key}", allow_none=True)
    if "embedding_dim" in cfg.task:
        _positive_int(cfg, "task.embedding_dim")
    ce = cfg.get("checkpoint_every", 0)
    if not isinstance(ce, int) or isinstance(ce, bool) or ce < 0:
        raise UserError(f"checkpoint_every={ce!r} must be an integer >= 0 (0 = no checkpoints)")
    if not isinstance(cfg.seed, int):
        raise UserError(f"seed={cfg.seed!r} must be an integer")
    ss = cfg.get("split_seed")
    if ss is not None and (not isinstance(ss, int) or isinstance(ss, bool)):
        raise UserError(f"split_seed={ss!r} must be an integer, or null (follow seed)")
    ec = cfg.get("eval_clients", "all")
    if ec != "all" and (not isinstance(ec, int) or isinstance(ec, bool) or ec < 1):
        raise UserError(f"eval_clients={ec!r} must be all or an integer >= 1 (clients sampled per evaluation)")
    for key in ("jointly_train_variables", "evaluate_reconstruction"):
        if not isinstance(cfg.algo.get(key, False), bool):
            raise UserError(f"algo.{key}={cfg.algo.get(key)!r} must be true or false")
    import tasks  # the task's metric names, before anything is loaded

    weighting.check(cfg, getattr(tasks.get(cfg.task.name), "metric_names", ()))
    for key in ("server_optimizer", "client_optimizer", "reconstruction_optimizer"):
        if key in cfg.algo:
            optimizers.check(cfg.algo[key], f"algo.{key}")
    splits.check(cfg.split.train, "split.train", evaluation=False)
    splits.check(cfg.split.eval, "split.eval", evaluation=True)
    privacy.check(cfg)
    if cfg.get("engine") == "tff" and cfg.algo.name in ("fedrecon", "fedavg"):
        tff_refusals(cfg)


def tff_refusals(cfg) -> None:
    """One line for an option engine=tff's FedRecon / FedAvg cannot run (see FAST_ONLY)."""
    if cfg.algo.name == "fedavg":
        if weighting.kind(cfg) == "tokens":
            raise UserError("algo.client_weighting=tokens with +algo=fedavg is not available on engine=tff "
                            "(TFF's build_weighted_fed_avg weights by examples or uniformly); use engine=fast")
        return
    for key, value in FAST_ONLY.items():
        group, _, name = key.rpartition(".")
        node = cfg.split.train if group == "split.train" else cfg.algo
        if node.get(name, not value) == value:
            raise UserError(f"{key}={str(value).lower()} is not available on engine=tff (TFF's FedRecon "
                            "client step cannot run it); use engine=fast")


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
