"""Centralized training, the paper's "server MF" reference, engine=fast.

    per-user variables l_u live on the server, in one store (init on first use)
    for each round: for each user u of the round, in order (fast/execute.py: chain):
        for each batch b of D_u: (g, l_u) <- Opt((g, l_u), grad L(g, l_u; b))
    unseen users: reconstruct l_u as FedRecon does; seen users: use the stored l_u.

Sequential SGD over the pooled training data: the global variables carry over from
user to user (no averaging). Equal to engine=tff's algorithms/centralized.py.
"""
from __future__ import annotations

from fedrecon_bench.algorithms.fast.stateful_fedavg import StatefulFedAvg


class Centralized(StatefulFedAvg):
    name = "centralized"

    def _user(self, g, c):
        g_u = self.views(g, c["rows"])
        new, tally = self.solo.train({**g_u, **c["local"]}, {}, self.client_opt, c["data"], c["steps"],
                                       c["key"], local=True)
        g = {n: (p.at[c["rows"][self.m.sparse[n]]].set(new[n], mode="drop") if n in self.m.sparse
                 else new[n]) for n, p in g.items()}
        return g, {"sum": tally, "keep": {n: new[n] for n in c["local"]}}

    def train_round(self, state, c, steps):
        g, tally, local = self.exec.chain(self._user, state["global"], c, steps)
        return {**state, "global": g, "round": state["round"] + 1}, local, tally
