"""FedRep on engine=tff (the pseudo-code: __init__.py): stateful FedAvg's TF client steps,
store, aggregator and TFF server optimizer (algorithms/stateful_fedavg/tff.py), with
FedRep's client: its stored local variables trained with the global ones frozen
(algo.reconstruction_optimizer), then the global ones with the local ones frozen
(algo.client_optimizer); TFF's reconstruction evaluation for unseen users."""
from __future__ import annotations

import numpy as np
import tensorflow as tf

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.fedrep import SPEC
from fedrecon_bench.algorithms.fedrep.fast import phases
from fedrecon_bench.algorithms.stateful_fedavg.tff import StatefulFedAvg
from fedrecon_bench.engines.tff import optim
from fedrecon_bench.engines.tff.client import reset, results


def _specs(variables) -> tuple:
    return tuple(tf.TensorSpec(v.shape, v.dtype) for v in variables)


def _repeat(dataset, part):
    """A phase's batches: every batch for `epochs` epochs, at most `steps_max` of them."""
    _, epochs, steps_max = part
    dataset = dataset.repeat(epochs)
    return dataset if steps_max is None else dataset.take(steps_max)


class FedRep(StatefulFedAvg):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)  # steps (client optimizer), store, aggregator, evaluators
        st, a = self.steps, cfg.algo
        self.local_part, self.global_part = phases(a)
        local_opt = optim.build(a.reconstruction_optimizer, "algo.reconstruction_optimizer")
        local = (st.lvars, local_opt, local_opt.initialize(_specs(st.lvars)))
        glob = (st.gvars, st.opt, st.opt.initialize(_specs(st.gvars)))
        self.fit_local = tf.function(lambda ds: st.fit(ds, *local, ()))
        self.fit_global = tf.function(lambda ds, metrics: st.fit(ds, *glob, metrics))

    def evaluators_for(self, seen: bool) -> tuple:
        return self.evaluators[::-1] if seen else self.evaluators  # seen users: stored first

    def _tokens(self, metrics) -> int:
        return int(next(m for m in metrics if m.name == "num_tokens").result()) if self.weighting == "tokens" else 0

    def _client(self, g, cid, ds, metrics):
        """(update, weight, examples) of one client; its new local variables go to the store."""
        st = self.steps
        st.assign(st.gvars, g)
        st.assign(st.lvars, self.client_store.get(cid) or st.local_init)
        if st.lvars:
            self.fit_local(_repeat(ds, self.local_part))
        tokens = self._tokens(metrics)
        n = int(self.fit_global(_repeat(ds, self.global_part), metrics))
        self.client_store.put(cid, [v.numpy() for v in st.lvars])
        delta = [g0 - v.numpy() for g0, v in zip(g, st.gvars)]
        weight = {"examples": n, "uniform": 1, "tokens": self._tokens(metrics) - tokens}[self.weighting]
        if not all(np.isfinite(d).all() for d in delta):  # as TFF's clients: a diverged update weighs 0
            delta, weight = [np.zeros_like(d) for d in delta], 0
        return delta, weight, n

    def next(self, state, client_datasets, client_ids):
        metrics = self.steps.train_metrics
        reset(metrics)
        deltas, weights, examples = zip(*[self._client(state["global"], cid, ds, metrics)
                                          for cid, ds in zip(client_ids, client_datasets)])
        agg, pseudo_grad, out = self.agg.combine(state.get("dp"), list(deltas), np.asarray(weights, np.float64))
        as_t = lambda xs: tuple(tf.convert_to_tensor(x) for x in xs)  # TFF optimizers check tf shapes
        opt, new = self.server_opt.next(state["opt"], as_t(state["global"]), as_t(pseudo_grad))
        out = {**results(metrics), **out, "num_examples": int(sum(examples)),
               **client_store.round_metrics(self.client_store)}
        new_state = {"global": [np.asarray(x) for x in new], "opt": tf.nest.map_structure(np.asarray, opt)}
        return (new_state if agg is None else {**new_state, "dp": agg}), out
