"""The toy models and client data of TFF's FedRecon tests, as tasks of this suite, so the
suite's own FedRecon (both engines) runs on them.

Written from the peers' definitions (tensorflow/federated,
tensorflow_federated/python/learning/algorithms/fed_recon_test.py and fed_recon_eval_test.py):

- `mnist`: one dense layer 784 -> 10 then softmax, weights and biases start at 0, the
  weights global and the biases local (their `MnistModel`); `local=False` makes the biases
  global too (a model with no local variables, the role of their all-global Keras model).
  Loss: sparse categorical cross-entropy of the probabilities. Metrics: their
  NumExamplesCounter, NumBatchesCounter and SparseCategoricalAccuracy. Data: three images
  0.1 * N(0, 1) (NumPy's legacy stream, seed 42) with labels 5, 5, 9; `take` keeps the
  first examples (their `client_data(max_examples=...)`).
- `linear`: y = x w + b with w global and b local (their `LinearModel`), w = 1 (the value
  their evaluation tests set) and b = 0. Loss: mean squared error. Metrics: the examples
  counter and their `num_over`, the number of labels greater than 5. Data: two clients,
  x = 1, 2, 3 and y = 5, 6, 8 / 5, 5, 9, in batches of 1.
"""
from __future__ import annotations

import collections

import numpy as np
from omegaconf import OmegaConf

from tasks.model import FastModel, masked_mean
from tasks.base import ClientSet, FederatedData, KerasParts, Task

OVER = 5.0  # their NumOverCounter threshold


def mnist_examples(take: int | None = None) -> dict:
    rs = np.random.RandomState(42)  # = np.random.seed(42), then three randn(784) calls
    x = np.stack([0.1 * rs.randn(784).astype(np.float32) for _ in range(3)])
    y = np.array([5, 5, 9], np.int32)
    return {"x": x[:take], "y": y[:take]}


LINEAR_CLIENTS = [{"x": np.array([1.0, 2.0, 3.0], np.float32), "y": np.array([5.0, 6.0, 8.0], np.float32)},
                  {"x": np.array([1.0, 2.0, 3.0], np.float32), "y": np.array([5.0, 5.0, 9.0], np.float32)}]


class _Fast(FastModel):
    def __init__(self, kind: str, local: bool, batch_size: int):
        self.kind, self.batch_size = kind, batch_size
        names = ("kernel", "bias")
        self.global_names, self.local_names = (names[:1], names[1:]) if local else (names, ())

    def init(self, seed: int):
        shape = (784, 10) if self.kind == "mnist" else (1, 1)
        kernel = np.zeros(shape, np.float32) if self.kind == "mnist" else np.ones(shape, np.float32)
        p = {"kernel": kernel, "bias": np.zeros(shape[1:], np.float32)}
        return ({n: p[n] for n in self.global_names}, {n: p[n] for n in self.local_names})

    def inputs(self, ex):
        x = np.asarray(ex["x"], np.float32).reshape(len(ex["x"]), -1)
        y = np.asarray(ex["y"]).reshape(-1)
        return {"x": x, "y": y.astype(np.int32 if self.kind == "mnist" else np.float32)}

    def predict(self, p, batch, train=False, rng=None):
        return batch["x"] @ p["kernel"] + p["bias"]  # mnist: logits of the softmax

    def loss(self, batch, out):
        import jax
        import jax.numpy as jnp

        if self.kind == "linear":
            return masked_mean(jnp.square(batch["y"] - out[:, 0]), batch["mask"])
        nll = jax.nn.logsumexp(out, axis=1) - jnp.take_along_axis(out, batch["y"][:, None], axis=1)[:, 0]
        return masked_mean(nll, batch["mask"])

    def stats(self, batch, out):
        import jax.numpy as jnp

        m = batch["mask"]
        s = {"examples": jnp.sum(m), "batches": jnp.max(m)}
        if self.kind == "linear":
            return {**s, "over": jnp.sum((batch["y"] > OVER) * m)}
        import jax

        probs = jax.nn.softmax(out, axis=1)  # as Keras: argmax of the probabilities (ties alike)
        return {**s, "hits": jnp.sum((jnp.argmax(probs, axis=1) == batch["y"]) * m)}

    def metrics(self, s):
        out = {"num_examples": int(round(s["examples"]))}
        if self.kind == "linear":
            return {**out, "num_over": float(s["over"])}
        n = float(s["examples"])
        return {**out, "num_batches": int(round(s["batches"])),
                "sparse_categorical_accuracy": float(s["hits"]) / n if n else 0.0}


class ToyTask(Task):
    """`kind` mnist or linear; `clients`: each client's examples (train = val = test)."""

    name = "toy"

    def __init__(self, kind: str, clients: list[dict], batch_size: int, local: bool = True):
        super().__init__(OmegaConf.create({"name": "toy", "batch_size": batch_size}), "unused", 0)
        self.kind, self.clients, self.local = kind, clients, local
        self.metric_names = ("loss", "num_examples") + (
            ("num_over",) if kind == "linear" else ("num_batches", "sparse_categorical_accuracy"))

    def load(self) -> FederatedData:
        pop = lambda: ClientSet([f"c{i}" for i in range(len(self.clients))], list(self.clients))
        return FederatedData(pop(), pop(), pop(), {})

    def fast_model(self, info: dict) -> _Fast:
        return _Fast(self.kind, self.local, int(self.cfg.batch_size))

    # --- engine=tff (Keras) --------------------------------------------------
    def client_dataset(self, ex):
        import tensorflow as tf

        m = self.fast_model({}).inputs(ex)
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=m["x"], y=m["y"][:, None])).batch(int(self.cfg.batch_size))

    def keras_parts(self, info: dict) -> KerasParts:
        import tensorflow as tf

        g0, l0 = self.initial_weights(info)
        w = {**g0, **l0}
        const = tf.keras.initializers.Constant
        dim = 784 if self.kind == "mnist" else 1
        inputs = tf.keras.layers.Input(shape=[dim])
        dense = tf.keras.layers.Dense(w["kernel"].shape[1], use_bias=False, kernel_initializer=const(w["kernel"]))
        bias = _bias_layer()(const(w["bias"]))
        out = bias(dense(inputs))
        if self.kind == "mnist":
            out = tf.keras.layers.Activation("softmax")(out)
        spec = collections.OrderedDict(
            x=tf.TensorSpec([None, dim], tf.float32),
            y=tf.TensorSpec([None, 1], tf.int32 if self.kind == "mnist" else tf.float32))
        layers = ([dense], [bias]) if self.local else ([dense, bias], [])
        return KerasParts(tf.keras.Model(inputs, out), *layers, spec)

    def loss_fn(self):
        import tensorflow as tf

        if self.kind == "linear":
            return tf.keras.losses.MeanSquaredError
        return tf.keras.losses.SparseCategoricalCrossentropy

    def metrics_fn(self):
        import tensorflow as tf
        import tensorflow_federated as tff

        counters = tff.learning.metrics
        if self.kind == "linear":
            return lambda: [counters.NumExamplesCounter(), _num_over()]
        return lambda: [counters.NumExamplesCounter(), counters.NumBatchesCounter(),
                        tf.keras.metrics.SparseCategoricalAccuracy()]


def _bias_layer():
    """A Keras layer adding one trainable vector (their BiasLayer), with an initializer."""
    import tensorflow as tf

    class Bias(tf.keras.layers.Layer):
        def __init__(self, initializer, **kw):
            super().__init__(**kw)
            self.initializer = initializer

        def build(self, input_shape):
            self.bias = self.add_weight("bias", shape=input_shape[1:], initializer=self.initializer)

        def call(self, x):
            return x + self.bias

    return Bias


def _num_over():
    """Their NumOverCounter: a Keras Sum of the labels greater than OVER."""
    import tensorflow as tf

    class NumOver(tf.keras.metrics.Sum):
        def __init__(self, name="num_over", dtype=tf.float32):
            super().__init__(name, dtype)

        def update_state(self, y_true, y_pred, sample_weight=None):
            return super().update_state(tf.reduce_sum(tf.cast(y_true > OVER, tf.float32)))

    return NumOver()


def build(engine: str, task: ToyTask, tmp_path, *overrides):
    """The suite's FedRecon on `engine` for a toy task: (algorithm, populations, data).
    The config is the CLI's (a MovieLens one: only algo, split and dp are read)."""
    from conftest import compose
    from fedrecon_bench import algorithms, engines

    cfg = compose("+task=movielens", "+algo=fedrecon", f"engine={engine}", "logger=none", *overrides)
    data = task.load()
    algo = algorithms.get("fedrecon", engine)(task, data.info, cfg, run_dir=str(tmp_path / engine))
    return algo, engines.get(engine).populations(task, data, algo), data


def train(engine: str, task: ToyTask, tmp_path, rounds: int, *overrides):
    """`rounds` rounds with every client: (round metrics, global weights after each round)."""
    algo, pops, data = build(engine, task, tmp_path, *overrides)
    state, metrics, weights = algo.initialize(), [], []
    everyone = list(range(len(data.train)))
    for _ in range(rounds):
        state, m = algo.next(state, pops[0].select(everyone), list(data.train.ids))
        metrics.append(m)
        weights.append([np.array(w) for w in algo.global_weights(state).trainable])
    return metrics, weights


def evaluate(engine: str, task: ToyTask, tmp_path, *overrides) -> dict:
    """One evaluation of the initial global weights (w = 1) on every client: the headline
    mode's metrics (evaluate returns {mode: metrics}, headline first)."""
    algo, pops, data = build(engine, task, tmp_path, *overrides)
    modes = algo.evaluate(algo.initialize(), pops[1].all(), list(data.val.ids))
    return next(iter(modes.values()))
