"""The personalization baselines on EMNIST and Shakespeare: FedProx, FedRep, Ditto and HypCluster
(K = 2) against FedRecon and FedAvg + fine-tuning, each task at its preset
(experiment=emnist_fedrecon: 84/10/11 writers, 30 rounds of 20 clients; experiment=nwp_shakespeare:
572/71/72 speakers, 100 rounds of 10 clients), unseen users, seeds 0 and 1.

Each algorithm gets the preset's server and client optimizers and as many steps on the global
variables per round as FedRecon takes (EMNIST: 2 epochs, the preset's post_recon_epochs;
Shakespeare: 2 epochs on half the batches = 1 epoch on all). FedRep's local variables (the user
embedding, the OOV rows) train 1 epoch per visit, as FedRecon's reconstruction does, not the
FedRep paper's 10 epochs of a whole head. Fine-tuning (FedAvg, FedProx) and Ditto's personal
steps use the preset's reconstruction and client rates. None of these rates was tuned here: the
MovieLens paper table (study_paper.py) is the tuned comparison.

    runs    runs/<task>/<name>: 2 seeds each, 24 runs
    report  <task>/table.md (test users, every evaluation mode, mean ± std, per-user p10/p50/p90,
            helped / hurt against FedAvg + fine-tuning on the same users) into docs/results.md,
            and readme/table.md (both tasks' headline metric) into README.md

--reduced: seed 0 only.
"""
from __future__ import annotations

import os

from analysis import study as S
from analysis.study_paper import available

# task -> (preset, headline metric, fine-tuning rate, Ditto's personal rate, FedAvg-style client epochs)
TASKS = {
    "emnist": ("experiment=emnist_fedrecon", "accuracy", 0.1, 0.1, 2),
    "shakespeare": ("experiment=nwp_shakespeare", "accuracy_no_oov", 0.5, 1.0, 1),
}
REFERENCE = "fedavg:finetune"


def algos(task: str) -> dict:
    """name -> overrides (`+algo=X` first) for `task`: the matched step budgets above."""
    _, _, ft, personal, epochs = TASKS[task]
    finetune = ["algo.eval=finetune", f"algo.finetune.optimizer.learning_rate={ft:g}"]
    return {
        "fedrecon": ["+algo=fedrecon"],
        "fedavg": ["+algo=fedavg", *finetune, f"algo.client_epochs={epochs}"],
        "fedprox": ["+algo=fedprox", *finetune, f"algo.client_epochs={epochs}"],
        "fedrep": ["+algo=fedrep", "algo.local_epochs=1", f"algo.global_epochs={epochs}"],
        "ditto": ["+algo=ditto", "algo.store=memory", f"algo.client_epochs={epochs}",
                  f"algo.personal_optimizer.learning_rate={personal:g}"],
        "hypcluster": ["+algo=hypcluster", "algo.clusters=2", f"algo.client_epochs={epochs}"],
    }


def run(study: S.Study, args) -> list[str]:
    seeds = "0" if args.reduced else "0,1"
    for task, (preset, *_rest) in TASKS.items():
        table = algos(task)
        for name in available(table):
            study.sweep(f"runs/{task}/{name}", [preset, "logger=none", "checkpoint_every=0", *table[name],
                                                f"seed={seeds}"])
    return [] if study.dry_run else _report(study, "make tasks-study" + (" ARGS=--reduced" if args.reduced else ""))


def _report(study: S.Study, command: str) -> list[str]:
    from analysis import table

    out, every, shown = [], [], {}
    for task, (_, metric, *_rest) in TASKS.items():
        runs = study.runs(f"runs/{task}")
        if not runs:
            continue
        every += runs
        shown[runs[0].key("task")] = [metric]  # the task's name in its runs (nwp for Shakespeare)
        ref = REFERENCE if any(r.key("algo") == REFERENCE.split(":")[0] for r in runs) else None
        t = table.Table(runs, [metric], "test", rows=["algo", "eval_mode"], client_stats=["p10", "p50", "p90"],
                        reference=ref).write(os.path.join(study.out, task), "table")
        out += t + study.doc(f"tasks_{task}", t[0], command)
    if every:  # README: each algorithm's headline mode, both tasks side by side
        metrics = sorted({m for ms in shown.values() for m in ms})
        t = table.Table(every, metrics, "test", rows=["algo"], cols=["task"], col_metrics=shown)
        t = t.write(os.path.join(study.out, "readme"), "table")
        out += t + study.doc("readme_tasks", t[0], command, page="README.md")
    return out
