"""The same engine=fast on both supported JAX lines: 0.4.31 (the default environment,
pinned beside TensorFlow 2.14) and today's JAX (the `modern` environment, pyproject.toml).

Import this module before drawing any JAX random number (tasks/init.py and the engine's
algorithm base do). What it settles:

- jax 0.5 made the threefry PRNG "partitionable" by default, which changes every bit that
  `split`, `fold_in` and the samplers return for the same key. The initial weights, dropout
  masks and DP noise are drawn from the seed, so the old (non-partitionable) stream is
  kept: a seed gives the same values on both lines (tests/test_jax_compat.py).
- Keys stay the raw uint32 arrays `PRNGKey` returns (not typed `jax.random.key`s): they
  are stored in checkpoints and vmapped as plain arrays, on both lines.
"""
from __future__ import annotations

import jax


def configure() -> None:
    if hasattr(jax.config, "jax_threefry_partitionable"):  # absent once JAX drops the old stream
        jax.config.update("jax_threefry_partitionable", False)


configure()
