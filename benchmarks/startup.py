"""Start-up cost of an engine=fast run, before and after, side by side in one run.

    uv run python benchmarks/startup.py [--before REV] [--repeats 2] [--rounds 500]

Runs the MovieLens paper setting (`experiment=movielens_paper`, engine=fast) through
the CLI with the code at git revision REV (checked out into a temporary worktree;
default: the revision that still imported TensorFlow on the fast path) and with this
checkout, in the same Python environment, alternating, and prints per variant the
median of:

  whole s      process start to exit
  in-run s     summary.json's wall_s (the run itself: data, model, rounds, evaluations)
  outside s    whole - in-run: interpreter, imports, config composition, wandb teardown
  first round  process start to the first training row in metrics.jsonl (polled)

"after" runs twice per repeat: with an empty JAX compilation cache (cold) and with the
cache the previous run filled (warm); "before" has no cache. Target (issue "engine=fast
starts in seconds"): outside <= 5 s.

With --sweep it also times a fixed subset of the 174-run paper-table sweep
(`+sweep=movielens_paper_table`, SWEEP below: 6 runs in one multirun process) end to end,
before and after (warm cache), once each. Results are in the docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BEFORE = "9f6f649"  # engine=fast still built its initial weights with Keras (imports TF and TFF)
SWEEP = ["+sweep=movielens_paper_table", "+algo=fedrecon", "algo.client_optimizer.learning_rate=0.5",
         "seed=0,1,2"]  # 6 of its 174 runs: unseen and seen users, 3 seeds


def sweep(code: pathlib.Path, out: pathlib.Path, extra: list[str]) -> float:
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "offline"}
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "-m", *SWEEP, "logger=none",
                        f"hydra.sweep.dir={out}", *extra], cwd=code, env=env, capture_output=True, text=True)
    if p.returncode != 0:
        sys.exit(f"{code}: sweep exit {p.returncode}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t0


def run(code: pathlib.Path, run_dir: pathlib.Path, rounds: int, extra: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "fedrecon_bench", "experiment=movielens_paper", "engine=fast",
           f"rounds={rounds}", "logger=none", f"hydra.run.dir={run_dir}", *extra]
    metrics = run_dir / "metrics.jsonl"
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=code, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    first = None
    while proc.poll() is None:
        if first is None and metrics.exists() and '"split": "train"' in metrics.read_text():
            first = time.perf_counter() - t0
        time.sleep(0.01)
    whole = time.perf_counter() - t0
    out, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{code}: exit {proc.returncode}\n{err[-2000:]}")
    in_run = json.loads((run_dir / "summary.json").read_text())["wall_s"]
    return {"whole": whole, "in_run": in_run, "outside": whole - in_run, "first": first}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=BEFORE, help="git revision to compare with")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=500)
    ap.add_argument("--sweep", action="store_true", help="also time the paper-table sweep subset")
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    res = {"before": [], "after, cache cold": [], "after, cache warm": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        old = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), a.before], cwd=ROOT, check=True,
                       capture_output=True)
        try:
            for r in range(a.repeats):
                res["before"].append(run(old, tmp / f"b{r}", a.rounds, []))
                cache = tmp / f"jax_cache{r}"
                flag = [f"fast.compilation_cache={cache}"]
                res["after, cache cold"].append(run(ROOT, tmp / f"c{r}", a.rounds, flag))
                res["after, cache warm"].append(run(ROOT, tmp / f"w{r}", a.rounds, flag))
                shutil.rmtree(cache, ignore_errors=True)
                print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]['whole']:.1f} s" for k, v in res.items()),
                      file=sys.stderr)
            sweeps = {"before": [], "after": []}
            for r in range(1 if a.sweep else 0):  # about 2 min each: once
                sweeps["before"].append(sweep(old, tmp / f"sb{r}", []))
                sweeps["after"].append(sweep(ROOT, tmp / f"sa{r}", [f"fast.compilation_cache={tmp / 'sc'}"]))
                print(f"sweep repeat {r + 1}: before {sweeps['before'][-1]:.1f} s, after {sweeps['after'][-1]:.1f} s",
                      file=sys.stderr)
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT, capture_output=True)
    med = lambda rows, k: statistics.median(x[k] for x in rows)
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print(f"MovieLens paper setting, engine=fast, {a.rounds} rounds; median of {a.repeats} runs each "
          f"(before = {a.before})")
    print("| variant | whole s | in-run s | outside the run s | to first round s |")
    print("|---|---|---|---|---|")
    for name, rows in res.items():
        print(f"| {name} | {med(rows, 'whole'):.1f} | {med(rows, 'in_run'):.1f} | "
              f"{med(rows, 'outside'):.1f} | {med(rows, 'first'):.1f} |")
    if sweeps["before"]:
        b, f = statistics.median(sweeps["before"]), statistics.median(sweeps["after"])
        print(f"\npaper-table sweep subset ({' '.join(SWEEP[1:])}: 6 runs), one run each: "
              f"before {b:.1f} s, after {f:.1f} s, ratio {b / f:.2f}x")


if __name__ == "__main__":
    main()
