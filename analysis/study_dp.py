"""The privacy-utility study (conf/sweep/movielens_dp_study.yaml): MovieLens, 500 of 4,832 users
per round for 200 rounds, unseen users, FedRecon, FedAvg (+ fine-tuning) and stateful FedAvg,
noise multipliers 0-8, with the clip, client and server rates tuned per algorithm and noise multiplier
on validation users only, then 3 seeds of each pick, an ablation at z = 0, the table and plots.

    clip      seed 0: each clip at the algorithm's Baselines client rate and server rate 1:
              fixed C in FIXED, or TFF's adaptive clip (start 0.1, clip rate 0.2) aiming at
              the quantiles in QUANTILES
    rates     seed 0, at the picked clip: client rate x FACTORS (x 1 is the clip stage's run)
    server    seed 0, at the picked clip and client rate: server rate x FACTORS
    final     seeds 1 and 2 of each pick (seed 0 is its tuning run): the table (test users,
              reported once) and the plots
    ablation  z = 0: no DP with example weighting at the Baselines rates (the Baselines table's
              setting), no DP with uniform weighting, and (from `final`) the picked clip at its
              picked rates (without the clip, those rates diverged: docs/privacy.md)

The rates, server, final and ablation dirs are named by the pick (e.g.
final/fedrecon/z1/fixed3-lr0.5-server1), so that a pick changed by a grown grid runs anew
instead of meeting the old pick's runs. --reduced tries the fixed clips only (no adaptive
candidates) and has no rate stages: 108 runs instead of 198 (docs/privacy.md has the times).
Every pick reads final val rating_accuracy (the headline mode's: fine-tuned for FedAvg); a
candidate with a diverged seed-0 run is none.
"""
from __future__ import annotations

import os

from analysis import study as S

ALGOS = {"fedrecon": 0.5, "fedavg": 0.1, "stateful_fedavg": 0.2}  # Baselines' unseen-user client rates
ZS = (0.0, 1.0, 2.0, 4.0, 8.0)
FIXED = (0.3, 1.0, 3.0, 10.0)
QUANTILES = (0.5, 0.9)
FACTORS = (0.5, 2.0)  # a rate stage's candidates: the pick's rate x these (and x 1)
GROUP = ["algo", "dp.noise_multiplier"]
METRIC = "rating_accuracy"
PRESET = "+sweep=movielens_dp_study"
CLIP_KEYS = ["dp.name", "dp.clip", "dp.target_quantile"]
RATE_KEYS = ["algo.client_optimizer.learning_rate", "algo.server_optimizer.learning_rate"]


def clips(reduced: bool = False) -> dict:
    """Clip candidates: name -> the dp overrides that make it (fixed ones only if reduced)."""
    out = {f"fixed{c:g}": {"dp.name": "gaussian_fixed", "dp.clip": c, "dp.target_quantile": 0.5} for c in FIXED}
    out.update({f"adaptive{q:g}": {"dp.name": "gaussian_adaptive", "dp.clip": 0.1, "dp.target_quantile": q}
                for q in ([] if reduced else QUANTILES)})
    return out


def _ov(values: dict) -> list[str]:
    return [f"{k}={v}" for k, v in values.items()]


def _zs(zs) -> str:
    return ",".join(f"{z:g}" for z in zs)


def run(study: S.Study, args) -> list[str]:
    for algo, lr in ALGOS.items():
        for name, dp in clips(args.reduced).items():
            study.sweep(f"clip/{algo}/{name}", [PRESET, f"+algo={algo}", f"dp.noise_multiplier={_zs(ZS)}", "seed=0",
                                                *_ov(dp), f"{RATE_KEYS[0]}={lr}", f"{RATE_KEYS[1]}=1.0"])
    if study.dry_run:
        return []
    clip_picks = S.pick(study.runs("clip"), GROUP, CLIP_KEYS, METRIC)
    picks = {g: {**dict(zip(CLIP_KEYS, p["pick"])), RATE_KEYS[0]: ALGOS[g[0]], RATE_KEYS[1]: 1.0}
             for g, p in clip_picks.items()}
    tuning = [("clip", clip_picks, CLIP_KEYS)]
    if not args.reduced:
        tuning.append(("rates", rate_stage(study, picks, "rates", RATE_KEYS[0], clip_tag), [RATE_KEYS[0]]))
        tuning.append(("server", rate_stage(study, picks, "server", RATE_KEYS[1],
                                            lambda c: f"{clip_tag(c)}-lr{float(c[RATE_KEYS[0]]):g}"), [RATE_KEYS[1]]))
    stages = {"final": [], "ablation": []}  # the dirs of these picks' runs (a changed pick: new dirs)
    for (algo, z), chosen in picks.items():
        stages["final"].append(f"final/{algo}/z{z:g}/{clip_tag(chosen)}-{rates_tag(chosen)}")
        study.sweep(stages["final"][-1], [PRESET, f"+algo={algo}", f"dp.noise_multiplier={z:g}", "seed=1,2",
                                          *_ov(chosen)])
        if z == 0:  # without DP at the Baselines rates: a DP pick's larger rate can diverge unclipped
            base = {RATE_KEYS[0]: ALGOS[algo], RATE_KEYS[1]: 1.0}
            for weighting in ("examples", "uniform"):
                stages["ablation"].append(f"ablation/{algo}/{weighting}/{rates_tag(base)}")
                study.sweep(stages["ablation"][-1], [*no_dp(algo, weighting, _ov(base)), "seed=0,1,2"])
    return _report(study, picks, tuning, stages)


def rate_stage(study: S.Study, picks: dict, stage: str, key: str, tag) -> dict:
    """Seed 0 of each pick so far with `key` x FACTORS (x 1 is the pick's own tuning run), in
    <stage>/<algo>/z<z>/<tag(pick)>; updates `picks` with the best and returns the stage's picks."""
    dirs = [f"{stage}/{algo}/z{z:g}/{tag(chosen)}" for (algo, z), chosen in picks.items()]
    for ((algo, z), chosen), d in zip(picks.items(), dirs):
        others = {k: v for k, v in chosen.items() if k != key}
        study.sweep(d, [PRESET, f"+algo={algo}", f"dp.noise_multiplier={z:g}", "seed=0", *_ov(others),
                        f"{key}={','.join(f'{float(chosen[key]) * f:g}' for f in FACTORS)}"])
    got = S.pick(study.runs(*dirs) + tuning_runs(study, picks), GROUP, [key], METRIC)
    for g, p in got.items():
        picks[g][key] = p["pick"][0]
    return got


def clip_tag(chosen: dict) -> str:
    """A stage dir's name for a picked clip: runs after a changed pick go to a new dir, as a
    run dir continues only the experiment it holds."""
    if chosen["dp.name"] == "gaussian_fixed":
        return f"fixed{float(chosen['dp.clip']):g}"
    return f"adaptive{float(chosen['dp.target_quantile']):g}"


def rates_tag(chosen: dict) -> str:
    return f"lr{float(chosen[RATE_KEYS[0]]):g}-server{float(chosen[RATE_KEYS[1]]):g}"


def no_dp(algo: str, weighting: str, rates: list[str]) -> list[str]:
    """An ablation job without DP: dp.name=none keeps the preset's dp group, whose keys the
    preset sweeps (dp=none would drop them: an unknown key)."""
    return [PRESET, f"+algo={algo}", "dp.name=none", "dp.noise_multiplier=0",
            f"algo.client_weighting={weighting}", *rates]


def tuning_runs(study: S.Study, picks: dict) -> list:
    """The seed-0 tuning run of each pick, from the clip, rates and server stages."""
    keys = ["algo", "dp.noise_multiplier", *CLIP_KEYS, *RATE_KEYS]
    want = {(a, z, *(p[k] for k in keys[2:])) for (a, z), p in picks.items()}
    return [r for r in study.runs("clip", "rates", "server") if tuple(r.key(k) for k in keys) in want]


def _report(study: S.Study, picks, tuning: list, stages: dict) -> list[str]:
    from analysis import plot, table

    out = [study.write("picks.json", {f"{a}@{z:g}": p for (a, z), p in sorted(picks.items())})]
    out.append(_tuning_md(study, tuning))
    command = "make dp-study" + (" ARGS=--reduced" if len(tuning) == 1 else "")
    out += study.doc("dp_study_tuning", out[-1], command, page="docs/privacy.md")
    final = os.path.join(study.out, "final")
    finals = study.runs(*stages["final"]) + tuning_runs(study, picks)
    t = table.Table(finals, [METRIC, "rmse"], "test", rows=["algo", "eval_mode", "dp.noise_multiplier"],
                    client_stats=["p10"], reference="fedavg:finetune")
    out += t.write(final, "table")
    out += study.doc("dp_study", out[-3], command, "\n\nEach row's picked clip and rates, with every candidate's "
                     "val score: [privacy.md](privacy.md#the-tuning-candidate-by-candidate) (also `tuned:` in "
                     "conf/sweep/movielens_dp_study.yaml).\n")
    a = table.Table(study.runs(*stages["ablation"]) + [r for r in finals if r.key("dp.noise_multiplier") == 0],
                    [METRIC, "rmse"], "test", rows=["algo", "eval_mode", "dp.name", "algo.client_weighting"])
    out += a.write(os.path.join(study.out, "ablation"), "table")
    out += study.doc("dp_study_ablation", os.path.join(study.out, "ablation", "table.md"), command)
    for m in (METRIC, "rmse"):
        out += plot.plot_against(finals, final, "privacy.epsilon", m)
    out.append(study.write("tuned.yaml", _tuned_yaml(picks)))
    return out


def _tuning_md(study: S.Study, tuning: list) -> str:
    """tuning: (stage, its picks, the keys it tuned) per stage."""
    lines = ["| algo | z | stage | candidate | val " + METRIC + " |", "|---|---|---|---|---|"]
    for stage, picks, keys in tuning:
        for (algo, z), p in sorted(picks.items()):
            for cand, v in sorted(p["scores"].items(), key=lambda t: -t[1]):
                mark = " **(picked)**" if cand == p["pick"] else ""
                lines.append(f"| {algo} | {z:g} | {stage} | {', '.join(f'{k}={c}' for k, c in zip(keys, cand))}"
                             f"{mark} | {v:.4f} |")
            for cand in p["unstable"]:
                lines.append(f"| {algo} | {z:g} | {stage} | {', '.join(f'{k}={c}' for k, c in zip(keys, cand))} | "
                             "diverged |")
    path = os.path.join(study.out, "tuning.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def _tuned_yaml(picks) -> str:
    """The preset's `tuned:` block for these picks."""
    rows = [f"  - {{when: {{algo.name: {a}, dp.noise_multiplier: {z:g}}}, set: {{"
            + ", ".join(f"{k}: {v}" for k, v in p.items()) + "}}" for (a, z), p in sorted(picks.items())]
    return "tuned:\n" + "\n".join(rows) + "\n"
