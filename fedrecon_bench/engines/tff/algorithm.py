"""engine=tff's algorithm bases (engines/fast/algorithm.py is the JAX twin).

    TffAlgorithm  the config's refusals, the aggregator (aggregate.py: TFF's weighted mean,
                  or its DP factory), evaluation through the listed evaluators
    TffProcess    an algorithm that is one TFF `LearningProcess` (`self.process`), built by
                  one of TFF's builders
"""
from __future__ import annotations

from fedrecon_bench import engines, weighting
from fedrecon_bench.algorithms.api import Algorithm, Weights
from fedrecon_bench.engines.tff import aggregate
from fedrecon_bench.engines.tff import weighting as tff_weighting


class TffAlgorithm(Algorithm):
    engine = "tff"
    evaluators: tuple = ()  # evaluators.py pieces, headline first (set by each algorithm)

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        engines.check(cfg, self.spec, "tff")
        self.task, self.info, self.cfg = task, info, cfg
        self.weighting = weighting.kind(cfg) if self.spec.federated else "examples"
        self.agg = aggregate.build(cfg, self.spec)
        m = task.fast_model(info)  # the variables' names (the same model on both engines)
        self.names = list(m.global_names if self.spec.sends == "global" else m.model_order)

    def client_weighting(self):
        """The `client_weighting` argument of TFF's builders."""
        return tff_weighting.build(self.weighting)

    def weights(self, trainable) -> Weights:
        return Weights([x for x in trainable], [], self.names)

    def evaluators_for(self, seen: bool) -> tuple:
        """The evaluation pieces for unseen or seen users, headline first (an algorithm may
        lead with another piece for seen users)."""
        return self.evaluators

    def eval_modes(self, seen: bool) -> tuple:
        return tuple(ev.label(seen) for ev in self.evaluators_for(seen))

    def evaluate(self, state, datasets, client_ids=None, seen: bool = False, recon_from=None,
                 records=None) -> dict:
        """Pooled metrics from each evaluator; with `records`, each client's own as well, from
        a second pass of TF steps per client (evaluators.py: `each`)."""
        w = self.global_weights(state)
        pieces = self.evaluators_for(seen)
        out = {ev.label(seen): ev.evaluate(w, datasets, client_ids, seen, recon_from) for ev in pieces}
        if records is not None:
            for ev in pieces:
                records.add(ev.label(seen), client_ids, ev.each(w, datasets, client_ids, seen, recon_from))
        return out


class TffProcess(TffAlgorithm):
    """`self.process` is built by the subclass (with `self.agg.factory()` as its aggregator)."""

    def initialize(self):
        return self.process.initialize()

    def next(self, state, datasets, client_ids=None):
        out = self.process.next(state, datasets)
        metrics = dict(out.metrics["client_work"]["train"])
        metrics.update(self.agg.round_metrics(state.aggregator, out.metrics["aggregator"]))
        return out.state, metrics

    def dp_clip(self, state) -> float | None:
        return self.agg.clip(state.aggregator)

    def global_weights(self, state) -> Weights:
        """What the server holds: the global model weights only."""
        return self.weights(self.process.get_model_weights(state).trainable)
