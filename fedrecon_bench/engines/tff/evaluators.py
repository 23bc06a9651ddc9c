"""Evaluation pieces on engine=tff (engines/fast/evaluators.py is the JAX twin). An algorithm
lists the ones it reports, headline first; each measures a list of client datasets given
the server's weights (algorithms/api.py Weights) and returns pooled metrics.

    Reconstruct  TFF's build_fed_recon_eval (seen users: TF steps from init on their
                 training data, measured on held-out data)
    Global       TFF's build_fed_eval of the global model as is, on the measured part
    FineTune     a copy of the chosen variables tuned per user, then measured (below)
    Stored       the client's stored local variables (seen), or fresh ones from init (unseen)

Fine-tuning (the paper's fine-tuning baseline):

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
from omegaconf import OmegaConf

from fedrecon_bench.engines.tff import optim, split
from fedrecon_bench.engines.tff.client import record, reset, results
from fedrecon_bench.errors import UserError

VARIABLES = ("all", "local", "global")  # algo.finetune.variables


class FineTuneEvaluator:
    """ft: {variables, optimizer} to tune per user before measuring, or None to measure the
    model as is. example_loss: the loss metric weights each batch by its examples (TFF's
    fed_eval) instead of averaging batches (its reconstruction evaluation)."""

    def __init__(self, task, info: dict, ft, eval_split, key: str = "algo.finetune", example_loss: bool = False):
        if ft is not None and ft.variables not in VARIABLES:
            raise UserError(f"{key}.variables={ft.variables!r} is unknown; use one of "
                            f"{', '.join(VARIABLES)}")
        self.task, self.example_loss = task, example_loss
        self.parts = task.keras_parts(info)  # build after any TFF tracing (see client.py)
        layers = {"all": [*self.parts.global_layers, *self.parts.local_layers], "local": self.parts.local_layers,
                  "global": self.parts.global_layers, None: []}[ft.variables if ft is not None else None]
        self.tuned = [w for l in layers for w in l.trainable_weights]
        self.all = self.parts.model.trainable_weights
        self.gvars = [w for l in self.parts.global_layers for w in l.trainable_weights]
        self.lvars = [w for l in self.parts.local_layers for w in l.trainable_weights]
        self.local_init = [w.numpy().copy() for w in self.lvars]  # seeded: reconstruction starts here
        self.opt = optim.build(ft.optimizer, f"{key}.optimizer") if ft is not None else None
        if self.opt is not None:
            self._opt_init = self.opt.initialize(tuple(tf.TensorSpec(v.shape, v.dtype) for v in self.tuned))
        self.split = split.build(eval_split, "split.eval", evaluation=True)
        # Seen users tune on all batches of their training data (split/eval's epochs and cap).
        self.seen_split = split.build(eval_split, "split.eval", evaluation=True, split_dataset=False)
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
        """Updates the metrics on every batch; returns the examples measured."""
        n = tf.constant(0)
        for batch in dataset:
            pred = self.parts.model(batch["x"], training=False)
            for m in self.metrics[:-1]:
                m.update_state(batch["y"], pred)
            size = tf.shape(batch["y"])[0]
            weight = tf.cast(size, tf.float32) if self.example_loss else None
            self.metrics[-1].update_state(self.loss(batch["y"], pred), sample_weight=weight)
            n += size
        return n

    def _client(self, weights, i: int, ds, tune_datasets, global_only: bool):
        """Sets client i's starting weights and tunes them; returns the dataset to measure."""
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
        if self.opt is not None:
            self._tune(tune)
        return measure

    def evaluate(self, weights, client_datasets, tune_datasets=None, global_only: bool = False) -> dict:
        """`weights` in `model.trainable_weights` order, or (global_only) the global
        layers' weights, local variables starting from their initializer (reconstruction)."""
        reset(self.metrics)
        for i, ds in enumerate(client_datasets):
            self._measure(self._client(weights, i, ds, tune_datasets, global_only))
        return results(self.metrics)

    def each(self, weights, client_datasets, tune_datasets=None, global_only: bool = False) -> list[dict]:
        """`evaluate` client by client: each client's record (client.record)."""
        rows = []
        for i, ds in enumerate(client_datasets):
            reset(self.metrics)
            n = self._measure(self._client(weights, i, ds, tune_datasets, global_only))
            rows.append(record(self.metrics, int(n)))
        return rows


# --------------------------------------------------------------------------
# The pieces an algorithm lists
# --------------------------------------------------------------------------
def _model_weights(weights):
    import tensorflow_federated as tff

    return tff.learning.models.ModelWeights(trainable=list(weights.trainable),
                                            non_trainable=list(weights.non_trainable))


class Evaluator:
    def __init__(self, mode: str = ""):
        self.mode = mode

    def label(self, seen: bool) -> str:
        """The mode's name in rows ("" when it is the algorithm's only one)."""
        return self.mode

    def evaluate(self, weights, datasets, client_ids, seen: bool, recon_from) -> dict:
        """The pooled metrics of these clients."""
        raise NotImplementedError

    def each(self, weights, datasets, client_ids, seen: bool, recon_from) -> list[dict]:
        """Each client's own record (client.record): the same evaluation, client by client,
        as TF steps with fresh metrics."""
        raise NotImplementedError


class Reconstruct(Evaluator):
    """TFF's reconstruction evaluation of the global variables (weights: global only)."""

    def __init__(self, task, info: dict, cfg, mode: str = ""):
        import tensorflow_federated as tff

        super().__init__(mode)
        self.task, self.info, self.cfg = task, info, cfg
        self.process = tff.learning.algorithms.build_fed_recon_eval(
            recon_model_fn(task, info), loss_fn=task.loss_fn(), metrics_fn=task.metrics_fn(),
            reconstruction_optimizer_fn=optim.build(cfg.algo.reconstruction_optimizer,
                                                    "algo.reconstruction_optimizer"),
            dataset_split_fn=split.build(cfg.split.eval, "split.eval", evaluation=True))
        self._state, self._seen = self.process.initialize(), None

    @property
    def steps(self) -> FineTuneEvaluator:
        """Reconstruction as TF steps: for seen users (TFF's evaluation splits one dataset only)
        and per-client records; built lazily, after every TFF trace."""
        if self._seen is None:
            self._seen = FineTuneEvaluator(
                self.task, self.info, OmegaConf.create(
                    {"variables": "local", "optimizer": self.cfg.algo.reconstruction_optimizer}),
                self.cfg.split.eval, key="algo.reconstruction")
        return self._seen

    def each(self, weights, datasets, client_ids, seen: bool, recon_from) -> list[dict]:
        return self.steps.each(weights.trainable, datasets, recon_from, global_only=True)

    def evaluate(self, weights, datasets, client_ids, seen: bool, recon_from) -> dict:
        if recon_from is not None:
            return self.steps.evaluate(weights.trainable, datasets, recon_from, global_only=True)
        state = self.process.set_model_weights(self._state, _model_weights(weights))
        _, metrics = self.process.next(state, datasets)
        return dict(metrics["client_work"]["eval"]["current_round_metrics"])


class Global(Evaluator):
    """TFF's fed_eval of the global model as is (weights: every variable, model order)."""

    def __init__(self, task, info: dict, cfg, model_fn, mode: str = ""):
        import tensorflow_federated as tff

        super().__init__(mode)
        self.task, self.info, self.cfg = task, info, cfg
        self.process = tff.learning.algorithms.build_fed_eval(model_fn)
        self._state, self._steps = self.process.initialize(), None
        self._measure_half = split.build(cfg.split.eval, "split.eval", evaluation=True)

    def each(self, weights, datasets, client_ids, seen: bool, recon_from) -> list[dict]:
        if self._steps is None:  # the model as is, as TF steps (built after every TFF trace)
            self._steps = FineTuneEvaluator(self.task, self.info, None, self.cfg.split.eval, example_loss=True)
        return self._steps.each(weights.trainable, datasets, recon_from)

    def evaluate(self, weights, datasets, client_ids, seen: bool, recon_from) -> dict:
        state = self.process.set_model_weights(self._state, _model_weights(weights))
        measured = (datasets if recon_from is not None  # seen users: all held-out data
                    else [self._measure_half(ds)[1] for ds in datasets])
        _, metrics = self.process.next(state, measured)
        return dict(metrics["client_work"]["eval"]["current_round_metrics"])


class FineTune(Evaluator):
    """FineTuneEvaluator over the weights of every variable (model order)."""

    def __init__(self, task, info: dict, cfg, mode: str = "finetune"):
        super().__init__(mode)
        self.tuner = FineTuneEvaluator(task, info, cfg.algo.finetune, cfg.split.eval)

    def evaluate(self, weights, datasets, client_ids, seen: bool, recon_from) -> dict:
        return self.tuner.evaluate(weights.trainable, datasets, recon_from)

    def each(self, weights, datasets, client_ids, seen: bool, recon_from) -> list[dict]:
        return self.tuner.each(weights.trainable, datasets, recon_from)


class Stored(Evaluator):
    """The model with each client's stored local variables (seen users), or fresh ones from
    init (unseen users have none), on client.Steps' Keras model."""

    def __init__(self, steps, store, cfg):
        super().__init__("stored")
        self.steps, self.store = steps, store
        self._measure_half = split.build(cfg.split.eval, "split.eval", evaluation=True)

    def label(self, seen: bool) -> str:
        return "stored" if seen else "fresh"

    def _clients(self, weights, datasets, client_ids, seen: bool, recon_from):
        """Each client's measured dataset, its local variables set (its stored ones or init)."""
        st = self.steps
        measured = (datasets if recon_from is not None
                    else [self._measure_half(ds)[1] for ds in datasets])
        st.assign(st.gvars, weights.trainable)
        for cid, ds in zip(client_ids, measured):
            stored = self.store.get(cid) if seen else None
            st.assign(st.lvars, stored or st.local_init)
            yield ds

    def evaluate(self, weights, datasets, client_ids, seen: bool, recon_from) -> dict:
        metrics = self.steps.eval_metrics
        reset(metrics)
        for ds in self._clients(weights, datasets, client_ids, seen, recon_from):
            self.steps.measure(ds, metrics)
        return results(metrics)

    def each(self, weights, datasets, client_ids, seen: bool, recon_from) -> list[dict]:
        metrics, rows = self.steps.eval_metrics, []
        for ds in self._clients(weights, datasets, client_ids, seen, recon_from):
            reset(metrics)
            rows.append(record(metrics, int(self.steps.measure(ds, metrics))))
        return rows


def recon_model_fn(task, info: dict):
    """A TFF ReconstructionModel of the task's Keras model: global and local layers."""
    import tensorflow_federated as tff

    def model_fn():
        p = task.keras_parts(info)
        return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
            keras_model=p.model, global_layers=p.global_layers,
            local_layers=p.local_layers, input_spec=p.input_spec)
    return model_fn


def keras_model_fn(task, info: dict):
    """A TFF model of the task's Keras model with every variable global (local layers are
    simply trained globally)."""
    import tensorflow_federated as tff

    def model_fn():
        p = task.keras_parts(info)
        return tff.learning.models.from_keras_model(p.model, loss=task.loss_fn()(), input_spec=p.input_spec,
                                                    metrics=task.metrics_fn()())
    return model_fn
