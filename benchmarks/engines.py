"""engine=fast against engine=tff, side by side in one run: time per round and peak memory.

    uv run python benchmarks/engines.py [--cases movielens_paper,nwp_defaults,nwp_shakespeare,emnist]
                                        [--tff-rounds 4] [--fast-rounds 30] [--no-full-run]
                                        [--forms default] [--ref <another checkout>]

For each case it runs the preset through the CLI on engine=tff, then on engine=fast in
every form listed for the case (how clients run, `fast.clients`; kernel forms such as
EMNIST's `task.conv` or the LSTM's `task.lstm_unroll`), a few rounds each with no
evaluation until the end and no checkpoints. It prints the median training-round
time (round 1 excluded: it traces/compiles), the ratio tff / fast (> 1: fast is
faster), each process's peak resident memory (`peak_rss_mb`), and the fraction of
computed steps that were lockstep padding. Then it runs the full MovieLens paper
setting on engine=fast (500 rounds x 100 clients) and prints its wall time.

With `--ref DIR` (another checkout of the suite, with its own `.venv`) it instead runs
each case on both engines in that checkout and in this one, --repeats times each in ABBA
order, and prints this / ref per round (the median of all their rounds after the first)
and peak memory: before and after a change, side by side.

Targets (issue "Fast engine: cost proportional to each client's real work"): NWP task
defaults >= 2x, EMNIST preset >= 1x, MovieLens paper setting >= 500x per round.
Results are in the docs/performance.md.
"""
from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
CASES = {  # preset overrides, then the engine=fast forms: (label, extra overrides)
    "movielens_paper": (["experiment=movielens_paper"], [
        ("vmap groups (default)", []),
        ("sequential", ["fast.clients=sequential"])]),
    "nwp_defaults": (["+task=nwp", "+algo=fedrecon", "clients_per_round=10"], [
        ("sequential, LSTM unrolled (default)", []),
        ("sequential, LSTM rolled", ["task.lstm_unroll=1"]),
        ("host steps", ["fast.clients=host"]),
        ("vmap groups", ["fast.clients=vmap"])]),
    "nwp_shakespeare": (["experiment=nwp_shakespeare"], [
        ("sequential (default)", []),
        ("vmap groups", ["fast.clients=vmap"])]),
    "emnist": (["experiment=emnist_fedrecon"], [
        ("lax conv, host steps (default)", ["task.conv=lax", "fast.clients=host"]),
        ("patches, host steps", ["task.conv=patches", "fast.clients=host"]),
        ("patches, sequential", ["task.conv=patches", "fast.clients=sequential"]),
        ("lax conv, sequential", ["task.conv=lax", "fast.clients=sequential"]),
        ("patches, vmap groups", ["task.conv=patches", "fast.clients=vmap"]),
        ("lax conv, vmap groups", ["task.conv=lax", "fast.clients=vmap"])]),
}
ROUNDS = {  # (tff, fast) rounds where the defaults would take too long
    "nwp_defaults": (3, 4), "emnist": (3, 3)}
SLOW_FORMS = {"lax conv, sequential": 2}  # XLA:CPU convolution gradients inside a loop


def run(overrides: list[str], tmp: str, name: str, root: pathlib.Path = ROOT) -> tuple[dict, list[dict], float]:
    """One CLI run in checkout `root` (with its own .venv's Python, so it imports its own code)."""
    run_dir = pathlib.Path(tmp, name)
    python = root / ".venv" / "bin" / "python"
    t = time.time()
    proc = subprocess.run([str(python) if python.exists() else sys.executable, "-m", "fedrecon_bench",
                           *overrides, "logger=none", "checkpoint_every=0", f"hydra.run.dir={run_dir}"],
                          cwd=root, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        sys.exit(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return json.loads((run_dir / "summary.json").read_text()), rows, time.time() - t


def per_round(rows: list[dict]) -> float:
    times = [r["round_s"] for r in rows if r["split"] == "train" and r["round"] > 1]
    return statistics.median(times)


def padding(summary: dict) -> str:
    f = summary.get("fast")
    if not f or not f["steps_computed"]:
        return "-"
    return f"{1 - f['steps_scheduled'] / f['steps_computed']:.0%}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--forms", default="", help="only fast forms whose label contains this")
    ap.add_argument("--tff-rounds", type=int, default=4)
    ap.add_argument("--fast-rounds", type=int, default=30)
    ap.add_argument("--no-full-run", action="store_true", help="skip the 500-round paper run")
    ap.add_argument("--ref", help="another checkout: compare this one against it, case by case")
    ap.add_argument("--repeats", type=int, default=2, help="with --ref: runs per side (ABBA order)")
    a = ap.parse_args()
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    if a.ref:
        return compare(a, pathlib.Path(a.ref).resolve())
    lines = ["| case | engine=fast form | tff s/round | fast s/round | tff / fast | tff peak MB | "
             "fast peak MB | padding computed |", "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases.split(","):
            preset, forms = CASES[case]
            tff_rounds, fast_rounds = ROUNDS.get(case, (a.tff_rounds, a.fast_rounds))
            summary, rows, _ = run([*preset, "engine=tff", f"rounds={tff_rounds}", "eval_every=100000"],
                                   tmp, f"{case}-tff")
            t_tff, m_tff = per_round(rows), summary["peak_rss_mb"]
            print(f"{case} tff: {t_tff:.4f} s/round, peak {m_tff} MB", file=sys.stderr)
            for label, extra in forms:
                if a.forms and a.forms not in label:
                    continue
                rounds = SLOW_FORMS.get(label, fast_rounds)
                summary, rows, _ = run([*preset, "engine=fast", *extra, f"rounds={rounds}",
                                        "eval_every=100000"], tmp, f"{case}-fast-{len(lines)}")
                t_fast = per_round(rows)
                print(f"{case} fast [{label}]: {t_fast:.4f} s/round, peak {summary['peak_rss_mb']} MB",
                      file=sys.stderr)
                lines.append(f"| {case} | {label} | {t_tff:.3f} | {t_fast:.4f} | {t_tff / t_fast:.3g}x | "
                             f"{m_tff:.0f} | {summary['peak_rss_mb']:.0f} | {padding(summary)} |")
        if not a.no_full_run:
            summary, rows, total = run(["experiment=movielens_paper", "engine=fast"], tmp, "full")
            test = summary["final"]["test"]
            lines.append("")
            lines.append(f"full MovieLens paper run, engine=fast (500 rounds x 100 clients, 11 "
                         f"evaluations): {summary['wall_s']:.1f} s in the loop, {total:.1f} s for the "
                         f"whole process; test rating_accuracy {test['rating_accuracy']:.4f}, "
                         f"rmse {test['rmse']:.4f}; peak {summary['peak_rss_mb']:.0f} MB")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join(lines))


def compare(a, ref: pathlib.Path) -> None:
    """Each case's default forms on both engines, in `ref` and here: --repeats runs of each,
    in ABBA order (ref, this, this, ref, ...) so that neither side always runs second; the
    median over all their rounds after the first."""
    lines = ["| case | engine | form | ref s/round | this s/round | this / ref | ref peak MB | this peak MB |",
             "|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for case in a.cases.split(","):
            preset, forms = CASES[case]
            tff_rounds, fast_rounds = ROUNDS.get(case, (a.tff_rounds, a.fast_rounds))
            runs = [("tff", "-", ["engine=tff", f"rounds={tff_rounds}"])] + [
                ("fast", label, ["engine=fast", *extra, f"rounds={SLOW_FORMS.get(label, fast_rounds)}"])
                for label, extra in forms if not a.forms or a.forms in label]
            for engine, label, extra in runs:
                got = {"ref": ([], []), "this": ([], [])}
                for i in range(a.repeats):
                    order = (("ref", ref), ("this", ROOT)) if i % 2 == 0 else (("this", ROOT), ("ref", ref))
                    for side, root in order:
                        summary, rows, _ = run([*preset, *extra, "eval_every=100000"], tmp,
                                               f"{case}-{engine}-{side}-{len(lines)}-{i}", root)
                        got[side][0].extend(r["round_s"] for r in rows if r["split"] == "train" and r["round"] > 1)
                        got[side][1].append(summary["peak_rss_mb"])
                        print(f"{case} {engine} [{label}] {side}: {per_round(rows):.4f} s/round, peak "
                              f"{summary['peak_rss_mb']} MB", file=sys.stderr)
                (t0, m0), (t1, m1) = ((statistics.median(got[s][0]), max(got[s][1])) for s in ("ref", "this"))
                lines.append(f"| {case} | {engine} | {label} | {t0:.4f} | {t1:.4f} | {t1 / t0:.3f} | "
                             f"{m0:.0f} | {m1:.0f} |")
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
