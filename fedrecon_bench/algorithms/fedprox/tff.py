"""FedProx on engine=tff (the pseudo-code: __init__.py): TFF's FedAvg process (its weighted,
or under DP its unweighted, builder) whose client optimizer steps on the gradient of
L + mu/2 ||w - w_t||^2. TFF's own build_weighted_fed_prox is not used: TFF 0.87 adds
mu (w_t - w) to the gradient, which pushes clients away from w_t (the opposite sign;
test_fedprox.py shows it by hand)."""
from __future__ import annotations

import collections

import tensorflow as tf
import tensorflow_federated as tff

from fedrecon_bench.algorithms.fedavg.tff import FedAvg
from fedrecon_bench.algorithms.fedprox import SPEC


def proximal(inner, mu: float):
    """`inner` (a TFF optimizer) stepping on g + mu (w - w_0), where w_0 is the weights at the
    client's first step (the round's global model, where the term is 0)."""

    class Proximal(tff.learning.optimizers.Optimizer):
        def initialize(self, specs):
            return collections.OrderedDict(
                inner=inner.initialize(specs), started=tf.constant(False),
                anchor=tf.nest.map_structure(lambda s: tf.zeros(s.shape, s.dtype), specs))

        def next(self, state, weights, gradients):
            anchor = tf.nest.map_structure(lambda a, w: tf.where(state["started"], a, w), state["anchor"], weights)
            grads = tf.nest.map_structure(lambda g, w, a: tf.convert_to_tensor(g) + mu * (w - a),
                                          gradients, weights, anchor)
            inner_state, new = inner.next(state["inner"], weights, grads)
            return collections.OrderedDict(inner=inner_state, started=tf.constant(True), anchor=anchor), new

        def get_hparams(self, state):
            return inner.get_hparams(state["inner"])

        def set_hparams(self, state, hparams):
            return collections.OrderedDict(state, inner=inner.set_hparams(state["inner"], hparams))

    return Proximal()


class FedProx(FedAvg):
    spec = SPEC

    def build(self, model_fn, client_optimizer_fn, **opts):
        mu = float(self.cfg.algo.mu)
        if mu:  # mu = 0: FedAvg's process exactly
            client_optimizer_fn = proximal(client_optimizer_fn, mu)
        return super().build(model_fn, client_optimizer_fn=client_optimizer_fn, **opts)
