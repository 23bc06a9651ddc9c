"""Client weighting (`algo.client_weighting`): how much each client's update counts in
the server's weighted mean, the same on both engines.

  examples  the examples the client trained on after reconstruction (TFF's
            NUM_EXAMPLES, the authors' MovieLens weight; the default)
  uniform   1 per client (the authors' weight under differential privacy)
  tokens    the non-pad target tokens of the batches that updated the client's
            metrics (the authors' Stack Overflow weight, their `num_tokens` metric;
            with algo.evaluate_reconstruction=true the reconstruction batches count too)

A client whose update is not finite weighs 0 whatever the kind. Each algorithm declares
the kinds it can aggregate with (its SPEC.weightings); each engine computes them
(engines/tff/weighting.py, engines/fast/weighting.py).
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

KINDS = ("examples", "uniform", "tokens")


def kind(cfg) -> str:
    """algo.client_weighting (its default follows dp: uniform under DP, examples without)."""
    k = cfg.algo.get("client_weighting", "examples")
    if k not in KINDS:
        raise UserError(f"algo.client_weighting={k!r} is unknown; use one of {', '.join(KINDS)}")
    return k


def check(cfg, spec, metric_names) -> None:
    """The weighting `spec` (the run's algorithm) aggregates with, and the task can count."""
    from fedrecon_bench import algorithms

    k = kind(cfg)
    if k not in spec.weightings:
        able = [s.name for s in algorithms.specs().values() if k in s.weightings]
        raise UserError(f"algo.client_weighting={k}: +algo={spec.name} cannot weight clients that way; "
                        f"use algo.client_weighting={spec.weightings[0]} or +algo={'/'.join(able)}")
    if k == "tokens" and "num_tokens" not in metric_names:
        raise UserError(f"algo.client_weighting=tokens: task {cfg.task.name!r} has no num_tokens metric; "
                        "use examples or uniform (tokens is for +task=nwp)")
