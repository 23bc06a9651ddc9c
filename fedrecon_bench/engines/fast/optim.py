"""Optimizers on engine=fast: the suite's optimizers (fedrecon_bench/optimizers.py) in JAX
(engines/tff/optim.py is the TFF twin).

Same config, same update rules as `tff.learning.optimizers` (sgdm, adam, yogi,
adagrad) and the suite's additions (Nesterov momentum, the initial accumulator and
step; fedrecon_bench/optimizers.py), so both engines take the same steps. States and
weights are dicts.
"""
from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from fedrecon_bench import optimizers


@dataclasses.dataclass(frozen=True)
class Optimizer:
    name: str
    lr: float
    momentum: float | None = None
    beta_1: float = 0.9
    beta_2: float = 0.999
    epsilon: float = 1e-7
    initial_preconditioner: float = 0.0
    nesterov: bool = False
    initial_step: int = 0

    @property
    def plain_sgd(self) -> bool:
        """A step is w - lr * g: only rows with a gradient change (sparse updates are exact)."""
        return self.name == "sgd" or (self.name == "sgdm" and not self.momentum)

    def init(self, w: dict) -> dict:
        zeros = lambda: {k: jnp.zeros_like(v) for k, v in w.items()}
        if self.plain_sgd:
            return {}
        if self.name == "sgdm":
            return {"acc": zeros()}
        if self.name == "adagrad":
            return {"pre": {k: jnp.full_like(v, self.initial_preconditioner) for k, v in w.items()}}
        return {"step": jnp.full((), self.initial_step, jnp.int32), "acc": zeros(),
                "pre": {k: jnp.full_like(v, self.initial_preconditioner) for k, v in w.items()}}

    def next(self, state: dict, w: dict, g: dict) -> tuple[dict, dict]:
        lr = jnp.float32(self.lr)
        if self.plain_sgd:
            return state, {k: w[k] - lr * g[k] for k in w}
        if self.name == "sgdm":
            acc = {k: self.momentum * state["acc"][k] + g[k] for k in w}
            if self.nesterov:  # Keras SGD(nesterov=True)
                return {"acc": acc}, {k: w[k] - lr * (g[k] + self.momentum * acc[k]) for k in w}
            return {"acc": acc}, {k: w[k] - lr * acc[k] for k in w}
        if self.name == "adagrad":
            pre = {k: state["pre"][k] + jnp.square(g[k]) for k in w}
            return {"pre": pre}, {k: w[k] - lr * g[k] / jnp.sqrt(pre[k] + self.epsilon) for k in w}
        step = state["step"] + 1
        t = step.astype(jnp.float32)
        nlr = lr * jnp.sqrt(1.0 - jnp.power(self.beta_2, t)) / (1.0 - jnp.power(self.beta_1, t))
        acc = {k: state["acc"][k] + (g[k] - state["acc"][k]) * (1.0 - self.beta_1) for k in w}
        if self.name == "adam":
            pre = {k: state["pre"][k] + (jnp.square(g[k]) - state["pre"][k]) * (1.0 - self.beta_2)
                   for k in w}
        else:  # yogi
            pre = {k: state["pre"][k] + (1.0 - self.beta_2) * jnp.sign(jnp.square(g[k]) - state["pre"][k])
                   * jnp.square(g[k]) for k in w}
        new = {k: w[k] - nlr * acc[k] / (jnp.sqrt(pre[k]) + self.epsilon) for k in w}
        return {"step": step, "acc": acc, "pre": pre}, new


def build(opt, key: str) -> Optimizer:
    """From the same config as optimizers.build (validated the same way)."""
    optimizers.check(opt, key)
    h = optimizers.hparams(opt)
    if opt.name == "sgd":
        return Optimizer("sgd", h["lr"])
    if opt.name == "sgdm":
        return Optimizer("sgdm", h["lr"], momentum=h["momentum"], nesterov=h["nesterov"])
    if opt.name == "adagrad":
        return Optimizer("adagrad", h["lr"], epsilon=h["epsilon"], initial_preconditioner=h["accumulator"])
    return Optimizer(opt.name, h["lr"], beta_1=h["beta_1"], beta_2=h["beta_2"], epsilon=h["epsilon"],
                     initial_preconditioner=h["accumulator"], initial_step=h["initial_step"])
