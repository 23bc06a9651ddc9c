"""Client weighting on engine=fast: a client's weight in the mean, computed in the client
(kinds in fedrecon_bench/weighting.py; engines/tff/weighting.py is the TFF twin)."""
from __future__ import annotations

import jax.numpy as jnp


def weight(k: str, examples, tally):
    """From the client's post-reconstruction example count and its metric tally (client.py)."""
    if k == "tokens":
        return tally["stats"]["num_tokens"]
    return jnp.float32(1.0) if k == "uniform" else examples
