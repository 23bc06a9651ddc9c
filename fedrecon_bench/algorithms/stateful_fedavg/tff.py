"""Stateful FedAvg on engine=tff (the pseudo-code: __init__.py). TFF has no stateful-client
process, so rounds run as TF client steps (engines/tff/client.py) orchestrated here, with
TFF optimizers on client and server and the run's aggregator (TFF's DP aggregation
process under DP); evaluation is TFF's reconstruction evaluation and the stored state."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.stateful_fedavg import SPEC
from fedrecon_bench.engines.tff import optim
from fedrecon_bench.engines.tff.algorithm import TffAlgorithm
from fedrecon_bench.engines.tff.client import Steps, reset, results
from fedrecon_bench.engines.tff.evaluators import Reconstruct, Stored


class StatefulFedAvg(TffAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        a = cfg.algo
        recon = Reconstruct(task, info, cfg, "recon")  # TFF traces first: it invalidates Keras models made before
        self.steps = Steps(task, info, a.client_optimizer)
        self.server_opt = optim.build(a.server_optimizer, "algo.server_optimizer")
        self.client_store = client_store.make(a.get("store", "memory"), run_dir)
        self.agg.prepare([v.shape for v in self.steps.gvars])
        self.evaluators = (recon, Stored(self.steps, self.client_store, cfg))

    def initialize(self):
        g = [v.numpy().copy() for v in self.steps.gvars]
        state = {"global": g, "opt": self.server_opt.initialize([tf.TensorSpec(v.shape, v.dtype) for v in self.steps.gvars])}
        agg = self.agg.init()
        return state if agg is None else {**state, "dp": agg}

    def next(self, state, client_datasets, client_ids):
        st, metrics, deltas, examples = self.steps, self.steps.train_metrics, [], []
        reset(metrics)
        for cid, ds in zip(client_ids, client_datasets):
            st.assign(st.gvars, state["global"])
            st.assign(st.lvars, self.client_store.get(cid) or st.local_init)
            examples.append(int(st.train(ds, metrics)))
            self.client_store.put(cid, [v.numpy() for v in st.lvars])
            deltas.append([g0 - v.numpy() for g0, v in zip(state["global"], st.gvars)])
        weights = np.ones(len(examples)) if self.weighting == "uniform" else np.asarray(examples, np.float64)
        agg, pseudo_grad, out = self.agg.combine(state.get("dp"), deltas, weights)
        out = {**results(metrics), **out}
        as_t = lambda xs: tuple(tf.convert_to_tensor(x) for x in xs)  # TFF optimizers check tf shapes
        opt, new = self.server_opt.next(state["opt"], as_t(state["global"]), as_t(pseudo_grad))
        out.update(num_examples=int(sum(examples)), **client_store.round_metrics(self.client_store))
        new_state = {"global": [np.asarray(x) for x in new], "opt": tf.nest.map_structure(np.asarray, opt)}
        return (new_state if agg is None else {**new_state, "dp": agg}), out

    def dp_clip(self, state) -> float | None:
        return self.agg.clip(state.get("dp"))

    def global_weights(self, state):
        return self.weights(state["global"])
