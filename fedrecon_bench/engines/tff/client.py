"""TF client steps on engine=tff, for algorithms TFF has no process for (clients that keep
state, training on the server): one eager Keras model, its global and local variables, and
`tf.function` steps that train or measure one client's dataset (engines/fast/client.py
is the JAX twin). Build it after any TFF process: TFF traces in graphs, which
invalidates Keras models made before.
"""
from __future__ import annotations

import tensorflow as tf

from fedrecon_bench.engines.tff import optim


class Steps:
    def __init__(self, task, info: dict, client_optimizer, key: str = "algo.client_optimizer"):
        self.task, self.parts = task, task.keras_parts(info)
        layer_vars = lambda layers: [w for l in layers for w in l.trainable_weights]
        self.gvars, self.lvars = layer_vars(self.parts.global_layers), layer_vars(self.parts.local_layers)
        self.local_init = [v.numpy().copy() for v in self.lvars]  # seeded: every client starts here
        self.loss = task.loss_fn()()
        self.opt = optim.build(client_optimizer, key)
        # a tuple: dataset.reduce would stack a list of states into one tensor
        self._opt_init = self.opt.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in self.gvars + self.lvars))
        self.train_metrics, self.eval_metrics = self.metrics(), self.metrics()
        self.train = tf.function(self._train_fn)  # traced once: the same metric objects every call
        self.measure = tf.function(self._measure_fn)

    def metrics(self) -> list:
        return [*self.task.metrics_fn()(), tf.keras.metrics.Mean(name="loss")]

    @staticmethod
    def assign(variables, values) -> None:
        for v, x in zip(variables, values):
            v.assign(x)

    def _train_fn(self, dataset, metrics):
        """One epoch of client-optimizer steps on every variable; returns the examples seen."""
        return self.fit(dataset, self.gvars + self.lvars, self.opt, self._opt_init, metrics)

    def fit(self, dataset, variables, opt, opt_init, metrics):
        """One epoch of `opt` steps on `variables` only, the others frozen; returns the
        examples seen. `metrics` (may be empty) update on each step's predictions and loss."""
        def step(carry, batch):
            n, opt_state = carry
            with tf.GradientTape() as tape:
                pred = self.parts.model(batch["x"], training=True)
                loss = self.loss(batch["y"], pred)
            grads = tape.gradient(loss, variables)
            for m in metrics[:-1]:
                m.update_state(batch["y"], pred)
            if metrics:
                metrics[-1].update_state(loss)
            opt_state, new = opt.next(opt_state, tuple(variables), tuple(grads))
            for v, w in zip(variables, new):
                v.assign(w)
            return n + tf.shape(batch["y"])[0], opt_state

        n, _ = dataset.reduce((tf.constant(0), opt_init), step)
        return n

    def _measure_fn(self, dataset, metrics):
        """Updates the metrics on every batch; returns the examples measured."""
        n = tf.constant(0)
        for batch in dataset:
            pred = self.parts.model(batch["x"], training=False)
            for m in metrics[:-1]:
                m.update_state(batch["y"], pred)
            metrics[-1].update_state(self.loss(batch["y"], pred))
            n += tf.shape(batch["y"])[0]
        return n


def results(metrics) -> dict:
    return {m.name: float(m.result()) for m in metrics}


def reset(metrics) -> None:
    for m in metrics:
        m.reset_state()


def record(metrics, num_examples: int) -> dict:
    """One client's record (fedrecon_bench/records.py): its examples measured, its metrics
    and the Keras metric variables they finalize (tally_<metric>.<variable>)."""
    import numpy as np

    row = {"num_examples": num_examples, **results(metrics)}
    for m in metrics:
        for v in m.variables:
            name, x = f"tally_{m.name}.{v.name.split(':')[0].split('/')[-1]}", np.ravel(v.numpy())
            row.update({name: float(x[0])} if x.size == 1 else {f"{name}_{i}": float(y) for i, y in enumerate(x)})
    return row
