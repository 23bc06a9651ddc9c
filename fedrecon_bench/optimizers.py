"""Optimizer configs (`{name, learning_rate, ...}`): checked once here, built by each engine
(engines/tff/optim.py: `tff.learning.optimizers`; engines/fast/optim.py: the same rules
in JAX). Beyond TFF's own arguments, the authors' optimizer flags:

  sgdm:  nesterov (Keras SGD's Nesterov momentum: w -= lr * (g + momentum * acc))
  yogi, adagrad:  initial_accumulator_value (TFF's initial_preconditioner_value;
                  the authors' Yogi runs 0.0, TFF's default is 1e-6)
  adam, yogi:  initial_step: the bias-correction step count the state starts at.
               The authors' server optimizer starts at 1 (their initialisation applies
               one all-zero update), so round r corrects with t = r + 1; TFF's with t = r.
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

NAMES = ("sgd", "sgdm", "adam", "yogi", "adagrad")
DEFAULT_ACCUMULATOR = {"yogi": 1e-6, "adagrad": 0.1}  # TFF's initial_preconditioner_value
EXTRA = {"nesterov": ("sgdm",), "initial_accumulator_value": ("yogi", "adagrad"),
         "initial_step": ("adam", "yogi"),
         "momentum": ("sgdm",)}  # refused elsewhere: plain sgd would silently ignore it


def check(opt, key: str) -> None:
    """Validates one optimizer config before anything is built."""
    if opt is None or "name" not in opt:
        raise UserError(f"{key}: missing optimizer config; set {key}.name (one of {', '.join(NAMES)})")
    if opt.name not in NAMES:
        raise UserError(f"{key}.name={opt.name!r} is unknown; use one of {', '.join(NAMES)}")
    lr = opt.get("learning_rate")
    if not isinstance(lr, (int, float)) or isinstance(lr, bool) or not lr > 0:
        raise UserError(f"{key}.learning_rate={lr!r} must be a positive number (e.g. {key}.learning_rate=0.1)")
    for name, owners in EXTRA.items():
        v = opt.get(name)
        if v is None:
            continue
        if opt.name not in owners:
            raise UserError(f"{key}.{name} applies to {' / '.join(owners)}, not {opt.name}; "
                            f"remove it or set {key}.name={owners[0]}")
        ok = {"nesterov": isinstance(v, bool),
              "initial_accumulator_value": isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0,
              "initial_step": isinstance(v, int) and not isinstance(v, bool) and v >= 0,
              "momentum": isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < 1}[name]
        if not ok:
            raise UserError(f"{key}.{name}={v!r} must be " + {
                "nesterov": "true or false", "initial_accumulator_value": "a number >= 0",
                "initial_step": "an integer >= 0", "momentum": "a number in [0, 1)"}[name])


def hparams(opt) -> dict:
    """The config's numbers with their defaults (shared with fast/optim.py)."""
    get = lambda k, d: float(opt[k]) if opt.get(k) is not None else d
    return {"lr": float(opt.learning_rate), "momentum": get("momentum", 0.9),
            "nesterov": bool(opt.get("nesterov") or False),
            "beta_1": get("beta_1", 0.9), "beta_2": get("beta_2", 0.999),
            "epsilon": get("epsilon", 1e-3 if opt.name == "yogi" else 1e-7),
            "accumulator": get("initial_accumulator_value", DEFAULT_ACCUMULATOR.get(opt.name, 0.0)),
            "initial_step": int(opt.get("initial_step") or 0)}
