"""The driver: sample clients, run a round, evaluate, log, checkpoint.

An algorithm (algorithms/api.py) provides initialize / next / evaluate / global_weights;
an engine (engines/) provides its populations and runtime; a task provides data and
model. The pieces: sampler.py (which clients), evaluation.py (val/test rows),
summary.py (summary.json), resume.py (checkpoints), run_log.py (metrics.jsonl, wandb).
A round reads only its sampled clients, through a cache bounded in bytes
(`data_cache_mb`); the next round's clients are read meanwhile where the engine can.
"""
from __future__ import annotations

import math
import os
import sys
import time

import psutil
from tqdm import tqdm

import tasks
from fedrecon_bench import algorithms, engines, privacy, rundir, validate
from fedrecon_bench.evaluation import Evaluation, clean, eval_sample  # noqa: F401  (eval_sample: tests)
from fedrecon_bench.resume import Resume
from fedrecon_bench.run_log import RunLog
from fedrecon_bench.sampler import ClientSampler
from fedrecon_bench.summary import Summary, model_size, save_global_weights, start_line


def run(cfg, run_dir: str) -> dict:
    """Runs one benchmark job, continues it from the run dir's newest readable checkpoint,
    or extends a completed one (rundir.py: one writer, one experiment per run dir);
    returns the summary written to summary.json."""
    validate.check_config(cfg)
    plan = rundir.prepare(cfg, run_dir)
    try:
        return plan.previous if plan.done else _run(cfg, run_dir, plan)
    finally:
        plan.release()


def _run(cfg, run_dir: str, plan) -> dict:
    spec, task, engine = algorithms.spec(cfg.algo.name), tasks.build(cfg), engines.get(cfg.engine)
    data = task.load()
    validate.check_population(cfg, data)
    rundir.begin(plan, cfg, data)  # the run dir changes only from here on
    report = privacy.Report(cfg, len(data.train)) if privacy.params(cfg) else None
    engine.start()
    algo = algorithms.get(spec.name, engine.name)(task, data.info, cfg, run_dir=run_dir)
    sampler = ClientSampler(cfg.seed, len(data.train), cfg.clients_per_round)
    resume = Resume(cfg, run_dir, algo, sampler, plan)
    state = resume.restore(algo.initialize())
    log = RunLog(run_dir, cfg, resume.meta)
    size = model_size(task, data.info, spec.sends)
    summary = Summary(cfg, engine.name, data, size, engine.device(algo), run_dir)
    if resume.meta:
        summary.resumed(resume.meta)
    log.config_update({"device": summary["device"]})
    print(start_line(cfg, engine.name, size, data, summary["device"]), file=sys.stderr, flush=True)
    train, val, test = engine.populations(task, data, algo, cfg.get("data_cache_mb", 1024))
    evaluate = Evaluation(cfg, task, data, {"train": train, "val": val, "test": test}, algo, log, report, run_dir)
    proc = psutil.Process()  # resident memory per round: long TFF runs are known to leak
    try:
        for r in _progress(cfg, resume.start):
            t, ids = time.time(), sampler.next()
            if r < cfg.rounds:  # read the next round's clients meanwhile
                train.prefetch(sampler.peek())
            state, m = algo.next(state, train.select(ids), [data.train.ids[i] for i in ids])
            rec = log.row(r, "train", clean(m, task.metric_names), clients=len(ids), round_s=time.time() - t,
                          rss_mb=round(proc.memory_info().rss / 2**20, 1), **summary.round_done(r, len(ids)))
            resume.trained(m)
            if not math.isfinite(rec["loss"]):
                summary.update(status="diverged", error=f"non-finite training loss ({rec['loss']}) at round {r}")
                break
            if r % cfg.eval_every == 0:
                evaluate(state, r, "val")
            resume.checkpoint(r, state, log, summary)  # the last one before the end-only rows
        if summary["status"] != "diverged":
            if cfg.rounds % cfg.eval_every:  # the last round's val row, unless it had one
                evaluate(state, cfg.rounds, "val")
            evaluate(state, cfg.rounds, "test")
            save_global_weights(os.path.join(run_dir, "global_weights.npz"), algo.global_weights(state))
            summary["status"] = "completed"
    except BaseException as e:
        summary["error"] = f"{type(e).__name__}: {e}"
        raise
    finally:
        dp = report.summary(summary["round_reached"], resume.clips, algo.dp_clip(state)) if report else None
        summary["participation"] = sampler.participation()
        if algo.client_store is not None:  # what keeping client state costs
            summary["client_store"] = {"clients": len(algo.client_store), "bytes": algo.client_store.nbytes}
        summary.close(log, engine.stats(algo), dp)
        log.finish(summary)
    return summary


def _progress(cfg, start: int):
    """The rounds still to run, with a progress bar on stderr."""
    return tqdm(range(start, cfg.rounds + 1), desc=f"{cfg.task.name}/{cfg.algo.name}", file=sys.stderr,
                dynamic_ncols=True, mininterval=1.0, initial=start - 1, total=cfg.rounds)
