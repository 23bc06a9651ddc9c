"""Hydra application: compose the config, run one job, honour the run contract."""
from __future__ import annotations

import logging
import os
import sys
import time

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fedrecon_bench import rundir, sweep
from fedrecon_bench.cli_args import CONF_DIR
from fedrecon_bench.errors import UserError


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    run_dir = os.path.abspath(HydraConfig.get().runtime.output_dir)
    t0, in_sweep = time.time(), sweep.is_multirun()  # a sweep records failures and goes on
    from fedrecon_bench import loop, tuned  # heavy imports (TF, TFF) only once the config is sound

    try:
        tuned.apply(cfg, tuned.override_keys(HydraConfig.get().overrides.task))  # a preset's per-setting picks
        summary = loop.run(cfg, run_dir)
    except UserError as e:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        refused = isinstance(e, rundir.Refused)  # another run's dir: it stays exactly as it is
        if in_sweep:
            print(f"error: {e}" + ("" if refused else f" (job {run_dir})"), file=sys.stderr)
            if not refused:
                sweep.record_failure(cfg, run_dir, f"UserError: {e}", t0)
            return
        print(f"error: {e}", file=sys.stderr)
        if not refused:
            rundir.remove_if_unused(run_dir)
        sys.exit(2)
    except Exception as e:
        if not in_sweep:
            raise
        logging.getLogger(__name__).error("job failed: %s", run_dir, exc_info=True)
        print(f"error: job {run_dir} failed: {type(e).__name__}: {e}", file=sys.stderr)
        sweep.record_failure(cfg, run_dir, f"{type(e).__name__}: {e}", t0)
        return
    if summary["status"] != "completed":
        print(f"error: run {summary['status']}: {summary.get('error', '')} (see {run_dir})",
              file=sys.stderr)
        if in_sweep:
            return
        sys.exit(3)
    if os.environ.get("FEDRECON_BENCH_DEBUG_MODULES") == "1":  # what the run imported (tests)
        top = sorted({m.split(".")[0] for m in sys.modules})
        print(f"loaded modules: {' '.join(top)}", file=sys.stderr, flush=True)
    print(f"run_dir: {run_dir}", flush=True)
