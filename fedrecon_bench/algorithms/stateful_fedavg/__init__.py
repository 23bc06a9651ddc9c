"""Stateful FedAvg: clients keep their local variables between rounds (the paper's baseline
that needs clients to come back).

    store <- {}                                                     (the client store)
    for each round t:
        S <- sample clients_per_round training clients              (the driver)
        for each client i in S, in parallel:
            l_i <- store[i] if i was sampled before, else init
            g_i <- g_t;  one epoch of (g_i, l_i) <- ClientOpt((g_i, l_i), grad L(g_i, l_i; b)) over D_i
            store[i] <- l_i;  send g_t - g_i, weighted by |D_i| or 1
        g_{t+1} <- ServerOpt(g_t, aggregate of the updates)  (DP covers all that travels:
                                                              local variables never leave)
    evaluation: "recon": FedRecon's reconstruction (unseen and seen users); "fresh": unseen
    users with local variables from init (they have no state); "stored": seen users
    with their stored state.

engine=tff: TF client steps orchestrated in Python (TFF has no stateful-client process),
with TFF optimizers, TFF's DP aggregation process and TFF's reconstruction evaluation.
"""
from fedrecon_bench.algorithms.api import Spec
from fedrecon_bench.schema import Field

SPEC = Spec(
    name="stateful_fedavg", title="Stateful FedAvg: clients keep their local variables (the paper's baseline)",
    engines={"fast": "fast:StatefulFedAvg", "tff": "tff:StatefulFedAvg"},
    weightings=("examples", "uniform"), client_state=True, eval_modes=("recon", "fresh", "stored"),
    fields=(Field("algo.store", "choice", choices=("memory", "disk"), default="memory"),),
)
