"""engine=fast on an accelerator: the four runs of the GPU measurement, one JSON.

    python benchmarks/device_runs.py --data DIR --out DIR [--work DIR] [--deadline S] [--quick] [--cases a,b]

Called by benchmarks/device.sh (which installs the carried wheels and unpacks the data).
Each case runs the CLI in a child process (`python -m fedrecon_bench ... logger=none
checkpoint_every=0`) and records: s/round (the median training round after the first,
which compiles; and the first round), the loop's time (summary.json `wall_s`), the whole
process's time, peak accelerator memory (JAX's allocator `peak_bytes_in_use`, read in
the child at exit) and the JAX device (summary.json `device`). Only `device.json` and one
log per case go to --out (at most 8 files come back from such a machine); run dirs and the synthetic
database stay in --work. The JSON is rewritten after every case, and every case gets what
is left of --deadline, so a call stopped at its limit keeps the cases that finished.

Cases (the issue's): the MovieLens paper run (500 rounds), NWP task defaults (3 rounds,
10 clients), the EMNIST preset (3 rounds), and a synthetic Stack Overflow population of
20,000 users (fedrecon_bench/synth.py) with the paper model (3 rounds, 200 clients, 200
evaluated users). `--quick` shrinks rounds and sizes for a CPU test of the script.
"""
from __future__ import annotations

import argparse
import atexit
import json
import os
import pathlib
import platform
import runpy
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
SO_USERS = 20_000


def cases(data: str, so_dir: str, quick: bool) -> dict[str, list[str]]:
    """name -> CLI overrides; --quick: a few rounds and small sizes (CPU test of the script)."""
    q = (lambda full, small: small if quick else full)
    return {
        "movielens_paper": ["experiment=movielens_paper", f"rounds={q(500, 5)}", f"eval_every={q(50, 5)}"],
        "nwp_defaults": ["+task=nwp", "+algo=fedrecon", f"rounds={q(3, 2)}", "clients_per_round=10",
                         *q([], ["task.max_users=60"])],
        "emnist_fedrecon": ["experiment=emnist_fedrecon", f"rounds={q(3, 2)}", *q([], ["clients_per_round=5"])],
        "stackoverflow_20k": ["experiment=nwp_stackoverflow_paper", f"data_dir={so_dir}", f"rounds={q(3, 2)}",
                              f"clients_per_round={q(200, 10)}", f"eval_clients={q(200, 10)}",
                              *q([], ["task.lstm_units=64", "task.vocab_size=2000"])],
    }


def child(stats_path: str, overrides: list[str]) -> None:
    """Runs the CLI in this process; at exit writes JAX's device memory statistics."""
    def write_stats():
        stats = None
        if "jax" in sys.modules:
            import jax

            d = jax.devices()[0]
            stats = {"device": str(d), "platform": d.platform, "kind": d.device_kind,
                     "memory_stats": d.memory_stats()}  # None on CPU
        pathlib.Path(stats_path).write_text(json.dumps(stats, default=str))

    atexit.register(write_stats)
    sys.argv = ["fedrecon_bench", *overrides]
    runpy.run_module("fedrecon_bench", run_name="__main__", alter_sys=True)


def run_case(name: str, overrides: list[str], out: pathlib.Path, work: pathlib.Path, timeout: float) -> dict:
    run_dir, stats = work / name, work / f"{name}.mem.json"
    shutil.rmtree(run_dir, ignore_errors=True)  # a completed run dir would be kept, not rerun
    stats.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", str(stats), "--", *overrides, "logger=none",
           "checkpoint_every=0", f"hydra.run.dir={run_dir}"]
    t = time.time()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout)
        rc, log = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as e:
        rc, log = f"timeout after {timeout:.0f} s", e.stdout or b""
    log = log.decode(errors="replace")
    whole = time.time() - t
    (out / f"{name}.log").write_text(log[-200_000:])
    res = {"overrides": overrides, "exit": rc, "whole_process_s": round(whole, 2)}
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
        rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    except (OSError, ValueError):
        res["error"] = log.strip().splitlines()[-1] if log.strip() else "no output"
        return res
    train = [r["round_s"] for r in rows if r["split"] == "train"]
    mem = json.loads(stats.read_text()) if stats.exists() else None
    ms = (mem or {}).get("memory_stats") or {}
    res.update({
        "device": summary.get("device"), "status": summary.get("status"), "rounds": len(train),
        "s_per_round_median_after_first": round(statistics.median(train[1:]), 4) if len(train) > 1 else None,
        "first_round_s": round(train[0], 3) if train else None, "loop_s": summary.get("wall_s"),
        "peak_device_memory_mb": round(ms["peak_bytes_in_use"] / 2**20, 1) if "peak_bytes_in_use" in ms else None,
        "device_memory_limit_mb": round(ms["bytes_limit"] / 2**20, 1) if "bytes_limit" in ms else None,
        "peak_rss_mb": summary.get("peak_rss_mb"), "fast": summary.get("fast"),
        "final_test": {k: v for k, v in (summary.get("final", {}).get("test") or {}).items()
                       if "_client_" not in k},
    })
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", required=True, help="the unpacked data dir (ml-1m, femnist-leaf, shakespeare)")
    ap.add_argument("--out", required=True, help="device.json and one log per case")
    ap.add_argument("--work", default="/tmp/fedrecon-device-work", help="run dirs, the synthetic database")
    ap.add_argument("--deadline", type=float, default=float(os.environ.get("DEVICE_DEADLINE", 440)),
                    help="seconds for all cases together, from this script's start")
    ap.add_argument("--quick", action="store_true", help="a CPU test of this script: few rounds, small sizes")
    ap.add_argument("--cases", default="", help="comma-separated subset of the case names")
    a = ap.parse_args()
    end = time.time() + a.deadline
    out, work = pathlib.Path(a.out), pathlib.Path(a.work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    import jax  # the image's JAX: what the children will use

    report = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "host": platform.node(),
              "python": platform.python_version(), "jax": jax.__version__,
              "devices": [str(d) for d in jax.devices()], "quick": a.quick, "cases": {}}
    so_dir = work / "so-synth"
    todo = cases(a.data, str(so_dir), a.quick)
    for name in (a.cases.split(",") if a.cases else todo):
        if name == "stackoverflow_20k":
            t = time.time()
            from fedrecon_bench import synth

            synth.stackoverflow(str(so_dir), 1_000 if a.quick else SO_USERS, seed=0, log=None)
            report["stackoverflow_generated_s"] = round(time.time() - t, 1)
        left = end - time.time()
        if left < 10:
            report["cases"][name] = {"exit": "not run: the deadline had passed"}
            continue
        report["cases"][name] = run_case(name, todo[name], out, work, left)
        print(name, json.dumps(report["cases"][name], default=str), flush=True)
        (out / "device.json").write_text(json.dumps(report, indent=1, default=str))
    print(f"wrote {out / 'device.json'}", flush=True)


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
    else:
        main()
