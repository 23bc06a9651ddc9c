"""Centralized training, the paper's "server MF" reference.

    per-user variables l_u live on the server, in one store (init on first use)
    for each round: for each user u of the round, in order (sampled like the federated ones):
        for each batch b of D_u: (g, l_u) <- Opt((g, l_u), grad L(g, l_u; b))
    evaluation: "recon": unseen users reconstruct l_u as FedRecon does (seen users too);
    "fresh": unseen users with l_u from init; "stored": seen users with their stored l_u.

Ordinary SGD over the pooled training data: the global variables carry over from user to
user (no averaging, no server optimizer: the client optimizer is the optimizer); the only
difference from a Keras `fit` on a user-id-indexed embedding table is that a batch holds
one user's examples. Nothing is sent, so there is no client weighting and no DP.
"""
from fedrecon_bench.algorithms.api import Spec
from fedrecon_bench.schema import Field

SPEC = Spec(
    name="centralized", title="Centralized training (the paper's server-side MF reference)",
    engines={"fast": "fast:Centralized", "tff": "tff:Centralized"},
    federated=False, weightings=("examples",), dp=False, client_state=True,
    eval_modes=("recon", "fresh", "stored"),
    fields=(Field("algo.store", "choice", choices=("memory", "disk"), default="memory"),),
)
