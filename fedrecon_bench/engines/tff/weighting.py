"""Client weighting on engine=tff: the `client_weighting` argument of TFF's builders
(kinds in fedrecon_bench/weighting.py; engines/fast/weighting.py is the JAX twin)."""
from __future__ import annotations


def build(k: str):
    """TFF's ClientWeighting for `examples` / `uniform`, or a function of the client's metrics."""
    import tensorflow as tf
    import tensorflow_federated as tff

    if k == "tokens":  # the NumTokens metric's unfinalized value: [total]
        return lambda metrics: tf.cast(metrics["num_tokens"][0], tf.float32)
    return {"examples": tff.learning.ClientWeighting.NUM_EXAMPLES,
            "uniform": tff.learning.ClientWeighting.UNIFORM}[k]
