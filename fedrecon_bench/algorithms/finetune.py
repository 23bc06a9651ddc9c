"""Fine-tuning evaluation (the FedAvg + fine-tuning baseline of the FedRecon paper).

    for each evaluation user i:
        w_i <- w (a copy of the global model)
        D_i^s, D_i^q <- split(D_i)                          (split/eval: even / odd batches;
                                  seen users: D_i^s = their training data, D_i^q = held-out data)
        for step in finetune steps over D_i^s: v <- v - eta * grad_v L(w_i; b)
                                     for v in the chosen variables (all | local | global)
        measure w_i on D_i^q                                (never seen while fine-tuning)

Runs as TF client steps (`tf.function`); metrics aggregate over all users by
summing the Keras metric states, as TFF's evaluation does.
"""
from __future__ import annotations

import tensorflow as tf

from fedrecon_bench import optimizers, splits
from fedrecon_bench.algorithms import FINETUNE_VARIABLES as VARIABLES
from fedrecon_bench.errors import UserError


class FineTuneEvaluator:
    def __init__(self, task, info: dict, ft, eval_split, key: str = "algo.finetune"):
        if ft.variables not in VARIABLES:
            raise UserError(f"{key}.variables={ft.variables!r} is unknown; use one of "
                            f"{', '.join(VARIABLES)}")
        self.task = task
        self.parts = task.keras_parts(info)  # build after any TFF tracing (see stateful_fedavg)
        layers = {"all": [*self.parts.global_layers, *self.parts.local_layers],
                  "local": self.parts.local_layers, "global": self.parts.global_layers}[ft.variables]
        self.tuned = [w for l in layers for w in l.trainable_weights]
        self.all = self.parts.model.trainable_weights
        self.gvars = [w for l in self.parts.global_layers for w in l.trainable_weights]
        self.lvars = [w for l in self.parts.local_layers for w in l.trainable_weights]
        self.local_init = [w.numpy().copy() for w in self.lvars]  # seeded: reconstruction starts here
        self.opt = optimizers.build(ft.optimizer, f"{key}.optimizer")
        self._opt_init = self.opt.initialize([tf.TensorSpec(v.shape, v.dtype) for v in self.tuned])
        self.split = splits.build(eval_split, "split.eval", evaluation=True)
        # Seen users tune on all batches of their training data (split/eval's epochs and cap).
        self.seen_split = splits.build(eval_split, "split.eval", evaluation=True, split_dataset=False)
        self.loss = task.loss_fn()()
        self.metrics = [*task.metrics_fn()(), tf.keras.metrics.Mean(name="loss")]
        self._tune = tf.function(self._tune_fn)
        self._measure = tf.function(self._measure_fn)

    def _tune_fn(self, dataset):
        def step(opt_state, batch):
            with tf.GradientTape() as tape:
                loss = self.loss(batch["y"], self.parts.model(batch["x"], training=True))
            grads = tape.gradient(loss, self.tuned)
            opt_state, new = self.opt.next(opt_state, tuple(self.tuned), tuple(grads))
            for v, w in zip(self.tuned, new):
                v.assign(w)
            return opt_state

        dataset.reduce(self._opt_init, step)

    def _measure_fn(self, dataset):
        for batch in dataset:
            pred = self.parts.model(batch["x"], training=False)
            for m in self.metrics[:-1]:
                m.update_state(batch["y"], pred)
            self.metrics[-1].update_state(self.loss(batch["y"], pred))

    def evaluate(self, weights, client_datasets, tune_datasets=None, global_only: bool = False) -> dict:
        """`weights` in `model.trainable_weights` order, or (global_only) the global
        layers' weights, local variables starting from their initializer (reconstruction)."""
        for m in self.metrics:
            m.reset_state()
        for i, ds in enumerate(client_datasets):
            if tune_datasets is None:
                tune, measure = self.split(ds)
            else:
                tune, measure = self.seen_split(tune_datasets[i])[0], ds
            if global_only:
                for v, w in zip(self.gvars + self.lvars, list(weights) + self.local_init):
                    v.assign(w)
            else:
                for v, w in zip(self.all, weights):
                    v.assign(w)
            self._tune(tune)
            self._measure(measure)
        return {m.name: float(m.result()) for m in self.metrics}
