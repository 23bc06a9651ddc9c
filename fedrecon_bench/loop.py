"""The benchmark loop: sample clients, run a round, evaluate, log.

Algorithms provide initialize/next/evaluate; tasks provide data and model.
A round reads only its sampled clients, through a cache bounded in bytes
(`data_cache_mb`), so memory does not grow with the population; the next round's
clients are read in the background while this one trains (engine=fast).
"""
from __future__ import annotations

import math
import os
import resource
import sys
import time

import numpy as np
import psutil
from tqdm import tqdm

import tasks
from fedrecon_bench import algorithms, checkpoint, privacy, rundir, tff_runtime, validate
from fedrecon_bench.errors import UserError
from fedrecon_bench.run_log import RunLog


class _Datasets:
    """A population for engine=tff: tf.data.Datasets built on demand from the clients'
    examples, which are read through a byte-bounded cache."""

    def __init__(self, task, clients, cache_bytes: int):
        from fedrecon_bench.cache import ByteLRU

        self.task, self.clients, self.cache = task, clients, ByteLRU(cache_bytes)

    def __len__(self) -> int:
        return len(self.clients)

    def __getitem__(self, i: int):
        return self.task.client_dataset(self.cache.get(int(i), lambda: self.clients.read(int(i))))

    def select(self, idx):
        return [self[int(i)] for i in idx]

    def all(self):
        return self.select(range(len(self.clients)))

    def prefetch(self, idx) -> None:
        pass  # TFF builds its datasets lazily; reading ahead would not overlap with its rounds

    def evaluation(self, idx, ids=None, recon_from=None):
        return self.select(idx)


def populations(engine: str, task, algo, data, cache_mb: int = 1024):
    """Each population in the engine's form: tf.data datasets (tff) or padded arrays
    packed per selection (fast); both answer `select(indices)`, `all()`, `prefetch`
    and `evaluation`. Each has its own cache of `cache_mb` MB."""
    size = int(cache_mb) << 20
    if engine == "fast":
        from fedrecon_bench.fast.data import Population

        lockstep = getattr(algo, "mode", "vmap") == "vmap"
        return tuple(Population(algo.m, getattr(data, s), size, lockstep) for s in ("train", "val", "test"))
    return tuple(_Datasets(task, getattr(data, s), size) for s in ("train", "val", "test"))


def engine_of(cfg, task) -> str:
    engine = cfg.get("engine", "tff")
    if engine not in algorithms.ENGINES:
        raise UserError(f"engine={engine!r} is unknown; use tff or fast")
    if engine == "fast" and not hasattr(task, "fast_model"):
        raise UserError(f"engine=fast: task {cfg.task.name!r} has no fast model yet; "
                                 "use engine=tff")
    return engine


def model_size(task, info, all_global: bool = False) -> dict:
    """Parameter counts and the bytes one client receives and sends per round, from the
    initial weights (the same on both engines).

    Only global variables travel (the server sends them; the client returns an
    update of the same shapes); an algorithm without local variables
    (`all_global`) trains the task's local layers as global ones."""
    g0, l0 = task.initial_weights(info)
    count = lambda ws: int(sum(np.size(w) for w in ws.values()))
    nbytes = lambda ws: int(sum(np.asarray(w).nbytes for w in ws.values()))
    g, loc = count(g0), count(l0)
    moved = nbytes(g0) + (nbytes(l0) if all_global else 0)
    if all_global:
        g, loc = g + loc, 0
    return {"global_params": g, "local_params": loc,
            "bytes_down_per_client": moved, "bytes_up_per_client": moved}


def save_global_weights(path: str, names, weights) -> None:
    """The server's final global weights, as `<index>/<variable name>` npz arrays
    (no pickle), so analysis can rebuild the model and reconstruct unseen users."""
    arrays = [np.asarray(a) for a in weights]
    if len(names) != len(arrays):
        names = [f"w{i}" for i in range(len(arrays))]
    tmp = path + ".tmp.npz"
    np.savez(tmp, **{f"{i:03d}/{n}": a for i, (n, a) in enumerate(zip(names, arrays))})
    os.replace(tmp, path)


def device_info(engine: str, algo) -> dict:
    """Where the run computes: engine=fast's JAX devices (and how its clients run), or
    TensorFlow's CPU for engine=tff."""
    if engine != "fast":
        return {"platform": "cpu", "framework": "tensorflow"}
    import jax

    devices = jax.devices()
    return {"platform": devices[0].platform, "kind": devices[0].device_kind,
            "devices": [str(d) for d in devices], "framework": f"jax {jax.__version__}",
            "clients": algo.mode}


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


DP_FLOATS = ("dp_clip", "dp_zeroing_norm")  # a private round's aggregator values (README)


def eval_sample(cfg, n: int, split: str, r: int, seed: int):
    """Which of the n val/test clients an evaluation measures: None = all of them
    (eval_clients=all); else eval_clients of them without replacement, as the authors
    sample: val anew at each evaluation (a function of the round, so resuming needs no
    state), test once. Seeded by the split seed, as the authors' sampling is fixed by
    their seed 42, so run seeds share the samples."""
    k = cfg.get("eval_clients", "all")
    if k == "all":
        return None
    rng = np.random.default_rng([seed, 3, r] if split == "val" else [seed, 4])
    return np.sort(rng.choice(n, size=k, replace=False))


def _clean(metrics: dict, names) -> dict:
    out = {k: float(metrics[k]) for k in (*names, *DP_FLOATS) if k in metrics}
    for k in ("num_examples", "num_batches", "store_clients", "store_bytes", "dp_zeroed"):
        if k in metrics:
            out[k] = int(metrics[k])
    return out


def run(cfg, run_dir: str) -> dict:
    """Runs one benchmark job, continues it from the run dir's newest readable checkpoint,
    or extends a completed one (rundir.py: one writer, one experiment per run dir);
    returns the summary written to summary.json."""
    t0 = time.time()
    validate.check_config(cfg)
    plan = rundir.prepare(cfg, run_dir)
    try:
        return plan.previous if plan.done else _run(cfg, run_dir, plan, t0)
    finally:
        plan.release()


def _run(cfg, run_dir: str, plan, t0: float) -> dict:
    task = tasks.build(cfg)
    engine = engine_of(cfg, task)
    data = task.load()
    validate.check_population(cfg, data)
    rundir.begin(plan, cfg, data)  # the run dir changes only from here on
    report = privacy.Report(cfg, len(data.train)) if privacy.params(cfg) else None
    if engine == "tff":
        tff_runtime.start()
    algo = algorithms.get(cfg.algo.name, engine)(task, data.info, cfg, run_dir=run_dir)
    all_global = getattr(algo, "all_global", False)
    size = model_size(task, data.info, all_global)

    state = algo.initialize()
    rng = np.random.default_rng([cfg.seed, 2])  # client sampling only
    start, resumed, wall_before, clips = 1, None, 0.0, []  # clips: each round's DP clip
    restored = plan.restore(state)
    if restored is not None:
        state, meta = restored
        rng.bit_generator.state = meta["rng"]
        start, resumed, wall_before = meta["round"] + 1, meta["round"], meta["wall_s"]
        clips = meta.get("dp_clips", [])
        if hasattr(algo, "store"):
            algo.store.restore(checkpoint.store_dir(run_dir, meta["round"]))
        print(f"note: resuming {run_dir} after round {meta['round']}", file=sys.stderr)

    log = RunLog(run_dir, cfg, resume_id=(meta.get("wandb_id") if restored else None))
    if restored:
        log.last = meta["last"]
    summary = {"task": cfg.task.name, "algo": cfg.algo.name, "seed": cfg.seed,
               "status": "failed", "final": {}, "wall_s": None,
               "global_params": size["global_params"], "local_params": size["local_params"],
               "split_by": data.split_by, "engine": engine,
               "comm": {"bytes_down_per_client": size["bytes_down_per_client"],
                        "bytes_up_per_client": size["bytes_up_per_client"],
                        "total_bytes_down": 0, "total_bytes_up": 0},
               "rounds": cfg.rounds, "clients_per_round": cfg.clients_per_round,
               "num_clients": {s: len(getattr(data, s)) for s in ("train", "val", "test")},
               "round_reached": start - 1, "resumed_from_round": resumed, "run_dir": run_dir,
               "data_info": {k: v for k, v in data.info.items() if isinstance(v, (int, float, str))}}
    if restored:
        summary["comm"] = meta["comm"]  # totals so far
    summary["device"] = device_info(engine, algo)
    log.config_update({"device": summary["device"]})
    print(start_line(cfg, engine, size, data, summary["device"]), file=sys.stderr, flush=True)
    train, val, test = populations(engine, task, algo, data, cfg.get("data_cache_mb", 1024))
    proc = psutil.Process()  # resident memory per round: long TFF runs are known to leak
    names = task.metric_names
    seen = data.split_by == "example"
    pops = {"val": val, "test": test}
    # Evaluated clients, selected once: all of val/test, and for seen users their own training data.
    # Evaluated clients: all of val/test (built once) or a sample per evaluation (eval_clients),
    # streamed in chunks on engine=fast; seen users with their own training data.
    fixed = {}

    def clients_of(split, population, r):
        idx = eval_sample(cfg, len(population), split, r, task.data_seed)
        if idx is None and split in fixed:
            return fixed[split]
        idx = np.arange(len(population)) if idx is None else idx
        ids = [population.ids[i] for i in idx]
        at = [data.train.index_of(c) for c in ids] if seen else None
        out = (pops[split].evaluation(idx, ids, (train, at) if seen else None), ids,
               train.select(at) if seen and engine == "tff" else None)
        if cfg.get("eval_clients", "all") == "all":
            fixed[split] = out
        return out

    def evaluate(r, split, population):
        """One row per evaluation mode; the algorithm's first mode is the split's headline.
        Seen users reconstruct (or fine-tune) on their own training data."""
        t = time.time()
        clients, ids, recon_from = clients_of(split, population, r)
        res = algo.evaluate(state, clients, ids, seen=seen, recon_from=recon_from)
        eps = report.row(r) if report else {}  # ε after r rounds, at δ
        modes = getattr(algo, "eval_modes", None)
        if not modes:
            return log.row(r, split, _clean(res, names), clients=len(ids), eval_s=time.time() - t, **eps)
        for mode in reversed(list(res)):  # headline mode last, so it is the split's final row
            key = split if mode == modes[0] else f"{split}_{mode}"
            log.row(r, split, _clean(res[mode], names), clients=len(ids),
                    eval_s=time.time() - t, eval_mode=mode, last_key=key, **eps)
    try:
        bar = tqdm(range(start, cfg.rounds + 1), desc=f"{cfg.task.name}/{cfg.algo.name}",
                   file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                   initial=start - 1, total=cfg.rounds)
        for r in bar:
            t = time.time()
            ids = rng.choice(len(data.train), size=cfg.clients_per_round, replace=False)
            if r < cfg.rounds:  # read the next round's clients meanwhile (a copy: rng stays put)
                ahead = np.random.default_rng()
                ahead.bit_generator.state = rng.bit_generator.state
                train.prefetch(ahead.choice(len(data.train), size=cfg.clients_per_round, replace=False))
            state, m = algo.next(state, train.select(ids), [data.train.ids[i] for i in ids])
            down, up = (len(ids) * size[k] for k in ("bytes_down_per_client", "bytes_up_per_client"))
            rec = log.row(r, "train", _clean(m, names), clients=len(ids), round_s=time.time() - t,
                          rss_mb=round(proc.memory_info().rss / 2**20, 1),
                          bytes_down=down, bytes_up=up)
            summary["comm"]["total_bytes_down"] += down
            summary["comm"]["total_bytes_up"] += up
            summary["round_reached"] = r
            if "dp_clip" in m:
                clips.append(float(m["dp_clip"]))
            bar.set_postfix(loss=f"{rec['loss']:.4f}",
                            **{task.headline_metric: f"{rec.get(task.headline_metric, float('nan')):.4f}"})
            if not math.isfinite(rec["loss"]):
                summary.update(status="diverged",
                               error=f"non-finite training loss ({rec['loss']}) at round {r}")
                break
            if r % cfg.eval_every == 0:
                evaluate(r, "val", data.val)
            # The last round's checkpoint comes before its end-only rows: a longer run continues from it.
            if cfg.checkpoint_every and (r % cfg.checkpoint_every == 0 or r == cfg.rounds):
                if hasattr(algo, "store"):  # before the state: a checkpoint never points ahead of it
                    algo.store.snapshot(checkpoint.store_dir(run_dir, r))
                checkpoint.save(run_dir, r, state, {
                    **plan.meta, "store": hasattr(algo, "store"),
                    "rng": rng.bit_generator.state, "metrics_lines": log.lines,
                    "last": log.last, "wandb_id": log.wandb_id, "comm": summary["comm"],
                    "wall_s": wall_before + time.time() - t0, "dp_clips": clips})
        bar.close()
        if summary["status"] != "diverged":
            if cfg.rounds % cfg.eval_every:  # the last round's val row, unless it had one
                evaluate(cfg.rounds, "val", data.val)
            evaluate(cfg.rounds, "test", data.test)
            fm = task.fast_model(data.info)  # names: the JAX model's (the same on both engines)
            save_global_weights(os.path.join(run_dir, "global_weights.npz"),
                                fm.model_order if all_global else fm.global_names,
                                algo.global_weights(state).trainable)
            summary["status"] = "completed"
    except BaseException as e:
        summary["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        if engine == "fast":  # how many steps a round scheduled, and computed (lockstep padding)
            summary["fast"] = {"clients": algo.mode, "steps_scheduled": algo.exec.steps["scheduled"],
                               "steps_computed": algo.exec.steps["computed"]}
        summary["final"] = {s: {k: v for k, v in rec.items() if k not in ("round", "split")}
                            for s, rec in log.last.items()}
        if report:
            summary["privacy"] = report.summary(summary["round_reached"], clips, algo.dp_clip(state))
        summary["wall_s"] = round(wall_before + time.time() - t0, 3)
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        log.finish(summary)
    return summary
