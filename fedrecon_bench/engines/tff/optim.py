"""Optimizers on engine=tff: `tff.learning.optimizers` from config (fedrecon_bench/optimizers.py
checks it; engines/fast/optim.py is the JAX twin). TFF's reconstruction builder needs a TFF
server optimizer (TFF 0.87 refuses Keras optimizers there), so every TFF optimizer is built here."""
from __future__ import annotations

from fedrecon_bench.optimizers import check, hparams


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
