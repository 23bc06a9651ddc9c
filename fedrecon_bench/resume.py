"""Continuing a run from the checkpoint rundir.py picked, and writing checkpoints (checkpoint.py
holds the file format): the server state, the client sampler, the metrics rows written so
far, the wandb id, elapsed time and traffic, the config and population (rundir.py compares
them on the next launch), and the client store of an algorithm that keeps client state
(snapshotted first, so a checkpoint never points ahead of its store)."""
from __future__ import annotations

import sys

from fedrecon_bench import checkpoint


class Resume:
    def __init__(self, cfg, run_dir: str, algo, sampler, plan):
        """plan: rundir.prepare's decision (the checkpoint to continue from, if any)."""
        self.cfg, self.run_dir, self.algo, self.sampler, self.plan = cfg, run_dir, algo, sampler, plan
        self.meta = None
        self.clips: list[float] = []  # each round's DP clip (summary.json's mean)

    def restore(self, state):
        """The state to start from: the picked checkpoint's (restoring the sampler and the
        store; rundir.begin already cut metrics.jsonl to its rows), or `state` itself."""
        restored = self.plan.restore(state)
        if restored is None:
            return state
        state, self.meta = restored
        self.sampler.state = self.meta["rng"]
        if "visits" in self.meta:  # checkpoints from before visits were counted: from 0
            self.sampler.visits[:] = self.meta["visits"]
        self.clips = self.meta.get("dp_clips", [])
        if self.algo.client_store is not None:
            self.algo.client_store.restore(checkpoint.store_dir(self.run_dir, self.meta["round"]))
        print(f"note: resuming {self.run_dir} after round {self.meta['round']}", file=sys.stderr)
        return state

    @property
    def start(self) -> int:
        """The first round to run."""
        return 1 if self.meta is None else self.meta["round"] + 1

    def trained(self, metrics: dict) -> None:
        """After a round's training: its DP clip."""
        if "dp_clip" in metrics:
            self.clips.append(float(metrics["dp_clip"]))

    def checkpoint(self, r: int, state, log, summary) -> None:
        """After round r and its evaluation: a checkpoint every checkpoint_every rounds, and
        after the last round before its end-only rows, so a longer run continues from it."""
        every = self.cfg.checkpoint_every
        if not every or (r % every and r != self.cfg.rounds):
            return
        store = self.algo.client_store
        if store is not None:
            store.snapshot(checkpoint.store_dir(self.run_dir, r))
        checkpoint.save(self.run_dir, r, state, {
            **self.plan.meta, "store": store is not None, "rng": self.sampler.state,
            "visits": self.sampler.visits.tolist(), "metrics_lines": log.lines,
            "last": log.last, "wandb_id": log.wandb_id, "comm": summary["comm"], "wall_s": summary.wall_s(),
            "dp_clips": self.clips})
