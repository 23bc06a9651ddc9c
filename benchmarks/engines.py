"""engine=fast against engine=tff, side by side in one run: time per round and peak memory.

    uv run python benchmarks/engines.py [--cases movielens_paper,emnist,nwp] [--tff-rounds 4]

For each case it runs the preset through the CLI on both engines (a few rounds on
TFF, more on the fast engine; no evaluation until the end, no checkpoints) and
prints the median training-round time (round 1 excluded: it traces/compiles),
the ratio, and each process's peak resident memory (`peak_rss_mb` in
summary.json). Then it runs the full MovieLens paper setting on the fast engine
(500 rounds x 100 clients, evaluation of 604 val users every 50 rounds, test at
the end) and prints its wall time.

Targets (#8): MovieLens paper setting >= 100x per round and the full paper run in
<= 60 s on 2 cores; EMNIST and next-word prediction >= 3x per round.
Results are in the README ("Engines").
"""
from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = {  # preset and extra overrides; rounds are set below
    "movielens_paper": ["experiment=movielens_paper"],
    "emnist": ["experiment=emnist_fedrecon"],
    "nwp": ["experiment=nwp_shakespeare"],
}
FAST_ROUNDS = {"emnist": 2}  # its fast rounds take minutes on CPU (README "Engines")


def run(overrides: list[str], tmp: str, name: str) -> tuple[dict, list[dict], float]:
    run_dir = pathlib.Path(tmp, name)
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "fedrecon_bench", *overrides, "logger=none",
                           "checkpoint_every=0", f"hydra.run.dir={run_dir}"], cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "summary.json").read_text()), rows, time.time() - t


def per_round(rows: list[dict]) -> float:
    times = [r["round_s"] for r in rows if r["split"] == "train" and r["round"] > 1]
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--tff-rounds", type=int, default=4)
    ap.add_argument("--fast-rounds", type=int, default=30)
    ap.add_argument("--no-full-run", action="store_true", help="skip the 500-round paper run")
    a = ap.parse_args()
    lines = ["| case | tff s/round | fast s/round | speed-up | tff peak MB | fast peak MB |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases.split(","):
            res = {}
            for engine, rounds in (("tff", a.tff_rounds), ("fast", FAST_ROUNDS.get(case, a.fast_rounds))):
                summary, rows, _ = run([*CASES[case], f"engine={engine}", f"rounds={rounds}",
                                        "eval_every=100000"], tmp, f"{case}-{engine}")
                res[engine] = (per_round(rows), summary["peak_rss_mb"])
                print(f"{case} {engine}: {res[engine][0]:.4f} s/round, peak {res[engine][1]} MB",
                      file=sys.stderr)
            (t_tff, m_tff), (t_fast, m_fast) = res["tff"], res["fast"]
            lines.append(f"| {case} | {t_tff:.3f} | {t_fast:.4f} | {t_tff / t_fast:.3g}x | "
                         f"{m_tff:.0f} | {m_fast:.0f} |")
        if not a.no_full_run:
            summary, rows, total = run(["experiment=movielens_paper", "engine=fast"], tmp, "full")
            test = summary["final"]["test"]
            lines.append("")
            lines.append(f"full MovieLens paper run, engine=fast (500 rounds x 100 clients, 11 "
                         f"evaluations): {summary['wall_s']:.1f} s in the loop, {total:.1f} s for the "
                         f"whole process; test rating_accuracy {test['rating_accuracy']:.4f}, "
                         f"rmse {test['rmse']:.4f}; peak {summary['peak_rss_mb']:.0f} MB")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
