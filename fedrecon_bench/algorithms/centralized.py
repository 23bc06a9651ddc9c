"""Centralized training, the paper's "server MF" reference.

    per-user variables l_u live on the server, in one store (init on first use)
    for each round: for each user u of the round (sampled like the federated ones):
        for each batch b of D_u: (g, l_u) <- Opt((g, l_u), grad L(g, l_u; b))
    unseen users: reconstruct l_u as FedRecon does; seen users: use the stored l_u.

Ordinary SGD over the pooled training data: the global variables carry over from
user to user (no averaging, no server optimizer); the only difference from a
Keras `fit` on a user-id-indexed embedding table is that a batch holds one
user's examples. The client optimizer config is the optimizer used.
"""
from __future__ import annotations


from fedrecon_bench.algorithms.stateful_fedavg import StatefulFedAvg


class Centralized(StatefulFedAvg):
    name = "centralized"

    def next(self, state, client_datasets, client_ids):
        metrics, total = self._train_metrics, 0
        for m in metrics:
            m.reset_state()
        self._set(self.gvars, state["global"])
        for cid, ds in zip(client_ids, client_datasets):
            self._set(self.lvars, self.store.get(cid) or self.local_init)
            total += int(self._train_client(ds, metrics))  # global variables keep their values
            self.store.put(cid, [v.numpy() for v in self.lvars])
        out = {m.name: float(m.result()) for m in metrics}
        out.update(num_examples=total, store_clients=len(self.store), store_bytes=self.store.nbytes)
        return {"global": [v.numpy().copy() for v in self.gvars], "opt": state["opt"]}, out
