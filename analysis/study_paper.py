"""The MovieLens paper table (conf/sweep/movielens_paper_table.yaml's setting): every algorithm on
all 6,040 MovieLens-1M users, unseen (task.split_by=user) and seen (task.split_by=example) users,
500 rounds of 100 clients, each algorithm's client learning rate picked on validation users.

    known   the paper's algorithms (KNOWN) at the rates the Baselines table picked from GRID
            (mean val accuracy over 3 seeds; conf/experiment/movielens_paper.yaml's tuned:),
            seeds 0-2, unseen and seen users: 24 runs
    tune    seed 0 of each other algorithm x user split x client rate in GRID
    personal  seed 0 of an algorithm's own keys (PERSONAL: Ditto's) at its picked client rate
    final   seeds 1 and 2 at each pick (seed 0 is the tune or personal stage's run)
    report  table.md/csv/tex: test users, mean ± std over the 3 seeds, per-user p10/p50/p90 and
            the fraction of users helped / hurt against FedAvg + fine-tuning (same seed, same
            users); tuning.md (every candidate's val score); ecdf/: the per-user test rating
            accuracy of the picks (unseen and seen users); tuned.yaml: the picks as
            conf/experiment/movielens_paper.yaml's `tuned:` block

--reduced runs FedRecon and FedAvg (+ fine-tuning) only, at the rates the preset already holds
(no tuning): 3 seeds of unseen users, 6 runs, the check that a fresh clone reproduces the table.
Ditto keeps its personal models in memory here (algo.store=memory, about 3.6 GB once all 4,832
training users are visited): on disk, 500 rounds of 100 clients would write a 741 KB model 50,000
times, about 37 GB per run. benchmarks/algorithm_cost.py measures the disk store (its size, and
Ditto's peak RSS against FedAvg's).
"""
from __future__ import annotations

import os

from analysis import study as S

GRID = (0.02, 0.05, 0.1, 0.2, 0.5)
SPLITS = ("user", "example")
SEEDS_AFTER = "1,2"
METRIC = "rating_accuracy"
PRESET = ["+sweep=movielens_paper_table", "+task=movielens"]
LR = "algo.client_optimizer.learning_rate"
REFERENCE = "fedavg:finetune"
# name -> overrides; HypCluster twice (K = 2 and 4, the row key algo.clusters tells them apart)
ALGOS = {
    "fedrecon": ["+algo=fedrecon"],
    "fedavg": ["+algo=fedavg", "algo.eval=finetune"],
    "stateful_fedavg": ["+algo=stateful_fedavg"],
    "centralized": ["+algo=centralized"],
    "fedprox": ["+algo=fedprox"],
    "fedrep": ["+algo=fedrep"],
    "ditto": ["+algo=ditto", "algo.store=memory"],
    "hypcluster2": ["+algo=hypcluster", "algo.clusters=2"],
    "hypcluster4": ["+algo=hypcluster", "algo.clusters=4"],
}
# The Baselines table's picks (unseen, seen users), already tuned on GRID over 3 seeds
KNOWN = {"fedrecon": (0.5, 0.5), "fedavg": (0.1, 0.2), "stateful_fedavg": (0.2, 0.2), "centralized": (0.02, 0.02)}
REDUCED = ("fedrecon", "fedavg")
# Keys an algorithm has beyond the client rate, tuned at its picked rate on seed 0 (the personal
# stage): Ditto's pull towards the global model and its personal rate, and on seen users where
# each v starts (w_0, the paper's, or the global model on a client's first visit). lambda 3 came
# after 1 was picked at the grid's edge (appended: a sweep's earlier jobs keep their numbers)
_DITTO = {"algo.lam": (0.1, 1.0, 3.0), "algo.personal_optimizer.learning_rate": (0.01, 0.03, 0.1)}
PERSONAL = {("ditto", "user"): _DITTO, ("ditto", "example"): {**_DITTO, "algo.personal_init": ("initial", "global")}}
SHORT = {LR: "lr", "algo.lam": "lam", "algo.personal_optimizer.learning_rate": "plr", "algo.personal_init": "init"}
ROWS = ["algo", "algo.clusters", "eval_mode", "task.split_by"]


def available(algos: dict) -> list[str]:
    """The entries of `algos` (name -> overrides, `+algo=X` first) whose algorithm has a
    conf/algo YAML."""
    here = os.path.join(os.path.dirname(__file__), "..", "conf", "algo")
    return [n for n, o in algos.items() if os.path.exists(os.path.join(here, o[0].split("=")[1] + ".yaml"))]


def _grid(values) -> str:
    return ",".join(map(_str, values))


def run(study: S.Study, args) -> list[str]:
    for name in REDUCED if args.reduced else KNOWN:
        for split, lr in zip(SPLITS[:1] if args.reduced else SPLITS, KNOWN[name]):
            study.sweep(f"known/{name}/{split}", [*PRESET, *ALGOS[name], f"{LR}={lr:g}",
                                                  f"task.split_by={split}", "seed=0,1,2"])
    if args.reduced:
        return [] if study.dry_run else _report(study, ["known"], {}, {})
    names = [n for n in available(ALGOS) if n not in KNOWN]
    for name in names:
        study.sweep(f"tune/{name}", [*PRESET, *ALGOS[name], f"{LR}={_grid(GRID)}",
                                     f"task.split_by={','.join(SPLITS)}", "seed=0"])
    if study.dry_run:
        return []
    picks = {}
    for name in names:
        got = S.pick(study.runs(f"tune/{name}"), ["task.split_by"], [LR], METRIC)
        picks.update({(name, split): {"pick": p["pick"], "keys": [LR], "stage": f"tune/{name}", "tried": [([LR], p)]}
                      for (split,), p in got.items()})
    for (name, split), p in sorted(picks.items()):  # then the algorithm's own keys, at its picked rate
        if (name, split) in PERSONAL:
            picks[(name, split)] = _tune_personal(study, name, split, p)
    finals = []  # named by the pick: after a changed pick its runs go to a new dir
    for (name, split), p in sorted(picks.items()):
        finals.append(f"final/{name}/{split}/{_label(p)}")
        study.sweep(finals[-1], [*PRESET, *ALGOS[name], *(f"{k}={_str(v)}" for k, v in zip(p["keys"], p["pick"])),
                                 f"task.split_by={split}", f"seed={SEEDS_AFTER}"])
    return _report(study, ["known", *finals], picks, {n: ALGOS[n] for n in names})


def _tune_personal(study: S.Study, name: str, split: str, p: dict) -> dict:
    """Seed 0 of PERSONAL's grid at the picked client rate; the pick over rate and those keys."""
    grid, lr = PERSONAL[(name, split)], p["pick"][0]
    stage = f"personal/{name}/{split}/lr{lr:g}"
    study.sweep(stage, [*PRESET, *ALGOS[name], f"{LR}={lr:g}", f"task.split_by={split}",
                        *(f"{k}={_grid(v)}" for k, v in grid.items()), "seed=0"])
    got = S.pick(study.runs(stage), [], list(grid), METRIC)[()]
    return {"pick": (lr, *got["pick"]), "keys": [LR, *grid], "stage": stage, "tried": [*p["tried"], (list(grid), got)]}


def _str(v) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def _label(p: dict) -> str:
    """A pick as a dir name: lr0.1, or lr0.1-lam1-plr0.03 with an algorithm's own keys."""
    return "-".join(f"{SHORT.get(k, k)}{_str(v)}" for k, v in zip(p["keys"], p["pick"]))


def picked_runs(study: S.Study, picks: dict) -> list:
    """The seed-0 run at each pick (its tune or personal stage), with the final stage's other seeds."""
    keep = []
    for (name, split), p in picks.items():
        keep += [r for r in study.runs(p["stage"]) if r.key("task.split_by") == split
                 and all(r.key(k) == v for k, v in zip(p["keys"], p["pick"]))]
    return keep


def _report(study: S.Study, stages, picks, algos, command: str | None = None) -> list[str]:
    from analysis import per_client_plot, table

    runs = study.runs(*stages) + picked_runs(study, picks)
    command = command or "make paper-movielens" + ("" if picks else " ARGS=--reduced")
    out = table.Table(runs, [METRIC, "rmse"], "test", rows=ROWS).write(study.out, "table")
    out += study.doc("paper_movielens", out[0], command)
    pc = table.Table(runs, [METRIC], "test", rows=ROWS, client_stats=["p10", "p50", "p90"],
                     reference=REFERENCE).write(study.out, "per_client")
    out += pc
    images = ""
    pair = [r for r in runs if r.key("algo") in ("fedrecon", "fedavg")]  # the ECDFs: FedRecon vs FedAvg
    for split in SPLITS:
        some = [r for r in pair if r.key("task.split_by") == split]
        if some:
            pngs = [f for f in per_client_plot.plot(some, os.path.join(study.out, "ecdf", split), METRIC, "test",
                                                    rows=["algo", "eval_mode"]) if f.endswith(".png")]
            out += pngs
            images += "".join(_doc_image(study, png, f"per_client_movielens_{split}.png", split) for png in pngs[:1])
    out += study.doc("per_client_movielens", pc[0], command, images)
    out += _readme(study, runs, pair, command)
    if picks:
        out.append(_tuning_md(study, picks))
        out.append(study.write("tuned.yaml", _tuned_yaml(picks, algos)))
    return out


def _readme(study: S.Study, runs, pair, command: str) -> list[str]:
    """README's results at a glance: unseen and seen users side by side, and FedRecon's
    per-user spread against FedAvg + fine-tuning."""
    from analysis import table

    rows = ["algo", "algo.clusters"]  # each algorithm's headline mode per split; every mode: docs/results.md
    a = table.Table(runs, [METRIC, "rmse"], "test", rows=rows, cols=["task.split_by"]).write(study.out, "readme")
    b = table.Table(pair, [METRIC], "test", rows=["algo", "eval_mode", "task.split_by"],
                    client_stats=["p10", "p50", "p90"], reference=REFERENCE).write(study.out, "readme_per_client")
    return (study.doc("readme_paper_movielens", a[0], command, page="README.md")
            + study.doc("readme_per_client", b[0], command, page="README.md"))


def _doc_image(study: S.Study, png: str, name: str, split: str) -> str:
    """Copies a plot next to the docs page; the Markdown that shows it."""
    if study.doc_page is None:
        return ""
    import shutil

    shutil.copyfile(png, os.path.join(os.path.dirname(study.doc_page), name))
    users = "unseen" if split == "user" else "seen"
    return f"\n\n![per-user test rating accuracy, {users} users]({name})\n"


def _tuning_md(study: S.Study, picks) -> str:
    """Every candidate's seed-0 val score: the client rates, then an algorithm's own keys at its rate."""
    lines = [f"| algorithm | users | candidate | val {METRIC} (seed 0) |", "|---|---|---|---|"]
    for (name, split), p in sorted(picks.items()):
        for keys, stage in p["tried"]:
            show = lambda c: ", ".join(f"{SHORT.get(k, k)}={_str(v)}" for k, v in zip(keys, c))
            for cand, v in sorted(stage["scores"].items(), key=lambda t: tuple(map(str, t[0]))):
                mark = " **(picked)**" if cand == stage["pick"] else ""
                lines.append(f"| {name} | {split} | {show(cand)}{mark} | {v:.4f} |")
            lines += [f"| {name} | {split} | {show(c)} | diverged |" for c in stage["unstable"]]
    return study.write("tuning.md", "\n".join(lines) + "\n")


def _tuned_yaml(picks, algos) -> str:
    """conf/experiment/movielens_paper.yaml's `tuned:` rows for these picks."""
    rows = []
    for (name, split), p in sorted(picks.items()):
        when = {"algo.name": algos[name][0].split("=")[1], "task.split_by": split}
        when.update(dict(o.split("=") for o in algos[name][1:] if o.startswith("algo.clusters")))
        cond = ", ".join(f"{k}: {v}" for k, v in when.items())
        chosen = ", ".join(f"{k}: {_str(v)}" for k, v in zip(p["keys"], p["pick"]))
        rows.append(f"  - {{when: {{{cond}}}, set: {{{chosen}}}}}")
    return "tuned:\n" + "\n".join(rows) + "\n"
