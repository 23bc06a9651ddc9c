"""Dataset split on engine=fast: which batch each SGD step reads (engines/tff/split.py is
the same split as a tf.data function for engine=tff).

A schedule says which batch each SGD step reads, per client, and how many steps the
client has: the same batches, in the same order, as the TFF split function: one part of
the batches by the split's mode (even/odd, skip, aggregated; fedrecon_bench/splits.py)
or all of them, repeated for some epochs, then capped at a number of steps.
"""
from __future__ import annotations

import dataclasses

import jax
import numpy as np

from fedrecon_bench import splits


@jax.tree_util.register_pytree_node_class
@dataclasses.dataclass
class Schedule:
    """Clients' steps: idx [..., S] the batch each step reads, count [...] each client's
    number of steps. `once` (static): no step reads a sparse-table row that another step
    of the same client reads (one epoch, and a client's ids are distinct), so a lockstep
    group can read all rows up front and write them back at the end (fast/client.py)."""
    idx: object
    count: object
    once: bool = False

    def tree_flatten(self):
        return (self.idx, self.count), self.once

    @classmethod
    def tree_unflatten(cls, once, children):
        return cls(*children, once)


def schedule(num_batches: np.ndarray, part, epochs: int, steps_max) -> tuple[np.ndarray, np.ndarray]:
    """Per client, the batch index of every step (padded to the longest) and its number of steps.

    part: "all", "even" / "odd" (the disjoint split's halves), or (mode, p, side) with
    side 0 = the reconstruction part of splits.batch_parts and 1 = the part after it;
    the part's batches are repeated `epochs` times, then cut at `steps_max` steps
    (None = no cap)."""
    if isinstance(part, str):
        part = ("reuse", 1, 0) if part == "all" else ("disjoint", 2, int(part == "odd"))
    mode, p, side = part
    lists = []
    for nb in num_batches:
        seq = splits.batch_parts(int(nb), mode, p)[side] * epochs
        lists.append(seq[:steps_max] if steps_max is not None else seq)
    S = max(1, max((len(s) for s in lists), default=1))
    idx = np.zeros((len(lists), S), np.int32)
    count = np.array([len(s) for s in lists], np.int32)
    for c, s in enumerate(lists):
        idx[c, :len(s)] = s
    return idx, count


def split_parts(split, round_num: int = splits.EVAL_ROUND):
    """(reconstruction part, after-reconstruction part) schedules' arguments of a split
    config (conf/split/*) in training round `round_num` (evaluation: splits.EVAL_ROUND)."""
    mode, p = split.mode, (2 if split.mode == "disjoint" else splits.proportion(split))
    return (((mode, p, 0), splits.recon_epochs(split, round_num), split.recon_steps_max),
            ((mode, p, 1), split.post_recon_epochs, split.post_recon_steps_max))
