"""The benchmark loop: sample clients, run a round, evaluate, log.

Algorithms provide initialize/next/evaluate; tasks provide data and model.
Each client's tf.data.Dataset is built once and reused across rounds, so a long
run does not create (and leak) new datasets every round.
"""
from __future__ import annotations

import json
import math
import os
import resource
import sys
import time

import numpy as np
import psutil
from tqdm import tqdm

import tasks
from fedrecon_bench import algorithms, checkpoint, tff_runtime, validate
from fedrecon_bench.errors import UserError
from fedrecon_bench.run_log import RunLog


class _Datasets:
    """Lazily built, cached tf.data.Datasets of one client population."""

    def __init__(self, task, clients):
        self.task, self.clients, self._cache = task, clients, {}

    def __getitem__(self, i: int):
        if i not in self._cache:
            self._cache[i] = self.task.client_dataset(self.clients.examples[i])
        return self._cache[i]

    def select(self, idx):
        return [self[int(i)] for i in idx]

    def all(self):
        return self.select(range(len(self.clients)))


def populations(engine: str, task, algo, data):
    """Each population in the engine's form: cached tf.data datasets (tff) or
    padded arrays (fast); both answer `select(indices)` and `all()`."""
    if engine == "fast":
        from fedrecon_bench.fast.data import Population

        return tuple(Population(algo.m, getattr(data, s)) for s in ("train", "val", "test"))
    return tuple(_Datasets(task, getattr(data, s)) for s in ("train", "val", "test"))


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
        pop = getattr(data, s)
        n = [len(next(iter(e.values()))) for e in pop.examples]
        sizes.append(f"{s} {len(pop):,} clients / {sum(n):,} examples (max {max(n, default=0):,})")
    where = device["platform"] + (f", {device['clients']} clients" if "clients" in device else "")
    return (f"run: {cfg.task.name}/{cfg.algo.name} on engine={engine} ({where}): "
            f"{size['global_params'] + size['local_params']:,} parameters ({size['global_params']:,} "
            f"global, {size['local_params']:,} local per client); {cfg.clients_per_round} clients x "
            f"{cfg.rounds} rounds; " + "; ".join(sizes))


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
    out = {k: float(metrics[k]) for k in names if k in metrics}
    for k in ("num_examples", "num_batches", "store_clients", "store_bytes"):
        if k in metrics:
            out[k] = int(metrics[k])
    return out


def _previous_summary(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "summary.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return None


def run(cfg, run_dir: str) -> dict:
    """Runs one benchmark job, or continues it from the run dir's last checkpoint;
    returns the summary written to summary.json."""
    t0 = time.time()
    validate.check_config(cfg)
    previous = _previous_summary(run_dir)
    if previous and previous.get("status") == "completed":
        print(f"note: {run_dir} already holds a completed run; nothing to do", file=sys.stderr)
        return previous
    task = tasks.build(cfg)
    engine = engine_of(cfg, task)
    data = task.load()
    validate.check_population(cfg, data)
    if engine == "tff":
        tff_runtime.start()
    algo = algorithms.get(cfg.algo.name, engine)(task, data.info, cfg, run_dir=run_dir)
    all_global = getattr(algo, "all_global", False)
    size = model_size(task, data.info, all_global)

    state = algo.initialize()
    rng = np.random.default_rng([cfg.seed, 2])  # client sampling only
    start, resumed, wall_before = 1, None, 0.0
    restored = checkpoint.load_latest(run_dir, state)
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    if restored is not None:
        state, meta = restored
        rng.bit_generator.state = meta["rng"]
        start, resumed, wall_before = meta["round"] + 1, meta["round"], meta["wall_s"]
        checkpoint.truncate_lines(metrics_path, meta["metrics_lines"])
        if hasattr(algo, "store"):
            algo.store.restore(checkpoint.store_dir(run_dir, meta["round"]))
        print(f"note: resuming {run_dir} after round {meta['round']}", file=sys.stderr)
    elif os.path.exists(metrics_path):
        os.remove(metrics_path)  # a crash before the first checkpoint: start afresh

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
               "round_reached": start - 1, "resumed_from_round": resumed, "run_dir": run_dir}
    if restored:
        summary["comm"] = meta["comm"]  # totals so far
    summary["device"] = device_info(engine, algo)
    log.config_update({"device": summary["device"]})
    print(start_line(cfg, engine, size, data, summary["device"]), file=sys.stderr, flush=True)
    train, val, test = populations(engine, task, algo, data)
    proc = psutil.Process()  # resident memory per round: long TFF runs are known to leak
    names = task.metric_names
    seen = data.split_by == "example"
    pops = {"val": val, "test": test}
    own_train = lambda ids: train.select([data.train.index_of(c) for c in ids]) if seen else None
    # Evaluated clients, selected once: all of val/test, and for seen users their own training data.
    everyone = {s: (pops[s].all(), getattr(data, s).ids, own_train(getattr(data, s).ids))
                for s in pops} if cfg.get("eval_clients", "all") == "all" else {}

    def evaluate(r, split, population):
        """One row per evaluation mode; the algorithm's first mode is the split's headline.
        Seen users reconstruct (or fine-tune) on their own training data."""
        t = time.time()
        idx = eval_sample(cfg, len(population), split, r, task.data_seed)
        if idx is None:
            clients, ids, recon_from = everyone[split]
        else:
            ids = [population.ids[i] for i in idx]
            clients, recon_from = pops[split].select(idx), own_train(ids)
        res = algo.evaluate(state, clients, ids, seen=seen, recon_from=recon_from)
        modes = getattr(algo, "eval_modes", None)
        if not modes:
            return log.row(r, split, _clean(res, names), clients=len(ids), eval_s=time.time() - t)
        for mode in reversed(list(res)):  # headline mode last, so it is the split's final row
            key = split if mode == modes[0] else f"{split}_{mode}"
            log.row(r, split, _clean(res[mode], names), clients=len(ids),
                    eval_s=time.time() - t, eval_mode=mode, last_key=key)
    try:
        bar = tqdm(range(start, cfg.rounds + 1), desc=f"{cfg.task.name}/{cfg.algo.name}",
                   file=sys.stderr, dynamic_ncols=True, mininterval=1.0,
                   initial=start - 1, total=cfg.rounds)
        for r in bar:
            t = time.time()
            ids = rng.choice(len(data.train), size=cfg.clients_per_round, replace=False)
            state, m = algo.next(state, train.select(ids), [data.train.ids[i] for i in ids])
            down, up = (len(ids) * size[k] for k in ("bytes_down_per_client", "bytes_up_per_client"))
            rec = log.row(r, "train", _clean(m, names), clients=len(ids), round_s=time.time() - t,
                          rss_mb=round(proc.memory_info().rss / 2**20, 1),
                          bytes_down=down, bytes_up=up)
            summary["comm"]["total_bytes_down"] += down
            summary["comm"]["total_bytes_up"] += up
            summary["round_reached"] = r
            bar.set_postfix(loss=f"{rec['loss']:.4f}",
                            **{task.headline_metric: f"{rec.get(task.headline_metric, float('nan')):.4f}"})
            if not math.isfinite(rec["loss"]):
                summary.update(status="diverged",
                               error=f"non-finite training loss ({rec['loss']}) at round {r}")
                break
            if r % cfg.eval_every == 0 or r == cfg.rounds:
                evaluate(r, "val", data.val)
            if cfg.checkpoint_every and r % cfg.checkpoint_every == 0 and r < cfg.rounds:
                if hasattr(algo, "store"):  # before the state: a checkpoint never points ahead of it
                    algo.store.snapshot(checkpoint.store_dir(run_dir, r))
                checkpoint.save(run_dir, r, state, {
                    "rng": rng.bit_generator.state, "metrics_lines": log.lines,
                    "last": log.last, "wandb_id": log.wandb_id, "comm": summary["comm"],
                    "wall_s": wall_before + time.time() - t0})
        bar.close()
        if summary["status"] != "diverged":
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
        summary["wall_s"] = round(wall_before + time.time() - t0, 3)
        summary["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        log.finish(summary)
    return summary
