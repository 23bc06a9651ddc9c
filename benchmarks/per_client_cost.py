"""What per-client evaluation records cost (`eval_per_client`), side by side in one run.

    uv run python benchmarks/per_client_cost.py [--repeats 2] [--data DIR] [--clients 5000]
                                                [--skip movielens|stackoverflow]

movielens      the MovieLens paper run (experiment=movielens_paper, engine=fast, 500 rounds,
               11 evaluations of 604 users) with records on and off, alternating: time in
               the loop (summary wall_s) and for the whole process. Target: on / off <= 1.10.
stackoverflow  a Stack Overflow-format population from the project's generator (--users
               training users in TFF's SQLite format, generated once into --data, outside
               the repository), one round and an evaluation of --clients seen users
               (eval_clients), a small NWP model (the model does not change what records
               hold), records on and off: the peak resident memory. Target: on / off <= 1.10.
Prints the load average (run it on a quiet machine) and one table.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SO_MODEL = ["task.vocab_size=2000", "task.num_oov_buckets=50", "task.embedding_dim=16", "task.lstm_units=32",
            "task.projection_dim=16", "task.max_elements_per_user=64"]


def run(overrides: list[str], run_dir: pathlib.Path) -> tuple[dict, float]:
    t = time.time()
    proc = subprocess.run([sys.executable, "-m", "fedrecon_bench", *overrides, "logger=none", "checkpoint_every=0",
                           f"hydra.run.dir={run_dir}"], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{run_dir.name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    return json.loads((run_dir / "summary.json").read_text()), time.time() - t


def side_by_side(base: list[str], repeats: int, tmp: str, name: str) -> dict:
    """{on|off: [(summary, process seconds), ...]}, alternating off, on, off, on, ..."""
    out = {"off": [], "on": []}
    for i in range(repeats):
        for side in ("off", "on"):
            s, total = run([*base, f"eval_per_client={str(side == 'on').lower()}"],
                           pathlib.Path(tmp, f"{name}-{side}-{i}"))
            out[side].append((s, total))
            print(f"{name} records {side}: {s['wall_s']:.1f} s in the loop, {total:.1f} s in all, "
                  f"peak {s['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    return out


def _median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2] if len(xs) % 2 else (xs[len(xs) // 2 - 1] + xs[len(xs) // 2]) / 2


def generate(data: pathlib.Path, n: int) -> pathlib.Path:
    out = data / f"so{n}"
    if not (out / "synth.json").exists():
        from fedrecon_bench import synth

        info = synth.stackoverflow(str(out), n, seed=0, log=lambda m: print(m, file=sys.stderr, flush=True))
        (out / "synth.json").write_text(json.dumps(info))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--data", default=os.path.expanduser("~/.cache/fedrecon_bench/synth"))
    ap.add_argument("--clients", type=int, default=5000)
    ap.add_argument("--users", type=int, default=40_000, help="training users generated (about 13%% have later posts)")
    ap.add_argument("--skip", default="")
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    lines = ["| case | records off | records on | on / off |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        if "movielens" not in a.skip:
            r = side_by_side(["experiment=movielens_paper", "engine=fast"], a.repeats, tmp, "movielens")
            for what, get in (("s in the loop", lambda x: x[0]["wall_s"]), ("s for the process", lambda x: x[1])):
                off, on = _median([get(x) for x in r["off"]]), _median([get(x) for x in r["on"]])
                lines.append(f"| MovieLens paper run, {what} (median of {a.repeats}) | {off:.1f} | {on:.1f} | "
                             f"{on / off:.3f} |")
        if "stackoverflow" not in a.skip:
            so = generate(pathlib.Path(a.data), a.users)
            base = ["+task=nwp", "+algo=fedrecon", "engine=fast", "task.source=stackoverflow", f"data_dir={so}",
                    "task.split_by=example", "rounds=1", "clients_per_round=10", "eval_every=1",
                    f"eval_clients={a.clients}", *SO_MODEL]
            r = side_by_side(base, 1, tmp, "stackoverflow")
            off, on = r["off"][0][0]["peak_rss_mb"], r["on"][0][0]["peak_rss_mb"]
            lines.append(f"| Stack Overflow format, {a.clients:,} seen users evaluated (val and test), peak RSS MB "
                         f"| {off:.0f} | {on:.0f} | {on / off:.3f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
