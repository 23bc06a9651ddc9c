"""Centralized training, the paper's "server MF" reference, engine=fast.

    per-user variables l_u live on the server, in one store (init on first use)
    for each round: for each user u of the round, in order (lax.scan):
        for each batch b of D_u: (g, l_u) <- Opt((g, l_u), grad L(g, l_u; b))
    unseen users: reconstruct l_u as FedRecon does; seen users: use the stored l_u.

Sequential SGD over the pooled training data: the global variables carry over from
user to user (no averaging). Equal to engine=tff's algorithms/centralized.py.
"""
from __future__ import annotations

import jax

from fedrecon_bench.algorithms.fast.stateful_fedavg import StatefulFedAvg
from fedrecon_bench.fast import client as fc


class Centralized(StatefulFedAvg):
    name = "centralized"

    def _stateful_round_fn(self, state, local, data, rows, steps, keys):
        def user(g, xs):
            l_u, data_u, rows_u, steps_u, key = xs
            g_u = self.views(g, rows_u)
            new, tally = self.client.train({**g_u, **l_u}, {}, self.client_opt, data_u, *steps_u,
                                           key, local=True)
            g = {n: (p.at[rows_u[self.m.sparse[n]]].set(new[n], mode="drop") if n in self.m.sparse
                     else new[n]) for n, p in g.items()}
            return g, ({n: new[n] for n in l_u}, tally)

        g, (local, tally) = jax.lax.scan(user, state["global"], (local, data, rows, steps, keys))
        return {**state, "global": g, "round": state["round"] + 1}, local, fc.combine(tally)
