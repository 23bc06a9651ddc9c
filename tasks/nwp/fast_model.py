"""The next-word-prediction LSTM in JAX for engine=fast, and the initial weights both
engines start from."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from tasks import init
from tasks.model import FastModel, masked_mean
from tasks.nwp.data import Layout


class NwpFast(FastModel):
    """keras_model's model, loss and metrics in JAX (tasks/model.py).
    All parameters are dense (no `sparse`): the logits layer reads every id's column
    for every token anyway."""
    client_mode = "sequential"  # measured: clients one after another beat batched small matmuls on CPU

    ACCURACIES = {"accuracy": (False, False), "accuracy_no_oov": (True, False),
                  "accuracy_no_oov_no_eos": (True, True)}  # name: (mask_oov, mask_eos)

    def __init__(self, c, layout: Layout):
        self.V, self.K, self.batch_size = layout.V, layout.K, int(c.batch_size)
        self.unroll = int(c.get("lstm_unroll", 1))
        self.dims = (int(c.embedding_dim), int(c.lstm_units), int(c.projection_dim))
        self.layers = int(c.get("num_layers", 1))
        self.masked = bool(c.get("masked_loss", True))
        self.split_output = bool(c.local_oov_output)
        out = ("logits_global", "logits_oov_local") if self.split_output else ("logits", None)
        dense = lambda n: (f"{n}/kernel", f"{n}/bias")
        # The order of keras_parts' layers and, within each, of its trainable weights.
        glob = ("embedding_global", *self.block_names, *dense(out[0]))
        loc = ("embedding_oov_local",) + (dense(out[1]) if self.split_output else ())
        self.global_names, self.local_names = (glob, loc) if c.local_oov else (glob + loc, ())

    @staticmethod
    def block(i: int) -> tuple[str, str]:
        """Layer names of (LSTM -> projection) block i: the first keeps the one-block names."""
        return ("lstm", "projection") if i == 0 else (f"lstm_{i}", f"projection_{i}")

    @property
    def block_names(self) -> tuple[str, ...]:
        out = ()
        for i in range(self.layers):
            lstm, proj = self.block(i)
            out += (f"{lstm}/kernel", f"{lstm}/recurrent_kernel", f"{lstm}/bias", f"{proj}/kernel", f"{proj}/bias")
        return out

    @property
    def model_order(self):  # Keras creates the global embedding, then the local one, ...
        dense = lambda n: (f"{n}/kernel", f"{n}/bias")
        return ("embedding_global", "embedding_oov_local") + self.block_names + (
            dense("logits_global") + dense("logits_oov_local") if self.split_output else dense("logits"))

    def init(self, seed: int):
        """Keras' initializers (the same distributions): uniform +-0.05 embeddings, Glorot
        kernels, an orthogonal recurrent kernel, zero biases but the LSTM's forget gate 1."""
        (E, U, P), V, K = self.dims, self.V, self.K
        w = {"embedding_global": init.uniform(seed, 1, (V + 3, E)),
             "embedding_oov_local": init.uniform(seed, 2, (K, E))}
        for i in range(self.layers):  # block 0 draws keys 3-5 (as with one block), block i 10i..10i+2
            lstm, proj = self.block(i)
            k = (3, 4, 5) if i == 0 else (10 * i, 10 * i + 1, 10 * i + 2)
            w[f"{lstm}/kernel"] = init.glorot(seed, k[0], (E if i == 0 else P, 4 * U))
            w[f"{lstm}/recurrent_kernel"] = init.orthogonal(seed, k[1], (U, 4 * U))
            w[f"{lstm}/bias"] = init.lstm_bias(U)
            w[f"{proj}/kernel"], w[f"{proj}/bias"] = init.glorot(seed, k[2], (U, P)), init.zeros(P)
        outs = ((("logits_global", V + 3, 6), ("logits_oov_local", K, 7)) if self.split_output
                else (("logits", V + K + 3, 6),))
        for name, n, k in outs:
            w[f"{name}/kernel"], w[f"{name}/bias"] = init.glorot(seed, k, (P, n)), init.zeros(n)
        return ({n: w[n] for n in self.global_names}, {n: w[n] for n in self.local_names})

    def inputs(self, ex):
        return {"x": ex["x"].astype(np.int32), "y": ex["y"].astype(np.int32)}

    def predict(self, p, batch, train=False, rng=None):
        V, K, ids = self.V, self.K, batch["x"]
        # GlobalTokenEmbedding / LocalOOVEmbedding / SelectOOV: unselected rows get no gradient.
        g = p["embedding_global"][jnp.where(ids > V + K, ids - K, jnp.clip(ids, 0, V))]
        loc = p["embedding_oov_local"][jnp.clip(ids - (V + 1), 0, K - 1)]
        emb = jnp.where(self._is_oov(ids)[..., None], loc, g)
        h = emb
        for i in range(self.layers):
            lstm, proj = self.block(i)
            h = _lstm(p[f"{lstm}/kernel"], p[f"{lstm}/recurrent_kernel"], p[f"{lstm}/bias"], h, self.unroll)
            h = h @ p[f"{proj}/kernel"] + p[f"{proj}/bias"]
        if not self.split_output:
            return h @ p["logits/kernel"] + p["logits/bias"]
        gl = h @ p["logits_global/kernel"] + p["logits_global/bias"]
        ll = h @ p["logits_oov_local/kernel"] + p["logits_oov_local/bias"]
        return jnp.concatenate([gl[..., :V + 1], ll, gl[..., V + 1:]], axis=-1)  # MergeOOVLogits

    def _is_oov(self, ids):
        return (ids >= self.V + 1) & (ids <= self.V + self.K)

    def _keep(self, batch):
        """Label positions that count: not pad, and not in a padding sequence."""
        return (batch["y"] != 0) & (batch["mask"][:, None] > 0)

    def loss(self, batch, logits):
        """Mean cross-entropy over non-pad labels; masked_loss=false: over every position of
        the batch's real sequences, pads included (the authors' loss under TF 2.4)."""
        y = batch["y"]
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1)[..., 0]
        keep = self._keep(batch) if self.masked else jnp.broadcast_to(batch["mask"][:, None] > 0, y.shape)
        return masked_mean(ce, keep.astype(ce.dtype))

    def stats(self, batch, logits):
        y, keep = batch["y"], self._keep(batch)
        hit = jnp.argmax(logits, axis=-1) == y
        count = lambda a: jnp.sum(a, dtype=jnp.float32)  # the engine tallies in float32
        out = {"num_tokens": count(keep)}
        for name, (mask_oov, mask_eos) in self.ACCURACIES.items():
            k = keep
            if mask_oov:
                k = k & ~self._is_oov(y)
            if mask_eos:
                k = k & (y != self.V + self.K + 2)
            out[f"{name}/hits"], out[f"{name}/count"] = count(hit & k), count(k)
        return out

    def metrics(self, s):
        ratio = lambda hits, count: float(hits) / float(count) if count else 0.0  # Keras: divide_no_nan
        out = {n: ratio(s[f"{n}/hits"], s[f"{n}/count"]) for n in self.ACCURACIES}
        return {**out, "num_tokens": int(round(float(s["num_tokens"])))}


def _lstm(kernel, recurrent_kernel, bias, x, unroll: int = 1):
    """Keras LSTM(return_sequences=True) from zero states: gates i, f, c, o;
    tanh activation, sigmoid recurrent activation. x [bs, T, in] -> [bs, T, units].
    unroll: time steps per loop iteration (seq_len = fully unrolled)."""
    units = recurrent_kernel.shape[0]
    zx = jnp.swapaxes(x @ kernel + bias, 0, 1)  # input projections of all steps at once: [T, bs, 4u]

    def step(carry, z):
        h, c = carry
        i, f, g, o = jnp.split(z + h @ recurrent_kernel, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((x.shape[0], units), zx.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), zx, unroll=unroll)
    return jnp.swapaxes(hs, 0, 1)
