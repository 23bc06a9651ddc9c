"""Hydra application: compose the config, run one job, honour the run contract."""
from __future__ import annotations

import os
import shutil
import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedrecon_bench.cli_args import CONF_DIR
from fedrecon_bench.errors import UserError

_HYDRA_OWN = {".hydra", "app.log", "__main__.log"}


def _remove_if_only_hydra_files(run_dir: str) -> None:
    """A run refused before training leaves no half-made run dir behind."""
    if os.path.isdir(run_dir) and set(os.listdir(run_dir)) <= _HYDRA_OWN:
        shutil.rmtree(run_dir, ignore_errors=True)


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = os.path.abspath(HydraConfig.get().runtime.output_dir)
    from fedrecon_bench import loop  # heavy imports (TF, TFF) only once the config is sound

    try:
        summary = loop.run(cfg, run_dir)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        _remove_if_only_hydra_files(run_dir)
        sys.exit(2)
    if summary["status"] != "completed":
        print(f"error: run {summary['status']}: {summary.get('error', '')} (see {run_dir})",
              file=sys.stderr)
        sys.exit(3)
    print(f"run_dir: {run_dir}", flush=True)
