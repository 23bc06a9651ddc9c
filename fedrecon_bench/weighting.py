"""Client weighting (`algo.client_weighting`): how much each client's update counts in
the server's weighted mean, the same on both engines.

  examples  the examples the client trained on after reconstruction (TFF's
            NUM_EXAMPLES, the authors' MovieLens weight; the default)
  uniform   1 per client (the authors' weight under differential privacy)
  tokens    the non-pad target tokens of the batches that updated the client's
            metrics (the authors' Stack Overflow weight, their `num_tokens` metric;
            with algo.evaluate_reconstruction=true the reconstruction batches count too)

A client whose update is not finite weighs 0 whatever the kind (fast/client.update).
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

KINDS = ("examples", "uniform", "tokens")
ALGOS = {"uniform": ("fedrecon", "fedavg", "stateful_fedavg"),  # the others weight by examples only
         "tokens": ("fedrecon", "fedavg")}


def kind(cfg) -> str:
    """algo.client_weighting (its default follows dp: uniform under DP, examples without)."""
    k = cfg.algo.get("client_weighting", "examples")
    if k not in KINDS:
        raise UserError(f"algo.client_weighting={k!r} is unknown; use one of {', '.join(KINDS)}")
    return k


def check(cfg, metric_names) -> None:
    k = kind(cfg)
    if k not in KINDS:
        raise UserError(f"algo.client_weighting={k!r} is unknown; use one of {', '.join(KINDS)}")
    if k != "examples" and cfg.algo.name not in ALGOS[k]:
        raise UserError(f"algo.client_weighting={k}: +algo={cfg.algo.name} cannot weight clients that way; "
                        f"use algo.client_weighting=examples or +algo={'/'.join(ALGOS[k])}")
    if k == "tokens" and "num_tokens" not in metric_names:
        raise UserError(f"algo.client_weighting=tokens: task {cfg.task.name!r} has no num_tokens metric; "
                        "use examples or uniform (tokens is for +task=nwp)")


def tff(k: str):
    """The `client_weighting` argument of TFF's build_fed_recon / build_weighted_fed_avg."""
    import tensorflow as tf
    import tensorflow_federated as tff

    if k == "tokens":  # the NumTokens metric's unfinalized value: [total]
        return lambda metrics: tf.cast(metrics["num_tokens"][0], tf.float32)
    return {"examples": tff.learning.ClientWeighting.NUM_EXAMPLES,
            "uniform": tff.learning.ClientWeighting.UNIFORM}[k]


def fast(k: str, examples, tally):
    """engine=fast: a client's weight from its post-reconstruction example count and its
    metric tally (fast/client.py)."""
    import jax.numpy as jnp

    if k == "tokens":
        return tally["stats"]["num_tokens"]
    return jnp.float32(1.0) if k == "uniform" else examples
