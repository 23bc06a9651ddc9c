"""The next-word-prediction LSTM, loss and metrics in Keras for engine=tff, built from
the JAX model's initial weights (Constant initializers)."""
from __future__ import annotations

import collections

import tensorflow as tf

from tasks.base import KerasParts


def client_dataset(ex, batch_size: int):
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=ex["x"], y=ex["y"])).batch(batch_size)


def keras_parts(c, lay, g0: dict, l0: dict) -> KerasParts:
    w, const = {**g0, **l0}, tf.keras.initializers.Constant
    dense = lambda units, name: tf.keras.layers.Dense(
        units, kernel_initializer=const(w[f"{name}/kernel"]), bias_initializer=const(w[f"{name}/bias"]),
        name=name)
    tokens = tf.keras.layers.Input(shape=(None,), dtype=tf.int64, name="tokens")
    g_emb = GlobalTokenEmbedding(lay.V, lay.K, c.embedding_dim, const(w["embedding_global"]),
                                 name="embedding_global")
    l_emb = LocalOOVEmbedding(lay.V, lay.K, c.embedding_dim, const(w["embedding_oov_local"]),
                              name="embedding_oov_local")
    emb = SelectOOV(lay.V, lay.K, name="token_embedding")([tokens, g_emb(tokens), l_emb(tokens)])
    global_layers, local_layers, h = [g_emb], [l_emb], emb
    for i in range(int(c.get("num_layers", 1))):  # (LSTM -> projection) blocks, names as NwpFast.block
        name, proj_name = ("lstm", "projection") if i == 0 else (f"lstm_{i}", f"projection_{i}")
        lstm = tf.keras.layers.LSTM(  # the bias holds the forget gate's 1 already
            c.lstm_units, return_sequences=True, kernel_initializer=const(w[f"{name}/kernel"]),
            recurrent_initializer=const(w[f"{name}/recurrent_kernel"]),
            bias_initializer=const(w[f"{name}/bias"]), unit_forget_bias=False, name=name)
        proj = dense(c.projection_dim, proj_name)
        h = proj(lstm(h))
        global_layers += [lstm, proj]
    if c.local_oov_output:
        g_out, l_out = dense(lay.V + 3, "logits_global"), dense(lay.K, "logits_oov_local")
        logits = MergeOOVLogits(lay.V, lay.K, name="logits")([g_out(h), l_out(h)])
        global_layers.append(g_out)
        local_layers.append(l_out)
    else:
        out = dense(lay.num_ids, "logits")
        logits = out(h)
        global_layers.append(out)
    if not c.local_oov:  # same model, nothing local: the all-global baseline
        global_layers, local_layers = global_layers + local_layers, []
    model = tf.keras.Model(inputs=tokens, outputs=logits)
    spec = collections.OrderedDict(x=tf.TensorSpec([None, c.seq_len], tf.int64),
                                   y=tf.TensorSpec([None, c.seq_len], tf.int64))
    return KerasParts(model, global_layers, local_layers, spec)


# --------------------------------------------------------------------------
# Keras layers: the embedding and the logits split at the OOV rows
# --------------------------------------------------------------------------
def _is_oov(ids, V: int, K: int):
    return tf.logical_and(ids >= V + 1, ids <= V + K)


class GlobalTokenEmbedding(tf.keras.layers.Layer):
    """V+3 rows: pad and words (ids 0..V) then BOS, EOS (ids V+K+1, V+K+2 -> rows V+1, V+2).
    OOV ids read a clipped row that `SelectOOV` discards."""

    def __init__(self, V, K, dim, initializer, **kw):
        super().__init__(**kw)
        self.V, self.K, self.dim = V, K, dim
        self.initializer = tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.V + 3, self.dim),
                                          initializer=self.initializer, trainable=True)

    def call(self, ids):
        ids = tf.cast(ids, tf.int64)
        rows = tf.where(ids > self.V + self.K, ids - self.K, tf.clip_by_value(ids, 0, self.V))
        return tf.gather(self.embeddings, rows)


class LocalOOVEmbedding(tf.keras.layers.Layer):
    """Exactly K rows, one per OOV bucket (id V+1+j -> row j); other ids read a
    clipped row that `SelectOOV` discards."""

    def __init__(self, V, K, dim, initializer, **kw):
        super().__init__(**kw)
        self.V, self.K, self.dim = V, K, dim
        self.initializer = tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.K, self.dim),
                                          initializer=self.initializer, trainable=True)

    def call(self, ids):
        rows = tf.clip_by_value(tf.cast(ids, tf.int64) - (self.V + 1), 0, self.K - 1)
        return tf.gather(self.embeddings, rows)


class SelectOOV(tf.keras.layers.Layer):
    """Per token: the local embedding for OOV ids, the global one otherwise. The
    unselected branch gets no gradient, so OOV tokens never touch global rows."""

    def __init__(self, V, K, **kw):
        super().__init__(**kw)
        self.V, self.K = V, K

    def call(self, inputs):
        ids, global_vec, local_vec = inputs
        oov = _is_oov(tf.cast(ids, tf.int64), self.V, self.K)[..., None]
        return tf.where(oov, local_vec, global_vec)


class MergeOOVLogits(tf.keras.layers.Layer):
    """Full logits in id order from V+3 global columns (pad, words, BOS, EOS) and
    K local OOV columns: [global 0..V | local V+1..V+K | global BOS, EOS]."""

    def __init__(self, V, K, **kw):
        super().__init__(**kw)
        self.V, self.K = V, K

    def call(self, inputs):
        g, l = inputs
        return tf.concat([g[..., :self.V + 1], l, g[..., self.V + 1:]], axis=-1)


# --------------------------------------------------------------------------
# Loss and metrics
# --------------------------------------------------------------------------
class MaskedCrossEntropy(tf.keras.losses.Loss):
    """Mean softmax cross-entropy over the non-pad label positions of a batch.
    TFF calls the loss without sample weights, so the pad mask lives here.
    masked=False: the mean over every position, pads included, as the authors' Keras
    loss computed under TF 2.4 (which ignored the embedding's mask)."""

    def __init__(self, masked: bool = True, **kw):
        super().__init__(**kw)
        self.masked = bool(masked)

    def get_config(self):
        return {**super().get_config(), "masked": self.masked}

    def __call__(self, y_true, y_pred, sample_weight=None):
        y = tf.cast(y_true, tf.int64)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(y_pred, tf.float32))
        w = tf.cast(tf.not_equal(y, 0), ce.dtype) if self.masked else tf.ones_like(ce)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))

    def call(self, y_true, y_pred):  # per-position values (pads 0), for completeness
        y = tf.cast(y_true, tf.int64)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=y_pred)
        return ce * tf.cast(tf.not_equal(y, 0), ce.dtype)


class MaskedAccuracy(tf.keras.metrics.Mean):
    """argmax(logits) == label over the label positions not masked (pad always;
    OOV buckets with mask_oov; EOS with mask_eos). Variables: hits, positions."""

    def __init__(self, vocab_size, num_oov_buckets, mask_oov=False, mask_eos=False,
                 name="accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.vocab_size, self.num_oov_buckets = int(vocab_size), int(num_oov_buckets)
        self.mask_oov, self.mask_eos = bool(mask_oov), bool(mask_eos)

    def update_state(self, y_true, y_pred, sample_weight=None):
        V, K = self.vocab_size, self.num_oov_buckets
        y = tf.cast(y_true, tf.int64)
        keep = tf.not_equal(y, 0)
        if self.mask_oov:
            keep = tf.logical_and(keep, tf.logical_not(_is_oov(y, V, K)))
        if self.mask_eos:
            keep = tf.logical_and(keep, tf.not_equal(y, V + K + 2))
        hit = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int64), y), tf.float32)
        return super().update_state(hit, sample_weight=tf.cast(keep, tf.float32))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "num_oov_buckets": self.num_oov_buckets, "mask_oov": self.mask_oov,
                "mask_eos": self.mask_eos}


class NumTokens(tf.keras.metrics.Sum):
    """The number of non-pad label positions (int64: exact at Stack Overflow scale)."""

    def __init__(self, name="num_tokens", dtype=tf.int64):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(tf.cast(tf.not_equal(tf.cast(y_true, tf.int64), 0), tf.int64))
