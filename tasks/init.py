"""Initial weights, defined once in JAX for both engines (engine=tff loads them into its
Keras model through Constant initializers), with the distributions Keras would use.

Each value draws from its own key, `fold_in(PRNGKey(seed), k)`, so adding a layer does
not change the others. Values are numpy float32 arrays.
"""
from __future__ import annotations

import math

import jax
import numpy as np

from fedrecon_bench.engines.fast import jax_compat  # noqa: F401  (one random stream on every JAX line)


def _key(seed: int, k: int):
    return jax.random.fold_in(jax.random.PRNGKey(seed), k)


def uniform(seed: int, k: int, shape, limit: float = 0.05) -> np.ndarray:
    """Keras RandomUniform(-limit, limit) (Embedding's default, limit 0.05)."""
    return np.asarray(jax.random.uniform(_key(seed, k), shape, minval=-limit, maxval=limit))


def glorot(seed: int, k: int, shape) -> np.ndarray:
    """Keras GlorotUniform: U(+-sqrt(6 / (fan_in + fan_out))); a conv kernel's fans count
    its receptive field (kh * kw * channels), as Keras does."""
    receptive = math.prod(shape[:-2]) if len(shape) > 2 else 1
    fan_in, fan_out = shape[-2] * receptive, shape[-1] * receptive
    return uniform(seed, k, shape, math.sqrt(6.0 / (fan_in + fan_out)))


def orthogonal(seed: int, k: int, shape) -> np.ndarray:
    """Keras Orthogonal(gain=1) (an LSTM's recurrent kernel)."""
    return np.asarray(jax.nn.initializers.orthogonal()(_key(seed, k), shape, np.float32))


def zeros(shape) -> np.ndarray:
    return np.zeros(shape, np.float32)


def lstm_bias(units: int) -> np.ndarray:
    """Keras LSTM's bias with unit_forget_bias=True: gates i, f, c, o; the forget gate at 1."""
    b = np.zeros(4 * units, np.float32)
    b[units:2 * units] = 1.0
    return b
