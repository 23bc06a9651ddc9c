"""TFF optimizers from config (`{name, learning_rate, ...}`).

FedRecon's server optimizer must be a `tff.learning.optimizers` one (TFF 0.87
refuses Keras optimizers there), so every optimizer in the suite is built here.
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

NAMES = ("sgd", "sgdm", "adam", "yogi", "adagrad")


def check(opt, key: str) -> None:
    """Validates one optimizer config before anything is built."""
    if opt is None or "name" not in opt:
        raise UserError(f"{key}: missing optimizer config; set {key}.name (one of {', '.join(NAMES)})")
    if opt.name not in NAMES:
        raise UserError(f"{key}.name={opt.name!r} is unknown; use one of {', '.join(NAMES)}")
    lr = opt.get("learning_rate")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise UserError(f"{key}.learning_rate={lr!r} must be a positive number (e.g. {key}.learning_rate=0.1)")


def build(opt, key: str):
    import tensorflow_federated as tff

    check(opt, key)
    o, lr = tff.learning.optimizers, float(opt.learning_rate)
    if opt.name == "sgd":
        return o.build_sgdm(learning_rate=lr)
    if opt.name == "sgdm":
        return o.build_sgdm(learning_rate=lr, momentum=float(opt.get("momentum", 0.9)))
    kw = {k: float(opt[k]) for k in ("beta_1", "beta_2", "epsilon") if opt.get(k) is not None}
    if opt.name == "adam":
        return o.build_adam(learning_rate=lr, **kw)
    if opt.name == "yogi":
        return o.build_yogi(learning_rate=lr, **kw)
    return o.build_adagrad(learning_rate=lr, **{k: v for k, v in kw.items() if k == "epsilon"})
