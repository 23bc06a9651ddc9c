"""Stateful FedAvg: clients keep their local variables between rounds.

    store <- {}                                                    (client-state store)
    for each round t:
        S <- sample clients_per_round training clients             (the loop)
        for each client i in S:
            l_i <- store[i] if i was sampled before, else init      (local variables)
            g_i <- g_t
            for each batch b of D_i: (g_i, l_i) <- ClientOpt((g_i, l_i), grad L(g_i, l_i; b))
            store[i] <- l_i;  send g_t - g_i                        (local variables stay)
        g_{t+1} <- ServerOpt(g_t, mean of (g_t - g_i) weighted by |D_i|, or uniformly)
    evaluation of unseen users (no state): local variables fresh from init, and
    reconstructed as FedRecon does (both reported); seen users use their stored state.

TFF has no stateful-client process, so rounds run as TF client steps
(`tf.function`) orchestrated here, with TFF optimizers on client and server;
the reconstruction evaluation is TFF's `build_fed_recon_eval`. Under DP the global
updates go through the aggregation process of TFF's DP factory (algorithms/dp_tff.py);
the local variables never leave the client, so DP covers all that travels.
"""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrecon_bench import client_store, optimizers, privacy, splits, weighting
from fedrecon_bench.algorithms import dp_tff
from fedrecon_bench.algorithms.fedrecon import FedRecon


class StatefulFedAvg:
    name = "stateful_fedavg"
    eval_modes = ("recon", "fresh")  # the first is the headline one

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        self.task, self.info, a = task, info, cfg.algo
        # TFF traces its computations in graphs, which invalidates Keras models made
        # before; so the reconstruction evaluator comes first, our eager model after.
        self.recon = FedRecon(task, info, cfg)
        self.parts = task.keras_parts(info)
        layer_vars = lambda layers: [w for l in layers for w in l.trainable_weights]
        self.gvars, self.lvars = layer_vars(self.parts.global_layers), layer_vars(self.parts.local_layers)
        self.local_init = [v.numpy().copy() for v in self.lvars]  # seeded: every client starts here
        self.loss = task.loss_fn()()
        self.client_opt = optimizers.build(a.client_optimizer, "algo.client_optimizer")
        self.server_opt = optimizers.build(a.server_optimizer, "algo.server_optimizer")
        self.store = client_store.make(a.get("store", "memory"), run_dir)
        self.uniform = a.name != "centralized" and weighting.kind(cfg) == "uniform"
        self.dp = privacy.params(cfg) if a.name != "centralized" else None
        self.dp_agg = dp_tff.Aggregator(self.dp, [v.shape for v in self.gvars]) if self.dp else None
        self._measure_half = splits.build(cfg.split.eval, "split.eval", evaluation=True)
        specs = [tf.TensorSpec(v.shape, v.dtype) for v in self.gvars + self.lvars]
        self._opt_init = self.client_opt.initialize(specs)
        self._train_metrics, self._eval_metrics = self._metrics(), self._metrics()
        self._train_client = tf.function(self._train_client_fn)  # traced once: same metric objects
        self._eval_client = tf.function(self._eval_client_fn)

    # --- the client ----------------------------------------------------------
    def _train_client_fn(self, dataset, metrics):
        vars_ = self.gvars + self.lvars

        def step(carry, batch):
            n, opt_state = carry
            with tf.GradientTape() as tape:
                pred = self.parts.model(batch["x"], training=True)
                loss = self.loss(batch["y"], pred)
            grads = tape.gradient(loss, vars_)
            for m in metrics[:-1]:
                m.update_state(batch["y"], pred)
            metrics[-1].update_state(loss)
            opt_state, new = self.client_opt.next(opt_state, tuple(vars_), tuple(grads))
            for v, w in zip(vars_, new):
                v.assign(w)
            return n + tf.shape(batch["y"])[0], opt_state

        n, _ = dataset.reduce((tf.constant(0), self._opt_init), step)
        return n

    def _eval_client_fn(self, dataset, metrics):
        for batch in dataset:
            pred = self.parts.model(batch["x"], training=False)
            for m in metrics[:-1]:
                m.update_state(batch["y"], pred)
            metrics[-1].update_state(self.loss(batch["y"], pred))

    def _metrics(self):
        return [*self.task.metrics_fn()(), tf.keras.metrics.Mean(name="loss")]

    def _set(self, variables, values):
        for v, x in zip(variables, values):
            v.assign(x)

    # --- the server ------------------------------------------------------------
    def initialize(self):
        g = [v.numpy().copy() for v in self.gvars]
        specs = [tf.TensorSpec(v.shape, v.dtype) for v in self.gvars]
        state = {"global": g, "opt": self.server_opt.initialize(specs)}
        return {**state, "dp": self.dp_agg.initialize()} if self.dp else state

    def next(self, state, client_datasets, client_ids):
        metrics, deltas, examples = self._train_metrics, [], []
        for m in metrics:
            m.reset_state()
        for cid, ds in zip(client_ids, client_datasets):
            self._set(self.gvars, state["global"])
            self._set(self.lvars, self.store.get(cid) or self.local_init)
            examples.append(int(self._train_client(ds, metrics)))
            self.store.put(cid, [v.numpy() for v in self.lvars])
            deltas.append([g0 - v.numpy() for g0, v in zip(state["global"], self.gvars)])
        new_state, out = {}, {m.name: float(m.result()) for m in metrics}
        if self.dp:
            new_state["dp"], pseudo_grad, dp_metrics = self.dp_agg.next(state["dp"], deltas)
            out.update(dp_metrics)
        else:
            weights = np.ones(len(examples)) if self.uniform else np.asarray(examples, np.float64)
            w = weights / max(weights.sum(), 1)
            pseudo_grad = [np.sum([wi * d[k] for wi, d in zip(w, deltas)], axis=0).astype(np.float32)
                           for k in range(len(self.gvars))]
        as_t = lambda xs: tuple(tf.convert_to_tensor(x) for x in xs)  # TFF optimizers check tf shapes
        opt, new = self.server_opt.next(state["opt"], as_t(state["global"]), as_t(pseudo_grad))
        out.update(num_examples=int(sum(examples)), store_clients=len(self.store),
                   store_bytes=self.store.nbytes)
        opt = tf.nest.map_structure(np.asarray, opt)
        return {"global": [np.asarray(x) for x in new], "opt": opt, **new_state}, out

    def dp_clip(self, state) -> float:
        """The DP clip the next round would use."""
        return dp_tff.clip(self.dp, state["dp"])

    def evaluate(self, state, client_datasets, client_ids, seen: bool = False, recon_from=None) -> dict:
        """{'recon': ..., 'fresh': ...} for unseen users; seen users use their stored state,
        measured on all their held-out data."""
        measured = (client_datasets if recon_from is not None
                    else [self._measure_half(ds)[1] for ds in client_datasets])
        fresh = self._eval_metrics
        for m in fresh:
            m.reset_state()
        self._set(self.gvars, state["global"])
        for cid, ds in zip(client_ids, measured):
            stored = self.store.get(cid) if seen else None
            self._set(self.lvars, stored or self.local_init)
            self._eval_client(ds, fresh)
        recon = self.recon.evaluate_weights(self.global_weights(state), client_datasets, recon_from)
        label = "stored" if seen else "fresh"
        return {"recon": recon, label: {m.name: float(m.result()) for m in fresh}}

    def global_weights(self, state):
        import tensorflow_federated as tff

        return tff.learning.models.ModelWeights(trainable=list(state["global"]), non_trainable=[])
