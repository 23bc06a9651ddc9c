"""Evaluation rows: which val/test clients an evaluation measures, and one metrics row per
evaluation mode the algorithm reports (the first mode is the split's headline)."""
from __future__ import annotations

import time

import numpy as np

from fedrecon_bench.records import Records

DP_FLOATS = ("dp_clip", "dp_zeroing_norm")  # a private round's aggregator values (README)
COUNTS = ("num_examples", "num_batches", "store_clients", "store_bytes", "dp_zeroed")
OWN = "row_values"  # an algorithm's own row values, {name: int or float} under this key of its metrics


def clean(metrics: dict, names) -> dict:
    """A row's metrics: the task's metric names, the known extras and the algorithm's own
    row values (metrics[OWN], e.g. how many clients chose each model set), as plain numbers."""
    out = {k: float(metrics[k]) for k in (*names, *DP_FLOATS) if k in metrics}
    out.update({k: int(metrics[k]) for k in COUNTS if k in metrics})
    out.update({k: v if isinstance(v, int) else float(v) for k, v in metrics.get(OWN, {}).items()})
    return out


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


class Evaluation:
    """Evaluates the algorithm on val or test clients and logs its rows. Seen users
    (task.split_by=example) reconstruct or fine-tune on their own training data. With
    eval_per_client, every evaluated client's own metrics go to a Parquet file
    (records.py), and their spread goes next to the pooled metrics in each row."""

    def __init__(self, cfg, task, data, pops: dict, algo, log, report=None, run_dir: str | None = None):
        """pops: the engine's train/val/test populations; report: privacy.Report of a DP run;
        run_dir: where per-client records go (None: not kept)."""
        self.cfg, self.task, self.data, self.pops, self.algo = cfg, task, data, pops, algo
        self.log, self.report = log, report
        self.run_dir = run_dir if cfg.get("eval_per_client", False) else None
        self.seen = data.split_by == "example"
        self._fixed = {}  # all of val / test, built once

    def clients(self, split: str, r: int):
        """(the engine's evaluation clients, their ids, seen users' training data or None)."""
        population = getattr(self.data, split)
        idx = eval_sample(self.cfg, len(population), split, r, self.task.data_seed)
        if idx is None and split in self._fixed:
            return self._fixed[split]
        idx = np.arange(len(population)) if idx is None else idx
        ids = [population.ids[i] for i in idx]
        at = [self.data.train.index_of(c) for c in ids] if self.seen else None
        clients, recon_from = self.pops[split].evaluation(idx, ids, (self.pops["train"], at) if self.seen else None)
        out = (clients, ids, recon_from)
        if self.cfg.get("eval_clients", "all") == "all":
            self._fixed[split] = out
        return out

    def __call__(self, state, r: int, split: str) -> None:
        """One row per evaluation mode, the headline mode last (so it is the split's final row)."""
        t, names = time.time(), self.task.metric_names
        clients, ids, recon_from = self.clients(split, r)
        modes = list(self.algo.eval_modes(self.seen))
        records = Records(self.run_dir, split, r, names, modes[0]) if self.run_dir else None
        try:
            res = self.algo.evaluate(state, clients, ids, seen=self.seen, recon_from=recon_from, records=records)
        except BaseException:
            if records is not None:
                records.abort()
            raise
        if records is not None:
            records.close()
        eps = self.report.row(r) if self.report else {}  # ε after r rounds, at δ
        spread = (lambda mode: records.stats(mode)) if records is not None else (lambda mode: {})
        if modes == [""]:
            self.log.row(r, split, {**clean(res[""], names), **spread("")}, clients=len(ids),
                         eval_s=time.time() - t, **eps)
            return
        for mode in reversed(modes):
            key = split if mode == modes[0] else f"{split}_{mode}"
            self.log.row(r, split, {**clean(res[mode], names), **spread(mode)}, clients=len(ids),
                         eval_s=time.time() - t, eval_mode=mode, last_key=key, **eps)
