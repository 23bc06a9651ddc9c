"""HypCluster (Mansour, Mohri, Ro, Suresh, "Three Approaches for Personalization with
Applications to Federated Learning", 2020; Motley's cross-device baseline): K sets of
global variables; each client trains the set that fits its data best. Every variable is
global, as in FedAvg, and no client keeps state.

    w^0 <- the task's initial weights; w^k (k = 1..K-1) <- the same initializer with seed
           SeedSequence([seed, k]) (or all from algo.warm_start: FedAvg runs' final weights)
    for each round t:
        S <- sample clients_per_round training clients                 (the driver)
        for each client i in S, in parallel:
            k_i <- argmin_k L(w^k; D_i)     (the loss on all of i's training batches, once,
                                             training=False, as Motley measures its whole
                                             training set; a tie or a non-finite loss: the
                                             lowest k that is finite)
            w_i <- w^{k_i};  FedAvg's ClientUpdate on w_i    (algo.client_epochs epochs,
                                             at most algo.client_steps_max steps)
            send k_i and w^{k_i} - w_i, weighted by algo.client_weighting
        for each set k:
            S_k <- {i in S: k_i = k}
            if S_k is not empty: w^k <- ServerOpt_k(w^k, the weighted mean of S_k's updates)
            (a set nobody chose stays as it is, with its own server optimizer state)
    under DP (dp=gaussian_*): a client's update is the K-set vector (its set's update,
        zeros in the others), clipped as one vector, so one client still moves the model by
        at most the clip; the sum over S is noised and divided by clients_per_round, as
        TFF's DP mean, and every set steps with it (the noise hides who chose which set;
        the privacy accounting is FedAvg's)
    evaluation: each user picks k on its reconstruction part (split/eval's first part;
        seen users: all their training data) the same way, and w^k is measured on the
        rest (split/eval's other part; seen users: their held-out data). No client state.

Rows: train `cluster_clients_<k>` (how many of the round's clients chose set k), val/test
`cluster_share_<k>` (the fraction of evaluated users who picked set k; per-client records:
`tally_cluster.<k>`), so a reader sees whether clusters form. With K = 1 every round is
FedAvg's exactly. Motley warm-starts from K FedAvg runs because K random sets tend to
collapse to one; one warm-start path gives K equal sets, which tie, so every client picks
set 0 (give one path per set to break the tie).
engine=fast only (fast.py); TFF 0.87 has no HypCluster process.
"""
import os

from fedrecon_bench.algorithms.api import Refusal, Spec
from fedrecon_bench.algorithms.fedavg import FIELDS as FEDAVG_FIELDS
from fedrecon_bench.schema import Field, positive_int

WEIGHTS_FILE = "global_weights.npz"  # a completed run's final global weights (summary.py)


def warm_paths(v) -> list:
    """algo.warm_start as a list of paths (null: none)."""
    if v is None:
        return []
    return [v] if isinstance(v, str) else list(v)


def weights_file(path: str) -> str:
    """A run dir's global_weights.npz, or the file itself."""
    path = os.path.expanduser(path)
    return os.path.join(path, WEIGHTS_FILE) if os.path.isdir(path) else path


class WarmStart(Field):
    """algo.warm_start: null, a run dir or its global_weights.npz, or a list of them (one per
    set); each must exist before anything loads (shapes are checked once the model is built)."""

    def problem(self, v):
        if v is None:
            return None
        if not isinstance(v, str) and not (hasattr(v, "__iter__") and all(isinstance(p, str) for p in v)):
            return f"{self.key}={v!r} must be null, a path or a list of paths {self.note}"
        for p in warm_paths(v):
            if not os.path.isfile(weights_file(p)):
                what = f"has no {WEIGHTS_FILE}" if os.path.isdir(os.path.expanduser(p)) else "does not exist"
                return (f"{self.key}={p!r} {what}; give a completed +algo=fedavg run dir of this task "
                        f"(or its {WEIGHTS_FILE}), or null")
        return None


SPEC = Spec(
    name="hypcluster", title="HypCluster (Mansour et al., 2020): K model sets, each client trains its best",
    engines={"fast": "fast:HypCluster",
             "tff": Refusal("TFF 0.87 has no HypCluster process (K model sets chosen per client)")},
    sends="all", weightings=("examples", "uniform", "tokens"),
    fields=(*(f for f in FEDAVG_FIELDS if f.key.startswith("algo.client_")),
            positive_int("algo.clusters", note="(K, the number of model sets; 1 = FedAvg)"),
            WarmStart("algo.warm_start", "str", none="no warm start",
                      note="(FedAvg run dirs or their global_weights.npz)")),
)
