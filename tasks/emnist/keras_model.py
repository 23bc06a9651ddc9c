"""The EMNIST CNN (+ user embedding), loss and metrics in Keras for engine=tff, built
from the JAX model's initial weights (Constant initializers)."""
from __future__ import annotations

import collections

import numpy as np
import tensorflow as tf

from tasks.base import KerasParts
from tasks.movielens.keras_model import UserVector


def client_dataset(ex, batch_size: int):
    # Batched once, never reshuffled: FedRecon's split (even batches reconstruct,
    # odd ones train/measure) must see the same batches on every pass. The
    # examples were shuffled (seeded) in build_populations.
    x, scale = ex["x"], 1.0 / 255.0 if ex["x"].dtype == np.uint8 else 1.0

    def to_model(x, y):
        x = tf.reshape(tf.cast(x, tf.float32) * scale, [-1, 28, 28, 1])
        return collections.OrderedDict(x=x, y=tf.reshape(tf.cast(y, tf.int32), [-1, 1]))

    return tf.data.Dataset.from_tensor_slices((x, ex["y"])).batch(batch_size).map(to_model)


def keras_parts(c, num_classes: int, seed: int, g0: dict, l0: dict) -> KerasParts:
    L, const = tf.keras.layers, tf.keras.initializers.Constant
    layer = lambda cls, name, *a, **kw: cls(*a, kernel_initializer=const(g0[f"{name}/kernel"]),
                                            bias_initializer=const(g0[f"{name}/bias"]), name=name, **kw)
    pixels = L.Input(shape=(28, 28, 1), name="pixels")
    conv1 = layer(L.Conv2D, "conv1", 32, 3, activation="relu")
    conv2 = layer(L.Conv2D, "conv2", 64, 3, activation="relu")
    dense = layer(L.Dense, "dense", 128, activation="relu")

    def drop(rate, k):  # task.dropout=false: no Dropout layer at all (it has no weights)
        return L.Dropout(rate, seed=seed * 1000 + k) if c.dropout else (lambda h: h)

    h = L.MaxPool2D(2)(conv2(conv1(pixels)))
    h = L.Flatten()(drop(0.25, 4)(h))
    h = drop(0.5, 5)(dense(h))
    local_layers = []
    if c.user_embedding:
        user = UserVector(c.user_embedding_dim, const(l0["user_embedding"]), name="user_embedding")
        h = L.Concatenate(name="features_and_user")([h, user(pixels)])
        local_layers = [user]
    # Logits; the loss applies the softmax (from_logits=True, numerically stabler).
    out = layer(L.Dense, "logits", num_classes)
    model = tf.keras.Model(inputs=pixels, outputs=out(h))
    spec = collections.OrderedDict(x=tf.TensorSpec([None, 28, 28, 1], tf.float32),
                                   y=tf.TensorSpec([None, 1], tf.int32))
    return KerasParts(model, [conv1, conv2, dense, out], local_layers, spec)
