"""FedProx (Li, Sahu, Zaheer, Sanjabi, Talwalkar, Smith, MLSys 2020): FedAvg whose clients
minimize their loss plus a proximal term that keeps them near the round's global model.

    for each round t:
        S <- sample clients_per_round training clients                 (the driver)
        for each client i in S, in parallel:
            w_i <- w_t;  w_i <- w_i - eta_c (grad L(w_i; b) + mu (w_i - w_t)) over D_i's batches b
                         (the gradient of L + mu/2 ||w_i - w_t||^2; every variable global,
                         algo.client_epochs epochs, at most algo.client_steps_max steps)
            send w_t - w_i, weighted by algo.client_weighting
        w_{t+1} <- ServerOpt(w_t, aggregate of the updates)               (a mean, or DP)
    evaluation: as FedAvg's (the global model; algo.eval=finetune: a tuned copy per user).

mu = 0 is FedAvg exactly. engine=tff: TFF's FedAvg process with this proximal gradient in
its client optimizer (tff.py; TFF 0.87's build_weighted_fed_prox has the opposite sign);
engine=fast: FedAvg's client with the engine's proximal term (fast.py).
"""
from fedrecon_bench.algorithms.api import EngineKey, Spec
from fedrecon_bench.algorithms.fedavg import FIELDS
from fedrecon_bench.schema import Field

SPEC = Spec(
    name="fedprox", title="FedProx (Li et al., MLSys 2020)",
    engines={"fast": "fast:FedProx", "tff": "tff:FedProx"}, sends="all",
    weightings=("examples", "uniform", "tokens"), eval_modes=("", "finetune", "global"),
    engine_keys=(EngineKey("algo.client_weighting", "tokens", "fast",
                           "TFF's build_weighted_fed_prox weights by examples or uniformly"),),
    fields=(*FIELDS, Field("algo.mu", "number", low=0, note="(the proximal strength; 0 = FedAvg)")),
)
