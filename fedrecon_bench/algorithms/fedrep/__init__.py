"""FedRep (Collins, Hassani, Mokhtari, Shakkottai, ICML 2021, Algorithm 1): a shared
representation (the global variables) and a personal head (the local variables) that each
client keeps between rounds.

    store <- {}                                                     (the client store)
    for each round t:
        S <- sample clients_per_round training clients              (the driver)
        for each client i in S, in parallel:
            l_i <- store[i] if i was sampled before, else init
            for local_epochs epochs over D_i (at most local_steps_max steps):
                l_i <- l_i - eta_l grad_l L(g_t, l_i; b)            (the head; g_t frozen;
                                                                     algo.reconstruction_optimizer)
            g_i <- g_t
            for global_epochs epochs over D_i (at most global_steps_max steps):
                g_i <- g_i - eta_g grad_g L(g_i, l_i; b)            (the representation; l_i frozen;
                                                                     algo.client_optimizer)
            store[i] <- l_i;  send g_t - g_i, weighted by algo.client_weighting
                                                                    (l_i never leaves)
        g_{t+1} <- ServerOpt(g_t, aggregate of the updates)          (a mean, or DP)
    evaluation: seen users measure with their stored l_i ("stored", the headline; never
    sampled: init); unseen users fit l_i from init on one part of their data, as FedRecon's
    reconstruction does, and are measured on the other ("recon", the headline); also
    "recon" for seen users (from init on their training data) and "fresh" for unseen ones
    (init, no fitting).

A client's first visit (l_i = init) is FedRecon's client update with split/train mode=reuse,
recon_epochs = local_epochs and post_recon_epochs = global_epochs (test_fedrep.py).
engine=fast: stateful FedAvg's round with these two phases (fast.py); engine=tff: TF
client steps orchestrated in Python, as stateful FedAvg's (tff.py).
"""
from fedrecon_bench.algorithms.api import Spec
from fedrecon_bench.schema import Field, positive_int

SPEC = Spec(
    name="fedrep", title="FedRep: a shared representation, personal heads kept by clients (Collins et al., ICML 2021)",
    engines={"fast": "fast:FedRep", "tff": "tff:FedRep"},
    weightings=("examples", "uniform", "tokens"), client_state=True, eval_modes=("recon", "stored", "fresh"),
    fields=(positive_int("algo.local_epochs", note="(epochs on the local variables per visit)"),
            positive_int("algo.global_epochs", default=1, note="(epochs on the global variables per round)"),
            positive_int("algo.local_steps_max", none="no cap", default=None),
            positive_int("algo.global_steps_max", none="no cap", default=None),
            Field("algo.store", "choice", choices=("memory", "disk"), default="memory")),
)
