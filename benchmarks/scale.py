"""Paper-scale populations: start-up, time per round and memory against population size.

    uv run python benchmarks/scale.py [--sizes 10000,100000,342477] [--engines fast,tff]
                                      [--rounds 3] [--clients N] [--data DIR] [--extra key=value ...]

For each size it generates (once, into --data, outside the repository) a synthetic
Stack Overflow population in TFF's on-disk format (`python -m fedrecon_bench.synth
stackoverflow`), then runs `experiment=nwp_stackoverflow_paper` on it for a few rounds on
each engine, evaluating `eval_clients=200` val/test users (the authors' evaluation;
every held-out user would be hours of evaluation at the largest size). It prints per
size and engine:

  start-up s      process start to the end of round 1 (polled from metrics.jsonl)
  TFF open s      the part of it TFF took to open the database (load_data)
  s/round         median training round after the first (with its training tokens: the
                  round's cost follows its sampled clients' sizes, not the population's)
  peak RSS MB     the process's peak resident memory (summary.json)

and the database's size and generation time. Targets (issue "Paper-scale populations"):
peak RSS at 342K <= 1.3x that at 10K; s/round at 342K within 1.3x of 10K; start-up at
342K <= 60 s plus TFF's open time. Results are in the docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def generate(data: pathlib.Path, n: int) -> dict:
    out = data / f"so{n}"
    info_file = out / "synth.json"
    if not info_file.exists():
        from fedrecon_bench import synth

        info = synth.stackoverflow(str(out), n, seed=0,
                                   log=lambda m: print(m, file=sys.stderr, flush=True))
        info_file.write_text(json.dumps(info))
    return {**json.loads(info_file.read_text()), "dir": str(out)}


def run(data_dir: str, engine: str, rounds: int, run_dir: pathlib.Path, extra: list[str],
        clients: int | None = None) -> dict:
    per_round = [f"clients_per_round={clients}"] if clients else []
    cmd = [sys.executable, "-m", "fedrecon_bench", "experiment=nwp_stackoverflow_paper", f"engine={engine}",
           f"data_dir={data_dir}", f"rounds={rounds}", "eval_every=100000", f"eval_clients={clients or 200}",
           *per_round,
           "checkpoint_every=0", "logger=none", f"hydra.run.dir={run_dir}", *extra]
    metrics = run_dir / "metrics.jsonl"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "WANDB_MODE": "offline"})
    first = None
    while proc.poll() is None:
        if first is None and metrics.exists() and '"split": "train"' in metrics.read_text():
            first = time.perf_counter() - t0
        time.sleep(0.05)
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{engine} on {data_dir}: exit {proc.returncode}\n{err[-3000:]}")
    rows = [json.loads(l) for l in metrics.read_text().splitlines()]
    summary = json.loads((run_dir / "summary.json").read_text())
    later = [r for r in rows if r["split"] == "train" and r["round"] > 1]
    return {"startup": first, "open": summary["data_info"].get("open_s"),
            "per_round": statistics.median(r["round_s"] for r in later) if later else None,
            "tokens": statistics.median(r["num_tokens"] for r in later) if later else None,
            "peak_mb": summary["peak_rss_mb"], "whole": time.perf_counter() - t0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,342477")
    ap.add_argument("--engines", default="fast,tff")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/fedrecon_bench/synth"))
    ap.add_argument("--clients", type=int, default=None,
                    help="clients per round and evaluated val/test clients (default: the preset's 200)")
    ap.add_argument("--extra", nargs="*", default=[], help="more overrides for every run")
    a = ap.parse_args()
    data = pathlib.Path(a.data)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    lines = ["| training clients | database MB | generated in s | engine | start-up s | TFF open s | "
             "s/round | train tokens/round | peak RSS MB |", "|---|---|---|---|---|---|---|---|---|"]
    results = {}
    for n in (int(s) for s in a.sizes.split(",")):
        gen = generate(data, n)
        for engine in a.engines.split(","):
            res = run(gen["dir"], engine, a.rounds, data / "runs" / f"so{n}-{engine}-{int(time.time())}", a.extra,
                      a.clients)
            results[(n, engine)] = res
            print(f"{n} {engine}: {res}", file=sys.stderr, flush=True)
            fmt = lambda v, f: "-" if v is None else format(v, f)
            lines.append(f"| {n:,} | {gen['bytes'] / 2**20:,.0f} | {gen['seconds']:.0f} | {engine} | "
                         f"{fmt(res['startup'], '.1f')} | {fmt(res['open'], '.1f')} | "
                         f"{fmt(res['per_round'], '.2f')} | {fmt(res['tokens'], ',.0f')} | {res['peak_mb']:,.0f} |")
    sizes = sorted({n for n, _ in results})
    lines.append("")
    for engine in a.engines.split(","):
        lo, hi = results.get((sizes[0], engine)), results.get((sizes[-1], engine))
        if lo and hi and len(sizes) > 1:
            ratio = lambda k: f"{hi[k] / lo[k]:.2f}x" if lo.get(k) and hi.get(k) else "-"
            lines.append(f"{engine}: {sizes[-1]:,} vs {sizes[0]:,} clients: peak RSS {ratio('peak_mb')}, "
                         f"s/round {ratio('per_round')}, start-up {hi['startup']:.1f} s "
                         f"(of which TFF opening the database {hi['open'] or 0:.1f} s)")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
