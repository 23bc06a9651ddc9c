"""summary.json (the run contract): what a run was, how far it got, what it cost, and its
final metrics; also the start line and the saved global weights."""
from __future__ import annotations

import os
import resource
import time

import numpy as np


def model_size(task, info, sends: str = "global") -> dict:
    """Parameter counts and the bytes one client receives and sends per round, from the
    initial weights (the same on both engines). Only what the algorithm sends travels
    (its SPEC.sends): the global variables, or all of them when it trains the task's local
    layers as global ones."""
    g0, l0 = task.initial_weights(info)
    count = lambda ws: int(sum(np.size(w) for w in ws.values()))
    nbytes = lambda ws: int(sum(np.asarray(w).nbytes for w in ws.values()))
    g, loc = count(g0), count(l0)
    moved = nbytes(g0) + (nbytes(l0) if sends == "all" else 0)
    if sends == "all":
        g, loc = g + loc, 0
    return {"global_params": g, "local_params": loc,
            "bytes_down_per_client": moved, "bytes_up_per_client": moved}


def save_global_weights(path: str, weights) -> None:
    """The server's final global weights (api.Weights), as `<index>/<variable name>` npz
    arrays (no pickle), so analysis can rebuild the model and reconstruct unseen users."""
    arrays = [np.asarray(a) for a in weights.trainable]
    names = list(weights.names)
    if len(names) != len(arrays):
        names = [f"w{i}" for i in range(len(arrays))]
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{f"{i:03d}/{n}": a for i, (n, a) in enumerate(zip(names, arrays))})
    os.replace(tmp, path)


def start_line(cfg, engine: str, size: dict, data, device: dict) -> str:
    """One line before training: what the run is about to compute, so a user knows what
    a long default is waiting for."""
    sizes = []
    for s in ("train", "val", "test"):
        n = getattr(data, s).sizes
        sizes.append(f"{s} {len(n):,} clients / {int(n.sum()):,} examples (max {int(n.max(initial=0)):,})")
    where = device["platform"] + (f", {device['clients']} clients" if "clients" in device else "")
    return (f"run: {cfg.task.name}/{cfg.algo.name} on engine={engine} ({where}): "
            f"{size['global_params'] + size['local_params']:,} parameters ({size['global_params']:,} "
            f"global, {size['local_params']:,} local per client); {cfg.clients_per_round} clients x "
            f"{cfg.rounds} rounds; " + "; ".join(sizes))


class Summary(dict):
    """summary.json as it grows during a run; `close` fills in the end."""

    def __init__(self, cfg, engine: str, data, size: dict, device: dict, run_dir: str):
        self.t0 = time.time()
        super().__init__(
            task=cfg.task.name, algo=cfg.algo.name, seed=cfg.seed, status="failed", final={}, wall_s=None,
            global_params=size["global_params"], local_params=size["local_params"], split_by=data.split_by,
            engine=engine, comm={"bytes_down_per_client": size["bytes_down_per_client"],
                                 "bytes_up_per_client": size["bytes_up_per_client"],
                                 "total_bytes_down": 0, "total_bytes_up": 0},
            rounds=cfg.rounds, clients_per_round=cfg.clients_per_round,
            num_clients={s: len(getattr(data, s)) for s in ("train", "val", "test")},
            round_reached=0, resumed_from_round=None, run_dir=run_dir,
            data_info={k: v for k, v in data.info.items() if isinstance(v, (int, float, str))},
            device=device)
        self.wall_before = 0.0

    def resumed(self, meta: dict) -> None:
        """Continues the totals of the checkpoint a run resumes from."""
        self.update(round_reached=meta["round"], resumed_from_round=meta["round"], comm=meta["comm"])
        self.wall_before = meta["wall_s"]

    def wall_s(self) -> float:
        return self.wall_before + time.time() - self.t0

    def round_done(self, r: int, clients: int) -> dict:
        """Counts a round's traffic; returns its bytes for the round's row."""
        c = self["comm"]
        down, up = clients * c["bytes_down_per_client"], clients * c["bytes_up_per_client"]
        c["total_bytes_down"] += down
        c["total_bytes_up"] += up
        self["round_reached"] = r
        return {"bytes_down": down, "bytes_up": up}

    def close(self, log, engine_stats, privacy) -> None:
        """The final rows per split, engine facts, privacy, time and memory."""
        if engine_stats is not None:
            self["fast"] = engine_stats
        self["final"] = {s: {k: v for k, v in rec.items() if k not in ("round", "split")}
                         for s, rec in log.last.items()}
        if privacy is not None:
            self["privacy"] = privacy
        self["wall_s"] = round(self.wall_s(), 3)
        self["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
