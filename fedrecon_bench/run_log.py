"""The run contract: metrics.jsonl rows, summary.json, and the wandb mirror.

Analysis and tests read only these files, so every number a run reports goes
through `RunLog.row` and `RunLog.finish`.
"""
from __future__ import annotations

import json
import os

from omegaconf import OmegaConf


def _plain(v):
    try:
        import numpy as np

        if isinstance(v, np.generic):
            return v.item()
        if isinstance(v, np.ndarray):
            return v.tolist()
    except ImportError:  # pragma: no cover
        pass
    return v


def write_json_atomic(path: str, obj) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")
    os.replace(tmp, path)


class RunLog:
    def __init__(self, run_dir: str, cfg, resumed: dict | None = None):
        """resumed: the meta of the checkpoint a run continues from (its wandb id and last rows)."""
        self.run_dir = run_dir
        self.cfg = cfg
        os.makedirs(run_dir, exist_ok=True)
        self.metrics_path = os.path.join(run_dir, "metrics.jsonl")
        self.lines = _count_lines(self.metrics_path)
        self._f = open(self.metrics_path, "a", buffering=1)  # line-buffered: one row, one line
        self.last: dict[str, dict] = dict(resumed["last"]) if resumed else {}
        resume_id = resumed.get("wandb_id") if resumed else None
        self.wandb = self._start_wandb(resume_id) if cfg.logger.name == "wandb" else None
        self.wandb_id = self.wandb.id if self.wandb is not None else None

    def _start_wandb(self, resume_id):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        c, lg = self.cfg, self.cfg.logger
        mode = os.environ.get("WANDB_MODE") or lg.mode  # the env var lets users opt in online
        tags = [c.task.name, c.algo.name, f"seed{c.seed}",
                f"split_by={c.task.get('split_by', 'user')}", f"engine={c.get('engine', 'fast')}",
                f"dp={(c.get('dp') or {}).get('name', 'none')}",
                *(lg.get("tags") or [])]
        return wandb.init(
            project=lg.project, entity=lg.get("entity"), mode=mode, dir=self.run_dir,
            group=lg.get("group") or f"{c.task.name}-{c.algo.name}",
            name=f"{c.task.name}-{c.algo.name}-seed{c.seed}", tags=tags,
            config=OmegaConf.to_container(c, resolve=True), reinit=True,
            id=resume_id, resume="allow" if resume_id else None)

    def config_update(self, values: dict) -> None:
        """Facts known only once the run starts (e.g. its device), in the wandb config."""
        if self.wandb is not None:
            self.wandb.config.update(values, allow_val_change=True)

    def row(self, round_: int, split: str, metrics: dict, last_key: str | None = None,
            **extra) -> dict:
        rec = {"round": int(round_), "split": split}
        rec.update({k: _plain(v) for k, v in metrics.items()})
        rec.update({k: _plain(v) for k, v in extra.items()})
        self._f.write(json.dumps(rec) + "\n")
        self.lines += 1
        self.last[last_key or split] = rec
        if self.wandb is not None:
            prefix = last_key or split
            self.wandb.log({f"{prefix}/{k}": v for k, v in rec.items()
                            if k not in ("round", "split") and isinstance(v, (int, float))},
                           step=int(round_))
        return rec

    def finish(self, summary: dict) -> dict:
        self._f.close()
        write_json_atomic(os.path.join(self.run_dir, "summary.json"), summary)
        if self.wandb is not None:
            flat = {f"final/{s}/{k}": v for s, m in summary.get("final", {}).items()
                    for k, v in m.items() if isinstance(v, (int, float))}
            flat.update({f"privacy/{k}": v for k, v in summary.get("privacy", {}).items()
                         if isinstance(v, (int, float))})
            self.wandb.summary.update({"status": summary["status"], "wall_s": summary["wall_s"],
                                       "global_params": summary.get("global_params"),
                                       "local_params": summary.get("local_params"), **flat})
            self.wandb.finish(exit_code=0 if summary["status"] == "completed" else 1)
            import wandb

            wandb.teardown()  # waits until the service has flushed the run file to disk
        return summary


def _count_lines(path: str) -> int:
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return sum(1 for _ in f)

