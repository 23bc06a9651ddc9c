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

from fedrecon_bench import schema
from fedrecon_bench.errors import UserError

MODES = ("disjoint", "skip", "aggregated", "reuse")
EVAL_ROUND = 0  # the round number the authors' evaluation passes to its split function


def fields(split, key: str) -> tuple:
    """The schema of one split config (conf/split/*) at `key` (split.train or split.eval)."""
    lo = 2 if split.get("mode") in ("skip", "aggregated") else 1
    return (schema.Field(f"{key}.mode", "choice", choices=MODES),
            schema.positive_int(f"{key}.recon_epochs"), schema.positive_int(f"{key}.post_recon_epochs"),
            schema.positive_int(f"{key}.recon_steps_max", none="no cap"),
            schema.positive_int(f"{key}.post_recon_steps_max", none="no cap"),
            schema.Field(f"{key}.proportion", "int", low=lo, none="2"),
            schema.Field(f"{key}.recon_epochs_constant", "bool", default=True))


def check(split, key: str, evaluation: bool) -> None:
    for name in ("post_recon_epochs", "post_recon_steps_max"):
        v = split.get(name)
        if v == 0 and not isinstance(v, bool):  # the authors' code accepts 0: an empty part after it
            raise UserError(f"{key}.{name}=0 leaves nothing after reconstruction: every client would "
                            "weigh 0 in training and evaluation would measure nothing; use an integer >= 1")
    schema.check({key.split(".")[0]: {key.split(".")[1]: split}}, fields(split, key))
    if evaluation and split.mode == "reuse":
        raise UserError(
            f"{key}.mode={split.mode!r}: evaluation must reconstruct and measure on disjoint halves "
            f"of each user's data; use split/eval=disjoint (or {key}.mode=disjoint)")


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
