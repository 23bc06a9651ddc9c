"""Continuing a run from its run dir's newest checkpoint, and writing checkpoints (checkpoint.py
holds the file format): the server state, the client sampler, the metrics rows written so
far, the wandb id, elapsed time and traffic, and the client store of an algorithm that
keeps client state (snapshotted first, so a checkpoint never points ahead of its store)."""
from __future__ import annotations

import os
import sys

from fedrecon_bench import checkpoint


class Resume:
    def __init__(self, cfg, run_dir: str, algo, sampler):
        self.cfg, self.run_dir, self.algo, self.sampler = cfg, run_dir, algo, sampler
        self.meta = None
        self.clips: list[float] = []  # each round's DP clip (summary.json's mean)

    def restore(self, state):
        """The state to start from: the newest checkpoint's (restoring the sampler, the store
        and metrics.jsonl's rows up to it), or `state` itself when there is none."""
        metrics_path = os.path.join(self.run_dir, "metrics.jsonl")
        restored = checkpoint.load_latest(self.run_dir, state)
        if restored is None:
            if os.path.exists(metrics_path):
                os.remove(metrics_path)  # a crash before the first checkpoint: start afresh
            return state
        state, self.meta = restored
        self.sampler.state = self.meta["rng"]
        self.clips = self.meta.get("dp_clips", [])
        checkpoint.truncate_lines(metrics_path, self.meta["metrics_lines"])
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
        """After round r and its evaluation: a checkpoint every checkpoint_every rounds (not
        after the last: the run then ends)."""
        every = self.cfg.checkpoint_every
        if not every or r % every or r >= self.cfg.rounds:
            return
        if self.algo.client_store is not None:
            self.algo.client_store.snapshot(checkpoint.store_dir(self.run_dir, r))
        checkpoint.save(self.run_dir, r, state, {
            "rng": self.sampler.state, "metrics_lines": log.lines, "last": log.last, "wandb_id": log.wandb_id,
            "comm": summary["comm"], "wall_s": summary.wall_s(), "dp_clips": self.clips})
