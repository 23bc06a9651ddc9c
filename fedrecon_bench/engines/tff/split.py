"""Dataset split on engine=tff: a TFF `ReconstructionDatasetSplitFn` over tf.data (the
same split as engines/fast/split.py's schedules; modes in fedrecon_bench/splits.py)."""
from __future__ import annotations

from fedrecon_bench.errors import UserError
from fedrecon_bench.splits import EVAL_ROUND, check, proportion, recon_epochs


def build(split, key: str, evaluation: bool = False, split_dataset: bool | None = None):
    """A TFF `ReconstructionDatasetSplitFn` (dataset -> (recon, post)) for this config.
    split_dataset=False uses the whole dataset for both parts whatever the mode (seen
    users reconstruct on all of their training data). TFF gives the function no round
    number, so a round-dependent training split is refused (engine=fast builds it)."""
    import tensorflow as tf

    check(split, key, evaluation)
    if not evaluation and not split.get("recon_epochs_constant", True):
        raise UserError(f"{key}.recon_epochs_constant=false needs the round number, which TFF's "
                        "split function does not get; use engine=fast")
    mode = split.mode if split_dataset is not False else "reuse"
    p = 2 if mode == "disjoint" else proportion(split)  # a Python int: TFF traces split_fn in its own graph
    epochs = recon_epochs(split, EVAL_ROUND)

    def part(ds, keep):
        return ds.enumerate().filter(keep).map(lambda _, x: x)

    def split_fn(ds):
        if mode == "reuse":
            recon, post = ds, ds
        elif mode == "aggregated":
            c = ds.reduce(tf.constant(0, tf.int64), lambda k, _: k + 1) // p  # floor(n / p)
            recon, post = part(ds, lambda i, _: tf.less_equal(i, c)), part(ds, lambda i, _: tf.greater(i, c))
        else:
            # tf.equal, not ==: TFF traces in a graph where == on tensors compares identity
            recon = part(ds, lambda i, _: tf.equal(tf.math.floormod(i, p), 0))
            post = part(ds, lambda i, _: tf.greater(tf.math.floormod(i, p), 0))
        recon = recon.repeat(epochs)
        if split.recon_steps_max is not None:
            recon = recon.take(split.recon_steps_max)
        post = post.repeat(split.post_recon_epochs)
        if split.post_recon_steps_max is not None:
            post = post.take(split.post_recon_steps_max)
        return recon, post

    return split_fn
