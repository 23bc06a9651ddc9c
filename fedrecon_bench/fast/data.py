"""Client data for the fast engine: packed once into padded arrays, plus step schedules.

A population's clients become arrays [clients, batches, batch_size, ...] with a
`mask` of real examples, so a round is one array gather instead of building
tf.data pipelines. Padding costs memory only: no step reads a padding batch. A
schedule says which batch each SGD step reads, per client, and how many steps the
client has: the same batches, in the same order, as the TFF split function
(fedrecon_bench/splits.py): one part of the batches by the split's mode (even/odd,
skip, aggregated) or all of them, repeated for some epochs, then capped at a number
of steps. A client's loop runs exactly its own number of steps (fast/client.py).
"""
from __future__ import annotations

import dataclasses
import functools

import jax
import numpy as np

from fedrecon_bench import splits

PAD_ROW = np.iinfo(np.int32).max  # row padding: gathers read 0, scatters drop it
LOCAL = ":local"  # suffix of a sparse field re-indexed into the client's own rows


class Population:
    """One ClientSet, packed. `select(idx)` is what a round or evaluation receives."""

    def __init__(self, model, clients):
        self.model, self.ids = model, list(clients.ids)
        bs = model.batch_size
        per_client = [model.inputs(ex) for ex in clients.examples]
        self.num_examples = np.array([len(next(iter(c.values()))) for c in per_client], np.int64)
        self.num_batches = -(-self.num_examples // bs)
        B = max(1, int(self.num_batches.max(initial=0)))
        C = len(per_client)
        self.fields = {}
        for name in (per_client[0] if per_client else {}):
            first = per_client[0][name]
            arr = np.zeros((C, B * bs) + first.shape[1:], first.dtype)
            for c, ex in enumerate(per_client):
                arr[c, :len(ex[name])] = ex[name]
            self.fields[name] = arr.reshape((C, B, bs) + first.shape[1:])
        mask = np.arange(B * bs)[None, :] < self.num_examples[:, None]
        self.fields["mask"] = mask.reshape(C, B, bs).astype(np.float32)
        # Sparse tables: each client's distinct rows, and its ids re-indexed into them.
        self.rows, self.unique_rows = {}, True
        for field in sorted(set(model.sparse.values())):
            uniq = [np.unique(ex[field]) for ex in per_client]
            R = max(1, max((len(u) for u in uniq), default=1))
            rows = np.full((C, R), PAD_ROW, np.int32)
            local = np.zeros_like(self.fields[field], dtype=np.int32)
            self.unique_rows &= all(ex[field].ndim == 1 and len(u) == len(ex[field])
                                    for u, ex in zip(uniq, per_client))
            for c, u in enumerate(uniq):
                rows[c, :len(u)] = u
                n = int(self.num_examples[c])
                flat = local[c].reshape(-1, *local.shape[3:])
                flat[:n] = np.searchsorted(u, per_client[c][field])
            self.rows[field] = rows
            self.fields[field + LOCAL] = local

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, idx):
        return Selection(self, np.asarray(idx, np.int64))

    def all(self):
        return self.select(np.arange(len(self)))

    @functools.lru_cache(maxsize=16)
    def _schedule(self, part, epochs: int, steps_max):
        return schedule(self.num_batches, part, epochs, steps_max)


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


class Selection:
    """Some clients of a population: their arrays, rows and schedules, as numpy."""

    def __init__(self, pop: Population, idx: np.ndarray):
        self.pop, self.idx = pop, idx

    def __len__(self) -> int:
        return len(self.idx)

    @functools.cached_property
    def data(self) -> dict:  # gathered once: an evaluation reads it for two schedules
        return {k: v[self.idx] for k, v in self.pop.fields.items()}

    @functools.cached_property
    def rows(self) -> dict:
        return {k: v[self.idx] for k, v in self.pop.rows.items()}

    def schedule(self, part="all", epochs: int = 1, steps_max=None) -> Schedule:
        idx, count = self.pop._schedule(part, epochs, steps_max)
        return Schedule(idx[self.idx], count[self.idx], once=epochs == 1 and self.pop.unique_rows)


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
