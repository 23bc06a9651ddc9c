"""FedAvg (McMahan et al., AISTATS 2017): every model variable is global.

    for each round t:
        S <- sample clients_per_round training clients                 (the driver)
        for each client i in S, in parallel:
            w_i <- w_t;  w_i <- w_i - eta_c grad L(w_i; b) over D_i's batches b
                         (all variables; algo.client_epochs epochs, at most
                         algo.client_steps_max steps: the authors' recipe)
            send w_t - w_i, weighted by algo.client_weighting
        w_{t+1} <- ServerOpt(w_t, aggregate of the updates)               (a mean, or DP)
    evaluation: the global model as is, on the same measured part of each user's data
    that FedRecon measures on (split/eval; all held-out data for seen users), so the
    two are compared on identical examples; algo.eval=finetune also tunes a copy per
    user first (the FedAvg + fine-tuning baseline), reported as the headline.

For matrix factorization the "user embedding" becomes one vector shared by all users.
engine=tff: TFF's build_weighted_fed_avg and build_fed_eval (tff.py); engine=fast: JAX
(fast.py), which also weights by tokens.
"""
from fedrecon_bench.algorithms.api import EngineKey, Spec
from fedrecon_bench.schema import Field, positive_int

FIELDS = (positive_int("algo.client_epochs", default=1),
          positive_int("algo.client_steps_max", none="no cap"),
          Field("algo.eval", "choice", choices=("global", "finetune"), default="global"),
          Field("algo.finetune.variables", "choice", choices=("all", "local", "global")))

SPEC = Spec(
    name="fedavg", title="Federated Averaging (McMahan et al., AISTATS 2017)",
    engines={"fast": "fast:FedAvg", "tff": "tff:FedAvg"}, sends="all",
    weightings=("examples", "uniform", "tokens"), eval_modes=("", "finetune", "global"),
    engine_keys=(EngineKey("algo.client_weighting", "tokens", "fast",
                           "TFF's build_weighted_fed_avg weights by examples or uniformly"),),
    fields=FIELDS,
)


def client_schedule(a) -> tuple[int, int | None]:
    """(epochs, step cap) of a client's training (checked with FIELDS before anything loads)."""
    return int(a.get("client_epochs", 1)), a.get("client_steps_max")
