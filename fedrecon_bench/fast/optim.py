"""The suite's optimizers (fedrecon_bench/optimizers.py) as JAX functions for the fast engine.

Same config, same update rules as `tff.learning.optimizers` (sgdm, adam, yogi,
adagrad), so both engines take the same steps. States and weights are dicts.
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
        return {"step": jnp.zeros((), jnp.int32), "acc": zeros(),
                "pre": {k: jnp.full_like(v, self.initial_preconditioner) for k, v in w.items()}}

    def next(self, state: dict, w: dict, g: dict) -> tuple[dict, dict]:
        lr = jnp.float32(self.lr)
        if self.plain_sgd:
            return state, {k: w[k] - lr * g[k] for k in w}
        if self.name == "sgdm":
            acc = {k: self.momentum * state["acc"][k] + g[k] for k in w}
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
    lr = float(opt.learning_rate)
    get = lambda k, d: float(opt[k]) if opt.get(k) is not None else d
    if opt.name == "sgd":
        return Optimizer("sgd", lr)
    if opt.name == "sgdm":
        return Optimizer("sgdm", lr, momentum=get("momentum", 0.9))
    if opt.name == "adam":
        return Optimizer("adam", lr, beta_1=get("beta_1", 0.9), beta_2=get("beta_2", 0.999),
                         epsilon=get("epsilon", 1e-7))
    if opt.name == "yogi":
        return Optimizer("yogi", lr, beta_1=get("beta_1", 0.9), beta_2=get("beta_2", 0.999),
                         epsilon=get("epsilon", 1e-3), initial_preconditioner=1e-6)
    return Optimizer("adagrad", lr, epsilon=get("epsilon", 1e-7), initial_preconditioner=0.1)
