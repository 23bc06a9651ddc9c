"""What a task provides to engine=fast: its model, loss and metrics as pure JAX functions
(and, through `init`, the initial weights both engines start from).

A task's `fast_model(info)` returns a `FastModel`. It must compute what the task's
Keras model, loss and metrics compute (tests compare the two engines to 1e-5):

- Parameters are dicts name -> array. `global_names` / `local_names` follow the
  order of the Keras model's global / local trainable weights (`KerasParts`), so
  weights move between the engines by position; `model_order` lists all names in
  the Keras model's own order (what TFF's FedAvg reports).
- `init(seed)` gives the initial (global, local) values, the one definition both
  engines start from (tasks/init.py; the Keras model is built with these values as
  Constant initializers).
- `inputs(examples)` turns one client's example arrays (`ClientSet.examples[i]`)
  into model-ready per-example arrays (leading axis = examples): what
  `task.client_dataset` batches. The engine cuts them into batches of
  `batch_size`, padding the last one; each batch dict also carries `mask` [bs]
  (1.0 for a real example, 0.0 for padding).
- `sparse = {param: field}` names global embedding tables whose rows are looked
  up by the integer input `field` ([bs] per batch). For those, `predict` gets the
  looked-up rows ([bs, ...]) in place of the table, and the engine updates only
  the rows a client touches (a client uses a few rows of a large table).
- `loss(batch, pred)`: the batch's Keras loss value, the one TFF differentiates
  (e.g. the mean over the batch's real examples). Padding contributes nothing,
  and an all-padding batch gives 0, not NaN.
- `stats(batch, pred)`: additive metric states (sums over real examples), so
  clients and batches combine by adding; `metrics(stats)` finalizes them into
  the task's metric names (all but `loss`, which the engine tracks).
"""
from __future__ import annotations

import numpy as np


class FastModel:
    global_names: tuple[str, ...] = ()
    local_names: tuple[str, ...] = ()
    sparse: dict[str, str] = {}
    batch_size: int = 1
    # How engine=fast runs a round's clients on a CPU (fast.clients=auto; GPUs use vmap), the
    # most clients in one vmapped group, and a lockstep iteration's overhead in lane-steps
    # (engines/fast/execute.py: plan).
    client_mode: str = "vmap"
    max_group: int = 128
    lockstep_overhead: float = 16.0

    @property
    def model_order(self) -> tuple[str, ...]:
        return (*self.global_names, *self.local_names)

    def init(self, seed: int) -> tuple[dict, dict]:
        """(global, local) initial values, numpy float32 arrays."""
        raise NotImplementedError

    def inputs(self, examples: dict) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def predict(self, params: dict, batch: dict, train: bool, rng):
        raise NotImplementedError

    def loss(self, batch: dict, pred):
        raise NotImplementedError

    def stats(self, batch: dict, pred) -> dict:
        raise NotImplementedError

    def metrics(self, stats: dict) -> dict:
        raise NotImplementedError

    # --- weights shared with the Keras model (engine=tff) --------------------
    def from_keras(self, parts) -> tuple[dict, dict]:
        """(global, local) parameter dicts holding the Keras model's current values."""
        values = lambda layers: [np.asarray(w.numpy()) for l in layers for w in l.trainable_weights]
        g, loc = values(parts.global_layers), values(parts.local_layers)
        if len(g) != len(self.global_names) or len(loc) != len(self.local_names):
            raise ValueError(f"{type(self).__name__}: names {self.global_names}/{self.local_names} "
                             f"do not match the Keras weights ({len(g)} global, {len(loc)} local)")
        return dict(zip(self.global_names, g)), dict(zip(self.local_names, loc))


def masked_mean(values, mask):
    """Mean over real examples; 0 for an all-padding batch."""
    import jax.numpy as jnp

    return jnp.sum(values * mask) / jnp.maximum(jnp.sum(mask), 1.0)
