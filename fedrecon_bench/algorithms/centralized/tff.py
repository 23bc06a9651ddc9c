"""Centralized training on engine=tff (the pseudo-code: __init__.py): TF steps over the
round's users one after another (engines/tff/client.py); evaluation is TFF's
reconstruction evaluation and the stored state."""
from __future__ import annotations

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.centralized import SPEC
from fedrecon_bench.engines.tff.algorithm import TffAlgorithm
from fedrecon_bench.engines.tff.client import Steps, reset, results
from fedrecon_bench.engines.tff.evaluators import Reconstruct, Stored


class Centralized(TffAlgorithm):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        recon = Reconstruct(task, info, cfg, "recon")  # TFF traces first: it invalidates Keras models made before
        self.steps = Steps(task, info, cfg.algo.client_optimizer)
        self.client_store = client_store.make(cfg.algo.get("store", "memory"), run_dir)
        self.evaluators = (recon, Stored(self.steps, self.client_store, cfg))

    def initialize(self):
        return {"global": [v.numpy().copy() for v in self.steps.gvars]}

    def next(self, state, client_datasets, client_ids):
        st, metrics, total = self.steps, self.steps.train_metrics, 0
        reset(metrics)
        st.assign(st.gvars, state["global"])
        for cid, ds in zip(client_ids, client_datasets):
            st.assign(st.lvars, self.client_store.get(cid) or st.local_init)
            total += int(st.train(ds, metrics))  # global variables keep their values
            self.client_store.put(cid, [v.numpy() for v in st.lvars])
        out = results(metrics)
        out.update(num_examples=total, **client_store.round_metrics(self.client_store))
        return {"global": [v.numpy().copy() for v in st.gvars]}, out

    def global_weights(self, state):
        return self.weights(state["global"])
