"""Ditto (Li, Hu, Beirami, Smith, ICML 2021): FedAvg trains the global model w; every sampled
client also trains its own personal model v_k, pulled towards the round's w.

    store <- {}                                                 (the client store: v_k per client)
    for each round t:
        S <- sample clients_per_round training clients          (the driver)
        for each client k in S, in parallel:
            w_k <- w_t;  w_k <- w_k - eta_c grad F_k(w_k; b) over D_k's batches b
                         (FedAvg's client exactly: every variable, algo.client_epochs epochs,
                         at most algo.client_steps_max steps)
            send w_t - w_k, weighted by algo.client_weighting
            v_k <- store[k], or at the first visit w_0 (algo.personal_init=initial, the
                   paper's Algorithm 1) or w_t (=global)
            s times (algo.personal_epochs over D_k's batches, at most algo.personal_steps_max):
                v_k <- v_k - eta_p (grad F_k(v_k; b) + lambda (v_k - w_t))      (lambda: algo.lam)
            store[k] <- v_k                                      (v_k never leaves the client)
        w_{t+1} <- ServerOpt(w_t, aggregate of the updates)      (a mean, or DP: only w travels)
    evaluation, "personal" (the headline):
        seen users: their stored v_k as is, measured on their held-out data (one never
                    sampled: its first v, as above)
        unseen users: v <- w_T, the same proximal steps on the reconstruction part of
                    split/eval, then measured on the other part
    "global": w_T as is (FedAvg's evaluation).

The global model is FedAvg's round for round: fast.py runs FedAvg's round itself, then the
personal steps in a second pass over the same clients (test_ditto.py checks the equality).

How v is stored (sparse tables: MovieLens' 3,706 x 50 item table). The store keeps every
variable of v in full, the whole table included (741 KB a MovieLens client; with
algo.store=disk one .npz a client, 3.6 GB for all 4,832 training users: Ditto's memory cost,
summary.json's client_store.bytes). Nothing smaller is exact: a row j the client has no data
for still moves at every visit, s plain SGD steps giving
v_j <- w_t,j + (1 - eta_p lambda)^s (v_j - w_t,j), so it depends on w at each of the client's
past visits, which nothing else keeps; and a seen user's held-out items need not be rows it
trained. The computation stays small: v's steps run on the client's view (its own rows,
pulled at every step), and its other rows take that closed form once per visit. With a
personal optimizer that is not plain SGD (momentum, adaptive) the closed form does not hold,
so every row of v steps (exact for any optimizer, slower). A round holds only the sampled
clients' models (and the data cache): the store is read and written per round, and an
evaluation reads seen users' models in chunks bounded in bytes.

engine=tff is refused: TFF has no Ditto process, and its personal models per client would
need TF client steps with a proximal term and their own evaluators (engine=fast only).
"""
from fedrecon_bench.algorithms.api import Refusal, Spec
from fedrecon_bench.algorithms.fedavg import FIELDS as FEDAVG_FIELDS
from fedrecon_bench.optimizers import NAMES as OPTIMIZERS
from fedrecon_bench.schema import Field, positive_int

SPEC = Spec(
    name="ditto", title="Ditto (Li et al., ICML 2021): FedAvg plus a personal model per client",
    engines={"fast": "fast:Ditto",
             "tff": Refusal("TFF has no Ditto process, and Ditto keeps a whole personal model per client "
                            "(engine=fast runs them from its client store)")},
    sends="all", weightings=("examples", "uniform", "tokens"), client_state=True,
    eval_modes=("personal", "global"),
    fields=(*FEDAVG_FIELDS[:2],  # client_epochs, client_steps_max: FedAvg's client
            Field("algo.lam", "number", low=0, default=0.1,
                  note="(lambda, the pull of v towards the global model; 0 = v trains alone)"),
            Field("algo.personal_optimizer.name", "choice", choices=OPTIMIZERS, default="sgd"),
            Field("algo.personal_optimizer.learning_rate", "number", low=0, strict=True, default=0.1),
            positive_int("algo.personal_epochs", default=1),
            positive_int("algo.personal_steps_max", none="no cap"),
            Field("algo.personal_init", "choice", choices=("initial", "global"), default="initial"),
            Field("algo.store", "choice", choices=("memory", "disk"), default="disk")),
)
