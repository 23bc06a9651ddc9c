"""TFF optimizers from config (`{name, learning_rate, ...}`).

FedRecon's server optimizer must be a `tff.learning.optimizers` one (TFF 0.87
refuses Keras optimizers there), so every optimizer in the suite is built here.
Beyond TFF's own arguments, the authors' optimizer flags:

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


def build(opt, key: str):
    import tensorflow_federated as tff

    check(opt, key)
    o, h = tff.learning.optimizers, hparams(opt)
    lr = h["lr"]
    if opt.name == "sgd":
        return o.build_sgdm(learning_rate=lr)
    if opt.name == "sgdm":
        return _nesterov(lr, h["momentum"]) if h["nesterov"] else o.build_sgdm(learning_rate=lr,
                                                                                 momentum=h["momentum"])
    if opt.name == "adagrad":
        return o.build_adagrad(learning_rate=lr, initial_preconditioner_value=h["accumulator"],
                               epsilon=h["epsilon"])
    kw = {k: h[k] for k in ("beta_1", "beta_2", "epsilon")}
    inner = (o.build_adam(learning_rate=lr, **kw) if opt.name == "adam" else
             o.build_yogi(learning_rate=lr, initial_preconditioner_value=h["accumulator"], **kw))
    return _start_at(inner, h["initial_step"]) if h["initial_step"] else inner


def _start_at(inner, step: int):
    """`inner` (TFF adam / yogi) whose state's step count starts at `step`."""
    import tensorflow_federated as tff

    class StartAt(tff.learning.optimizers.Optimizer):
        def initialize(self, specs):
            state = inner.initialize(specs)
            state["step"] = step
            return state

        def next(self, state, weights, gradients):
            return inner.next(state, weights, gradients)

        def get_hparams(self, state):
            return inner.get_hparams(state)

        def set_hparams(self, state, hparams):
            return inner.set_hparams(state, hparams)

    return StartAt()


def _nesterov(lr: float, momentum: float):
    """SGD with Nesterov momentum, as Keras' SGD(nesterov=True) steps:
    acc <- momentum * acc + g;  w <- w - lr * (g + momentum * acc)."""
    import collections

    import tensorflow as tf
    import tensorflow_federated as tff

    class Nesterov(tff.learning.optimizers.Optimizer):
        def initialize(self, specs):
            return collections.OrderedDict(
                learning_rate=lr, momentum=momentum,
                accumulator=tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs))

        def next(self, state, weights, gradients):
            m, rate = state["momentum"], state["learning_rate"]
            acc = tf.nest.map_structure(lambda a, g: m * a + g, state["accumulator"], gradients)
            new = tf.nest.map_structure(lambda w, g, a: w - rate * (g + m * a), weights, gradients, acc)
            return collections.OrderedDict(learning_rate=rate, momentum=m, accumulator=acc), new

        def get_hparams(self, state):
            return collections.OrderedDict(learning_rate=state["learning_rate"], momentum=state["momentum"])

        def set_hparams(self, state, hparams):
            return collections.OrderedDict(state, **hparams)

    return Nesterov()
