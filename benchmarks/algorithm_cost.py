"""What each personalization baseline costs on engine=fast, side by side with FedAvg.

    uv run python benchmarks/algorithm_cost.py [--rounds 100] [--repeats 2] [--algos fedavg,ditto,...]
                                               [--store-rounds 40] [--store-clients 500]
                                               [--skip round|store] [--tmp DIR] [--smoke]

round  the MovieLens paper setting (experiment=movielens_paper engine=fast: unseen users,
       100 clients per round), each algorithm (ALGOS) for --rounds rounds with one evaluation
       at the end, in ABBA order over --repeats repeats (A..F, F..A, ...): the median training
       round after the first (round 1 traces and compiles) over all repeats, its ratio to
       FedAvg's, the whole process (median) and the peak RSS. Every algorithm runs at FedAvg's
       client rate 0.1: at the preset's 0.5 Ditto and FedRep diverge within 20 rounds, and the
       rate does not change what a round computes. Ditto keeps its personal models in memory
       here (algo.store=memory: about 3.1 GB after 100 rounds of 100 clients).
store  Ditto with algo.store=disk for --store-rounds x --store-clients (40 x 500 visit about
       98.7% of the 4,832 training users), the same for SHORT rounds (a store of at most SHORT
       x --store-clients), and FedAvg for --store-rounds: the peak RSS of each, the store's
       clients and its size on disk. Targets (issue #21, "Cost, measured side by side"): Ditto's
       peak RSS does not grow with its store (the long run's minus the short run's: about 0),
       and exceeds FedAvg's by about the sampled clients' personal models (--store-clients x
       one model's bytes, printed beside it), not by the whole store (4,832 x 741,400 B, about
       3.6 GB). The store is written under --tmp, which needs twice that free.
--smoke  48 training users (task.max_users=60), 10 clients per round, a few rounds: a check
         that the script works (tests/test_benchmarks_smoke.py), not a measurement.
Prints the load average (run it on a quiet machine) and one table.
"""
from __future__ import annotations

import argparse
import os
import pathlib
import shutil
import statistics
import sys
import tempfile

from engines import run  # this folder is on sys.path when run as a script

PAPER = ["experiment=movielens_paper", "engine=fast", "algo.client_optimizer.learning_rate=0.1"]
ALGOS = {  # row name -> overrides; FedAvg first: every ratio is to it
    "fedavg": ["+algo=fedavg"],
    "fedprox": ["+algo=fedprox"],
    "fedrep": ["+algo=fedrep"],
    "ditto": ["+algo=ditto", "algo.store=memory"],
    "hypcluster2": ["+algo=hypcluster", "algo.clusters=2"],
    "hypcluster4": ["+algo=hypcluster", "algo.clusters=4"],
}
SHORT = 2  # rounds of the store part's second Ditto run: the same round, a store of at most 2 x clients
MODEL_BYTES = 741_400  # one MovieLens paper model: (3,706 items + 1 user) x 50 float32s
# (training users, overrides, defaults) of the full measurement and of the smoke check
FULL = (4_832, [], {"rounds": 100, "repeats": 2, "store_rounds": 40, "store_clients": 500})
SMOKE = (48, ["task.max_users=60", "clients_per_round=10"],
         {"rounds": 3, "repeats": 1, "store_rounds": 6, "store_clients": 10})
# MB in the table and notes are MiB, as summary.json's peak_rss_mb (ru_maxrss / 1024)
HEADER = ["| part | algorithm | rounds x clients | s/round | / FedAvg | process s | peak RSS MB | client store | "
          "training users visited |", "|---|---|---|---|---|---|---|---|---|"]


def train_rounds(rows: list[dict]) -> list[float]:
    """The training rounds' seconds after the first (which traces and compiles)."""
    return [r["round_s"] for r in rows if r["split"] == "train" and r["round"] > 1]


def store_cell(summary: dict) -> str:
    st = summary.get("client_store")
    if st is None:
        return "-"
    size = f"{st['bytes'] / 2**20:,.1f} MB" if st["bytes"] >= 2**20 else f"{st['bytes'] / 1024:,.1f} KB"
    return f"{st['clients']:,} clients, {size}"


def visited(summary: dict) -> int:
    """Training users sampled at least once."""
    n = summary["num_clients"]["train"]
    return round(n * (1 - summary["participation"]["never_sampled"]))


def row(part: str, name: str, s: dict, t: float, t_fedavg: float, process: float) -> str:
    n = s["num_clients"]["train"]
    return (f"| {part} | {name} | {s['rounds']} x {s['clients_per_round']} | {t:.4f} | {t / t_fedavg:.2f} | "
            f"{process:.1f} | {s['peak_rss_mb']:,.0f} | {store_cell(s)} | {visited(s) / n:.1%} of {n:,} |")


def round_cost(a, tmp: str, extra: list[str]) -> list[str]:
    """Each algorithm's rows, in ABBA order over the repeats; rows for FedAvg first."""
    names = ["fedavg", *[n for n in a.algos if n != "fedavg"]]
    got = {n: {"round_s": [], "process": [], "peak": []} for n in names}
    last = {}
    for i in range(a.repeats):
        for n in names if i % 2 == 0 else names[::-1]:
            s, rows, total = run([*PAPER, *ALGOS[n], *extra, f"rounds={a.rounds}", f"eval_every={a.rounds}"],
                                 tmp, f"round-{n}-{i}")
            got[n]["round_s"] += train_rounds(rows)
            got[n]["process"].append(total)
            got[n]["peak"].append(s["peak_rss_mb"])
            last[n] = s
            print(f"round {n} [{i}]: {statistics.median(train_rounds(rows)):.4f} s/round, {total:.1f} s in all, "
                  f"peak {s['peak_rss_mb']:.0f} MB", file=sys.stderr, flush=True)
    t_fedavg = statistics.median(got["fedavg"]["round_s"])
    lines = []
    for n in names:
        s = {**last[n], "peak_rss_mb": max(got[n]["peak"])}
        label = "ditto (memory store)" if n == "ditto" else n
        lines.append(row("round", label, s, statistics.median(got[n]["round_s"]), t_fedavg,
                         statistics.median(got[n]["process"])))
    return lines


def store_dir_bytes(run_dir: pathlib.Path) -> int:
    """What the disk store's files take on the disk (allocated blocks)."""
    from fedrecon_bench.client_store import DISK_DIRNAME

    return sum(p.stat().st_blocks * 512 for p in (run_dir / DISK_DIRNAME).iterdir())


def store_cost(a, tmp: str, extra: list[str]) -> tuple[list[str], list[str]]:
    """Ditto on a disk store against FedAvg at the same rounds and clients, and against itself
    after SHORT rounds (a store of at most SHORT x clients): the table's rows and the lines on
    the store and the differences in peak RSS."""
    runs = {}
    for n, rounds, over in (("ditto", a.store_rounds, ["+algo=ditto", "algo.store=disk"]),
                            ("ditto-short", SHORT, ["+algo=ditto", "algo.store=disk"]),
                            ("fedavg", a.store_rounds, ["+algo=fedavg"])):
        s, rows, total = run([*PAPER, *extra, *over, f"rounds={rounds}", f"clients_per_round={a.store_clients}",
                              f"eval_every={rounds}"], tmp, f"store-{n}")
        runs[n] = (s, statistics.median(train_rounds(rows)), total)
        print(f"store {n}: {runs[n][1]:.4f} s/round, {total:.1f} s in all, peak {s['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
    (d, t_d, p_d), (e, t_e, p_e), (f, t_f, p_f) = runs["ditto"], runs["ditto-short"], runs["fedavg"]
    on_disk = store_dir_bytes(pathlib.Path(tmp, "store-ditto"))
    lines = [row("store", "ditto (disk store)", d, t_d, t_f, p_d),
             row("store", f"ditto (disk store, {SHORT} rounds)", e, t_e, t_f, p_e),
             row("store", "fedavg", f, t_f, t_f, p_f)]
    st, model = d["client_store"], d["comm"]["bytes_down_per_client"]  # Ditto sends the whole model
    short = e["client_store"]
    notes = [f"Ditto's disk store after {a.store_rounds} rounds x {a.store_clients} clients: "
             f"{st['clients']:,} clients of {visited(d):,} visited training users, {st['bytes']:,} B in files "
             f"(summary.json client_store.bytes), {on_disk:,} B allocated on disk.",
             f"Peak RSS, Ditto (disk store) - FedAvg: {d['peak_rss_mb'] - f['peak_rss_mb']:,.0f} MB; the sampled "
             f"clients' personal models ({a.store_clients} x {model:,} B): {a.store_clients * model / 2**20:,.0f} MB "
             f"(target: about this, not the store's {st['bytes'] / 2**20:,.0f} MB).",
             f"Peak RSS, Ditto (disk store) after {a.store_rounds} rounds - after {SHORT}: "
             f"{d['peak_rss_mb'] - e['peak_rss_mb']:,.0f} MB, while the store grew from {short['clients']:,} to "
             f"{st['clients']:,} clients ({(st['bytes'] - short['bytes']) / 2**20:,.0f} MB; target: about 0)."]
    return lines, notes


def args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, help="rounds of each round-cost run (default 100; --smoke 3)")
    ap.add_argument("--repeats", type=int, help="round-cost runs of each algorithm, ABBA order (default 2)")
    ap.add_argument("--algos", default=",".join(ALGOS), help=f"comma list of {', '.join(ALGOS)} (FedAvg always runs)")
    ap.add_argument("--store-rounds", type=int, help="rounds of the disk-store runs (default 40)")
    ap.add_argument("--store-clients", type=int, help="clients per round of the disk-store runs (default 500)")
    ap.add_argument("--skip", default="", choices=["", "round", "store"], help="leave out one part")
    ap.add_argument("--tmp", help="where the runs and the disk store go (default: the system's temp dir)")
    ap.add_argument("--smoke", action="store_true", help="a tiny population and few rounds: does it work")
    a = ap.parse_args()
    a.algos = a.algos.split(",")
    unknown = sorted(set(a.algos) - set(ALGOS))
    if unknown:
        ap.error(f"--algos: unknown {unknown}; choose from {', '.join(ALGOS)}")
    a.users, a.extra, defaults = SMOKE if a.smoke else FULL
    for k, v in defaults.items():
        if getattr(a, k) is None:
            setattr(a, k, v)
    if a.rounds < 2:
        ap.error("--rounds must be at least 2: the first round (tracing, compiling) is not counted")
    return a


def check_disk(a) -> None:
    """Refuses before any run when the disk store (every training user's model) would not fit twice."""
    where = a.tmp or tempfile.gettempdir()
    need, free = 2 * a.users * MODEL_BYTES, shutil.disk_usage(where).free
    if free < need:
        print(f"error: {where} has {free / 1e9:.1f} GB free; the disk store needs {need / 1e9:.1f} GB (twice "
              f"{a.users:,} models of {MODEL_BYTES:,} B): choose another folder with --tmp DIR, or --skip store",
              file=sys.stderr)
        sys.exit(2)


def main() -> None:
    a = args()
    if a.skip != "store":
        check_disk(a)
    print(f"load average at start: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    lines, notes = list(HEADER), []
    with tempfile.TemporaryDirectory(dir=a.tmp) as tmp:
        if a.skip != "round":
            lines += round_cost(a, tmp, a.extra)
        if a.skip != "store":
            rows, notes = store_cost(a, tmp, a.extra)
            lines += rows
    print(f"load average at end: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    print("\n".join([*lines, "", *notes] if notes else lines))


if __name__ == "__main__":
    main()
