"""The MovieLens model in JAX for engine=fast (tasks/model.py), and the
initial weights both engines start from."""
from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from tasks import init
from tasks.model import FastModel, masked_mean


class MovieLensFast(FastModel):
    """keras_model's model, loss and metrics in JAX. The item tables are sparse: a
    client's batches look up a few of their rows."""

    def __init__(self, c, num_items: int):
        self.biases, self.l2, self.batch_size = bool(c.biases), float(c.l2), int(c.batch_size)
        self.num_items, self.dim = int(num_items), int(c.embedding_dim)
        # The authors' biases: also a global scalar bias (zero start), user/item biases uniform.
        self.global_bias = self.biases and bool(c.get("global_bias", False))
        self.bias_init = c.get("bias_init", "zeros")
        self.threshold = float(c.get("accuracy_threshold", 0.5))
        self.global_names = ("item_embedding",) + (("item_bias",) if self.biases else ()) + (
            ("global_bias",) if self.global_bias else ())
        self.local_names = ("user_embedding",) + (("user_bias",) if self.biases else ())
        self.sparse = {n: "item" for n in ("item_embedding", "item_bias") if n in self.global_names}

    @property
    def model_order(self):  # the Keras model creates item, user, then the bias layers
        return ("item_embedding", "user_embedding") + (("item_bias", "user_bias") if self.biases else ()) + (
            ("global_bias",) if self.global_bias else ())

    def init(self, seed: int):
        g = {"item_embedding": init.uniform(seed, 1, (self.num_items, self.dim))}
        loc = {"user_embedding": init.uniform(seed, 2, (1, self.dim))}
        if self.biases:  # zeros (Keras' "zeros"), or the authors' Keras "uniform"
            if self.bias_init == "uniform":
                g["item_bias"], loc["user_bias"] = (init.uniform(seed, 3, (self.num_items, 1)),
                                                    init.uniform(seed, 4, (1, 1)))
            else:
                g["item_bias"], loc["user_bias"] = init.zeros((self.num_items, 1)), init.zeros((1, 1))
        if self.global_bias:
            g["global_bias"] = init.zeros((1,))
        return g, loc

    def inputs(self, ex):
        return {"item": ex["item"].astype(np.int32), "rating": ex["rating"]}

    def predict(self, p, batch, train=False, rng=None):
        item, user = p["item_embedding"], p["user_embedding"]  # [bs, d] rows, [1, d]
        pred = item @ user[0]  # a dot product per row: one XLA dot (measured faster than sum(*))
        terms = [user, item]
        if self.biases:
            pred = pred + p["item_bias"][:, 0] + p["user_bias"][0, 0]
            terms += [p["item_bias"], p["user_bias"]]
        if self.global_bias:
            pred = pred + p["global_bias"][0]
        penalty = self.l2 * sum(jnp.sum(jnp.square(t), axis=1) for t in terms) if self.l2 > 0 else 0.0
        return pred, penalty

    def loss(self, batch, pred):
        rating, penalty = pred
        return masked_mean(jnp.square(batch["rating"] - rating) + penalty, batch["mask"])

    def stats(self, batch, pred):
        err, m = batch["rating"] - pred[0], batch["mask"]
        return {"hits": jnp.sum((jnp.abs(err) <= self.threshold) * m), "sq_err": jnp.sum(jnp.square(err) * m),
                "count": jnp.sum(m)}

    def metrics(self, s):
        n = max(float(s["count"]), 1.0)
        return {"rating_accuracy": float(s["hits"]) / n, "rmse": math.sqrt(float(s["sq_err"]) / n)}
