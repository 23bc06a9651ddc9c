"""Dataset split functions: which batches reconstruct, which train or evaluate.

Batch i of a client's n batches (the task's own batching, never split inside a
batch) goes to reconstruction or to the part after it by `mode`:

  disjoint    even batches reconstruct, odd ones after (TFF's default; = skip, p=2)
  skip        i mod p == 0 reconstructs, the rest after (the authors' `skip`)
  aggregated  i <= floor(n / p) reconstructs, i > floor(n / p) after (the authors'
              `aggregated`, Stack Overflow's default: the earliest floor(n/p)+1
              batches, one more than 1/p of them; n <= 2 with p = 2 leaves nothing after)
  reuse       every batch for both parts (the tutorial's `simple`; training only)

p is `proportion`. Epochs repeat a part; `*_steps_max` caps the steps across those
epochs. Zero post-reconstruction epochs or steps, which the authors' split function
accepts (an empty part), are refused: a round would train nothing (every client weighs 0)
and an evaluation would measure nothing. `recon_epochs_constant=false` (the authors' flag) makes the reconstruction
epochs min(round, recon_epochs), rounds counting from 1; evaluation passes round 0,
as the authors' evaluation does, so it reconstructs nothing. Evaluation must measure
on data the reconstruction never saw, so `reuse` is refused there.
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

MODES = ("disjoint", "skip", "aggregated", "reuse")
EVAL_ROUND = 0  # the round number the authors' evaluation passes to its split function


def _int(split, key: str, name: str, lo: int, allow_none: bool = False) -> None:
    v = split.get(name)
    if v is None and allow_none:
        return
    if not isinstance(v, int) or isinstance(v, bool) or v < lo:
        raise UserError(f"{key}.{name}={v!r} must be " + (
            f"null (no cap) or an integer >= {lo}" if allow_none else f"an integer >= {lo}"))


def check(split, key: str, evaluation: bool) -> None:
    if split.mode not in MODES:
        raise UserError(f"{key}.mode={split.mode!r} is unknown; use one of {', '.join(MODES)}")
    if evaluation and split.mode == "reuse":
        raise UserError(
            f"{key}.mode={split.mode!r}: evaluation must reconstruct and measure on disjoint halves "
            f"of each user's data; use split/eval=disjoint (or {key}.mode=disjoint)")
    for name in ("post_recon_epochs", "post_recon_steps_max"):
        v = split.get(name)
        if v == 0 and not isinstance(v, bool):  # the authors' code accepts 0: an empty part after it
            raise UserError(f"{key}.{name}=0 leaves nothing after reconstruction: every client would "
                            "weigh 0 in training and evaluation would measure nothing; use an integer >= 1")
    for name in ("recon_epochs", "post_recon_epochs"):
        _int(split, key, name, 1)
    for name in ("recon_steps_max", "post_recon_steps_max"):
        _int(split, key, name, 1, allow_none=True)
    _int(split, key, "proportion", 2 if split.mode in ("skip", "aggregated") else 1, allow_none=True)
    if not isinstance(split.get("recon_epochs_constant", True), bool):
        raise UserError(f"{key}.recon_epochs_constant={split.recon_epochs_constant!r} must be true or false")


def proportion(split) -> int:
    return int(split.get("proportion") or 2)


def recon_epochs(split, round_num: int) -> int:
    """Reconstruction epochs in training round `round_num` (from 1; evaluation: EVAL_ROUND)."""
    if split.get("recon_epochs_constant", True):
        return int(split.recon_epochs)
    return min(int(round_num), int(split.recon_epochs))


def batch_parts(n: int, mode: str, p: int) -> tuple[list[int], list[int]]:
    """(reconstruction batches, batches after it) of a client with n batches."""
    if mode == "reuse":
        return list(range(n)), list(range(n))
    if mode == "aggregated":
        c = n // p
        return list(range(min(c + 1, n))), list(range(c + 1, n))
    p = 2 if mode == "disjoint" else p
    return [i for i in range(n) if i % p == 0], [i for i in range(n) if i % p]


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
