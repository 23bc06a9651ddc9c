"""The participation study: accuracy against how often training clients come back.

The paper's argument for FedRecon is that stateful methods need clients to return, which
cross-device clients rarely do, while FedRecon keeps no client state. Here every algorithm
trains on MovieLens-1M (experiment=movielens_paper: 100 clients per round, each algorithm at its
paper-table client rate through the preset's `tuned:` block) for as many rounds as give each
training client about VISITS visits on average: rounds = visits x training users / 100
(4,832 training users for unseen users, 6,040 for seen ones). Stateful: stateful FedAvg, FedRep,
Ditto; stateless: FedRecon, FedAvg + fine-tuning, HypCluster (K = 2). 3 seeds each, unseen
(task.split_by=user) and seen (task.split_by=example) users, one evaluation at the end.

    report  table.md/csv/tex (test users, a column per rounds setting, mean ± std over seeds)
            and plots/: test rating accuracy against summary.json participation.mean_visits
            (measured, not nominal), one line per algorithm, a plot per user split

--reduced: seed 0 only (a third of the runs).
Ditto keeps its personal models in memory (algo.store=memory), as in the paper-table study.
"""
from __future__ import annotations

import os

from analysis import study as S
from analysis.study_paper import available

VISITS = (0.5, 1, 2, 5, 20)
TRAIN_USERS = {"user": 4832, "example": 6040}
CLIENTS_PER_ROUND = 100
ALGOS = {
    "stateful_fedavg": ["+algo=stateful_fedavg"],
    "fedrep": ["+algo=fedrep"],
    # Ditto's own keys at their defaults, as measured (the preset's tuned rows would change them)
    "ditto": ["+algo=ditto", "algo.store=memory", "algo.lam=0.1", "algo.personal_optimizer.learning_rate=0.1",
              "algo.personal_init=initial"],
    "fedrecon": ["+algo=fedrecon"],
    "fedavg": ["+algo=fedavg", "algo.eval=finetune"],
    "hypcluster": ["+algo=hypcluster", "algo.clusters=2"],
}
METRIC = "rating_accuracy"


def rounds_for(split: str) -> list[int]:
    return [round(v * TRAIN_USERS[split] / CLIENTS_PER_ROUND) for v in VISITS]


def run(study: S.Study, args) -> list[str]:

    seeds = "0" if args.reduced else "0,1,2"
    for name in available(ALGOS):
        for split in TRAIN_USERS:
            rounds = ",".join(map(str, rounds_for(split)))
            study.sweep(f"runs/{name}/{split}", [
                "experiment=movielens_paper", "logger=none", *ALGOS[name], f"task.split_by={split}",
                f"clients_per_round={CLIENTS_PER_ROUND}", f"seed={seeds}", f"rounds={rounds}", "eval_every=${rounds}",
                "checkpoint_every=0"])  # seed before rounds: job k of --reduced is job k of the full grid
    return [] if study.dry_run else _report(study)


def _report(study: S.Study) -> list[str]:
    from analysis import plot, table

    runs = study.runs("runs")
    out = table.Table(runs, [METRIC], "test", rows=["algo", "eval_mode", "task.split_by"],
                      cols=["rounds"]).write(study.out, "table")
    out += study.doc("participation", out[0], "make participation-study")
    for split in TRAIN_USERS:
        some = [r for r in runs if r.key("task.split_by") == split]
        if some:
            out += plot.plot_against(some, os.path.join(study.out, "plots", split),
                                     "participation.mean_visits", METRIC, rows=["algo"])
    return out
