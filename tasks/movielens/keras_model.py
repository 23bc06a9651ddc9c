"""The MovieLens model, loss and metrics in Keras for engine=tff, built from the
initial weights of the JAX model (Constant initializers), so both engines start equal."""
from __future__ import annotations

import collections

import tensorflow as tf

from tasks.base import KerasParts


def client_dataset(ex, batch_size: int):
    return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=ex["item"][:, None], y=ex["rating"][:, None])).batch(batch_size)


def keras_parts(c, g0: dict, l0: dict) -> KerasParts:
    const = tf.keras.initializers.Constant
    num_items, dim = g0["item_embedding"].shape
    item_input = tf.keras.layers.Input(shape=[1], dtype=tf.int64, name="item")
    item_emb = tf.keras.layers.Embedding(num_items, dim, embeddings_initializer=const(g0["item_embedding"]),
                                         name="item_embedding")
    user_emb = UserVector(dim, const(l0["user_embedding"]), name="user_embedding")
    item_vec = tf.keras.layers.Flatten()(item_emb(item_input))
    user_vec = user_emb(item_input)
    pred = tf.keras.layers.Dot(axes=1)([user_vec, item_vec])
    global_layers, local_layers = [item_emb], [user_emb]
    penalty_terms = [user_vec, item_vec]
    if c.biases:
        item_bias = tf.keras.layers.Embedding(num_items, 1, embeddings_initializer=const(g0["item_bias"]),
                                              name="item_bias")
        user_bias = UserVector(1, const(l0["user_bias"]), name="user_bias")
        ib, ub = tf.keras.layers.Flatten()(item_bias(item_input)), user_bias(item_input)
        pred = tf.keras.layers.Add()([pred, ib, ub])
        global_layers.append(item_bias)
        local_layers.append(user_bias)
        penalty_terms += [ib, ub]
    if "global_bias" in g0:  # the authors' global scalar bias
        global_bias = ScalarBias(const(g0["global_bias"]), name="global_bias")
        pred = global_bias(pred)
        global_layers.append(global_bias)
    outputs = pred
    if c.l2 > 0:
        # TFF's reconstruction loop ignores model.losses, so the L2 penalty on
        # the factors used by each example travels as a second output column.
        sq = [tf.reduce_sum(tf.square(t), axis=1, keepdims=True) for t in penalty_terms]
        penalty = tf.keras.layers.Lambda(lambda ts: c.l2 * tf.add_n(ts))(sq)
        outputs = tf.keras.layers.Concatenate(axis=1)([pred, penalty])
    model = tf.keras.Model(inputs=item_input, outputs=outputs)
    spec = collections.OrderedDict(x=tf.TensorSpec([None, 1], tf.int64),
                                   y=tf.TensorSpec([None, 1], tf.float32))
    return KerasParts(model, global_layers, local_layers, spec)


class UserVector(tf.keras.layers.Layer):
    """One trainable vector for the client's user, broadcast over the batch."""

    def __init__(self, dim, initializer, **kw):
        super().__init__(**kw)
        self.dim, self.initializer = dim, tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.vector = self.add_weight(name="kernel", shape=(1, self.dim),
                                      initializer=self.initializer, trainable=True)

    def call(self, inputs):
        return tf.broadcast_to(self.vector, [tf.shape(inputs)[0], self.dim])


class ScalarBias(tf.keras.layers.Layer):
    """One trainable scalar added to every prediction (the authors' global bias)."""

    def __init__(self, initializer, **kw):
        super().__init__(**kw)
        self.initializer = tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.bias = self.add_weight(name="bias", shape=(1,), initializer=self.initializer, trainable=True)

    def call(self, inputs):
        return inputs + self.bias


def _pred(y_pred):
    return y_pred[:, :1]  # column 0 is the rating; column 1 (if any) the L2 penalty


class PenalizedMSE(tf.keras.losses.Loss):
    """Squared error per example, plus the example's L2 penalty when the model emits one."""

    def call(self, y_true, y_pred):
        se = tf.square(y_true[:, 0] - y_pred[:, 0])
        if y_pred.shape[-1] == 2:
            se = se + y_pred[:, 1]
        return se


class RatingAccuracy(tf.keras.metrics.Mean):
    """Fraction of predictions within `threshold` (0.5: the tutorial's metric) of the true rating."""

    def __init__(self, threshold: float = 0.5, name="rating_accuracy", **kw):
        super().__init__(name=name, **kw)
        self.threshold = float(threshold)

    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold}

    def update_state(self, y_true, y_pred, sample_weight=None):
        hit = tf.cast(tf.abs(y_true - _pred(y_pred)) <= self.threshold, tf.float32)
        return super().update_state(hit, sample_weight=sample_weight)


class RMSE(tf.keras.metrics.RootMeanSquaredError):
    def __init__(self, name="rmse", **kw):
        super().__init__(name=name, **kw)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, _pred(y_pred), sample_weight=sample_weight)
