"""The EMNIST CNN (+ user embedding) in JAX for engine=fast, and the initial weights both
engines start from."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks import init
from tasks.model import FastModel, masked_mean


def _dropout(h, rate: float, key):
    """Keras' inverted dropout: zero with probability `rate`, scale the rest by 1/(1-rate)."""
    keep = jax.random.bernoulli(key, 1.0 - rate, h.shape)
    return jnp.where(keep, h / (1.0 - rate), 0.0)


def _conv_lax(h, kernel):
    """Keras' Conv2D (VALID, stride 1) as XLA's convolution."""
    return jax.lax.conv_general_dilated(h, kernel, (1, 1), "VALID",
                                        dimension_numbers=("NHWC", "HWIO", "NHWC"))


def _conv_patches(h, kernel):
    """The same convolution as shifted slices concatenated (im2col), then one matmul: its
    gradient is matmuls too, which XLA:CPU runs fast inside a compiled loop."""
    kh, kw, ci, co = kernel.shape
    H, W = h.shape[1] - kh + 1, h.shape[2] - kw + 1
    cols = jnp.concatenate([h[:, i:i + H, j:j + W, :] for i in range(kh) for j in range(kw)], axis=-1)
    return cols @ kernel.reshape(kh * kw * ci, co)


class EmnistFast(FastModel):
    """keras_model's CNN, loss and metrics in JAX (tasks/model.py)."""

    global_names = ("conv1/kernel", "conv1/bias", "conv2/kernel", "conv2/bias",
                    "dense/kernel", "dense/bias", "logits/kernel", "logits/bias")
    client_mode = "host"  # CPU: conv gradients inside a compiled loop run several times slower (README)
    max_group = 16        # vmapped groups (fast.clients=vmap, GPUs): bound the activations

    def __init__(self, c, num_classes: int):
        self.num_classes, self.batch_size = num_classes, int(c.batch_size)
        self.dropout = bool(c.dropout)
        self.local_names = ("user_embedding",) if c.user_embedding else ()
        self.user_dim = int(c.user_embedding_dim)
        self.conv = {"lax": _conv_lax, "patches": _conv_patches}[c.get("conv", "lax")]

    @property
    def model_order(self):  # Keras: the user embedding is created before the logits layer
        g = self.global_names
        return g[:6] + self.local_names + g[6:]

    def init(self, seed: int):
        """Glorot kernels, zero biases; the user embedding starts at zero, so before
        reconstruction the model is exactly the global CNN."""
        features = 128 + (self.user_dim if self.local_names else 0)
        shapes = {"conv1": (3, 3, 1, 32), "conv2": (3, 3, 32, 64), "dense": (12 * 12 * 64, 128),
                  "logits": (features, self.num_classes)}
        g = {}
        for k, (name, shape) in zip((1, 2, 3, 6), shapes.items()):
            g[f"{name}/kernel"], g[f"{name}/bias"] = init.glorot(seed, k, shape), init.zeros(shape[-1])
        return g, ({"user_embedding": init.zeros((1, self.user_dim))} if self.local_names else {})

    def inputs(self, ex):
        # As client_dataset: uint8 pixels are k/255 (see compact_pixels), float ones already 0..1.
        scale = np.float32(1.0 / 255.0 if ex["x"].dtype == np.uint8 else 1.0)
        x = ex["x"].astype(np.float32) * scale
        return {"x": x.reshape(-1, 28, 28, 1), "y": np.asarray(ex["y"]).reshape(-1).astype(np.int32)}

    def predict(self, p, batch, train=False, rng=None):
        """Logits [bs, num_classes]; dropout only when training (needs `rng`)."""
        conv = lambda h, name: jax.nn.relu(self.conv(h, p[name + "/kernel"]) + p[name + "/bias"])
        h = conv(conv(batch["x"], "conv1"), "conv2")
        # MaxPool2D(2) as a max over reshaped 2x2 blocks: the same values, and its gradient is
        # elementwise, where reduce_window's (select-and-scatter) is slow on XLA:CPU.
        b, H, W, C = h.shape
        h = jnp.max(h.reshape(b, H // 2, 2, W // 2, 2, C), axis=(2, 4))
        drop = train and self.dropout
        if drop:
            if rng is None:
                raise ValueError("EmnistFast.predict(train=True) with dropout needs a PRNG key `rng`")
            k1, k2 = jax.random.split(rng)
            h = _dropout(h, 0.25, k1)
        h = h.reshape(h.shape[0], -1)  # NHWC row-major, as Keras' Flatten
        h = jax.nn.relu(h @ p["dense/kernel"] + p["dense/bias"])
        if drop:
            h = _dropout(h, 0.5, k2)
        if self.local_names:
            user = jnp.broadcast_to(p["user_embedding"], (h.shape[0], p["user_embedding"].shape[1]))
            h = jnp.concatenate([h, user], axis=1)
        return h @ p["logits/kernel"] + p["logits/bias"]

    def loss(self, batch, logits):
        # Sparse softmax cross-entropy from logits, as SparseCategoricalCrossentropy(from_logits=True).
        nll = jax.nn.logsumexp(logits, axis=1) - jnp.take_along_axis(
            logits, batch["y"][:, None], axis=1)[:, 0]
        return masked_mean(nll, batch["mask"])

    def stats(self, batch, logits):
        m = batch["mask"]
        return {"hits": jnp.sum((jnp.argmax(logits, axis=1) == batch["y"]) * m), "count": jnp.sum(m)}

    def metrics(self, s):
        n = float(s["count"])
        return {"accuracy": float(s["hits"]) / n if n else 0.0}
