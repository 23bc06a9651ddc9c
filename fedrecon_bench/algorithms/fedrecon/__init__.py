"""Federated Reconstruction (Singhal et al., NeurIPS 2021, Algorithm 1).

    for each round t:
        S  <- sample clients_per_round training clients                (the driver)
        for each client i in S, in parallel:
            D_i^s, D_i^q <- split(D_i)                                  (split/train)
            l_i <- init;  l_i <- l_i - eta_r grad_l L(g_t, l_i; D_i^s)   (reconstruction)
            g_i <- g_t;   g_i <- g_i - eta_u grad_g L(g_i, l_i; D_i^q)   (global update;
                          algo.jointly_train_variables: (g_i, l_i) both train here)
            send g_t - g_i, weighted by algo.client_weighting            (l_i never leaves)
        g_{t+1} <- ServerOpt(g_t, aggregate of the updates)               (a mean, or DP)
    evaluation: reconstruct l_i on D_i^s, measure on the disjoint D_i^q (split/eval);
    seen users reconstruct on their training data and are measured on held-out data.

engine=tff: TFF's build_fed_recon / build_fed_recon_eval (tff.py). engine=fast: the same
in JAX (fast.py), which also runs the authors' growing reconstruction epochs,
jointly_train_variables and evaluate_reconstruction: TFF's client step has no round
number, trains only the global variables after reconstruction and counts no metrics
during it.
"""
from fedrecon_bench.algorithms.api import EngineKey, Spec
from fedrecon_bench.schema import Field

_TFF_STEP = "TFF's FedRecon client step cannot run it"

SPEC = Spec(
    name="fedrecon", title="Federated Reconstruction (Singhal et al., NeurIPS 2021)",
    engines={"fast": "fast:FedRecon", "tff": "tff:FedRecon"},
    weightings=("examples", "uniform", "tokens"),
    engine_keys=(EngineKey("split.train.recon_epochs_constant", False, "fast", _TFF_STEP),
                 EngineKey("algo.jointly_train_variables", True, "fast", _TFF_STEP),
                 EngineKey("algo.evaluate_reconstruction", True, "fast", _TFF_STEP)),
    fields=(Field("algo.jointly_train_variables", "bool", default=False),
            Field("algo.evaluate_reconstruction", "bool", default=False)),
)
