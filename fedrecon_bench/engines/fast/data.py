"""Client data for the fast engine: each round packs only its clients, plus step schedules.

A population is its client ids and sizes (known up front) and a reader. A round (or an
evaluation chunk) reads its clients through a cache bounded in bytes and packs them
into arrays [clients, batches, batch_size, ...] with a `mask` of real examples, padded
to the population's largest client while that stays small (one shape: one
compilation), else to bucketed shapes (powers of two), so jit compiles a bounded
number of times and memory does not grow with the population.
Padding costs memory only: no step reads a padding batch. The next round's clients can
be packed in a background thread (`prefetch`).

A selection's `schedule` says which batch each SGD step reads (split.py); a client's
loop runs exactly its own number of steps (client.py).
"""
from __future__ import annotations

import concurrent.futures
import functools

import numpy as np

from fedrecon_bench.cache import ByteLRU
from fedrecon_bench.engines.fast.split import Schedule, schedule

PAD_ROW = np.iinfo(np.int32).max  # row padding: gathers read 0, scatters drop it
LOCAL = ":local"  # suffix of a sparse field re-indexed into the client's own rows
CACHE_BYTES = 1 << 30
EVAL_CHUNK = 256  # evaluation clients packed at a time
# A dimension is padded to the population's largest when the packed array stays below this:
# one shape, one compilation (an unrolled LSTM compiles for about 10 s on CPU). Above it
# (uncapped long-tailed populations) it is bucketed to a power of two instead.
FULL_PAD_BYTES = 64 << 20


def bucket(n: int, cap: int | None = None) -> int:
    """The smallest power of two >= n, at most cap (the population's largest): jit sees a
    few distinct shapes (each new one compiles), and padding costs memory only."""
    b = 1 << max(0, int(n) - 1).bit_length()
    return min(b, cap) if cap else b


def padded(n: int, cap: int, clients: int, unit_bytes: int) -> int:
    """A dimension's size for `clients` clients needing n units of unit_bytes each: the
    population's largest (cap) while that stays under FULL_PAD_BYTES, else bucket(n, cap).
    A function of the selection and the population only, so a resumed run sees the same
    shapes; padding never adds steps (each client's loop runs its own count)."""
    return cap if clients * cap * unit_bytes <= FULL_PAD_BYTES else bucket(n, cap)


class Population:
    """One population for the fast engine. `select(idx)` is what a round or evaluation
    receives; `evaluation(...)` streams a whole population in chunks."""

    def __init__(self, model, clients, cache_bytes: int = CACHE_BYTES, lockstep: bool = True):
        """lockstep: clients may run in vmap groups, which gather every step of a schedule's
        width, so widths stay bucketed; one client at a time only reads its own steps."""
        self.model, self.clients, self.ids, self.lockstep = model, clients, clients.ids, lockstep
        self.num_examples = np.asarray(clients.sizes, np.int64)
        self.num_batches = -(-self.num_examples // model.batch_size)
        self.max_batches = max(1, int(self.num_batches.max(initial=0)))
        self.cache = ByteLRU(cache_bytes)
        self.sparse_fields = sorted(set(model.sparse.values()))
        self._pending: dict = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self.ids)

    def client(self, i: int) -> dict:
        """Client i's model inputs and, per sparse field, its distinct rows and its ids
        re-indexed into them (read and computed once while cached)."""
        def make():
            ex = dict(self.model.inputs(self.clients.read(int(i))))
            rows, unique = {}, True
            for f in self.sparse_fields:
                u = np.unique(ex[f])
                rows[f] = u.astype(np.int32)
                ex[f + LOCAL] = np.searchsorted(u, ex[f]).astype(np.int32)
                unique &= ex[f].ndim == 1 and len(u) == len(ex[f])
            return {"inputs": ex, "rows": rows, "unique": np.bool_(unique)}
        return self.cache.get(int(i), make)

    def select(self, idx) -> "Selection":
        key = tuple(int(i) for i in idx)
        pending = self._pending.pop(key, None)
        return pending.result() if pending is not None else Selection(self, np.asarray(idx, np.int64))

    def prefetch(self, idx) -> None:
        """Reads and packs these clients in a background thread; the next `select` of them
        takes the result. Only for populations read from disk: packing clients held in
        memory costs about a millisecond a round, less than a thread's overhead."""
        if not getattr(self.clients, "lazy", False):
            return
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="prefetch")
        sel = Selection(self, np.asarray(idx, np.int64))
        self._pending = {tuple(int(i) for i in idx): self._pool.submit(lambda: (sel.data, sel)[1])}

    def all(self) -> "Selection":
        return self.select(np.arange(len(self)))

    def evaluation(self, idx, ids, recon_from=None, size: int = EVAL_CHUNK):
        """(an EvalSet streaming the clients in chunks, None: each chunk carries its seen
        users' training data)."""
        return EvalSet(self, idx, ids, recon_from, size), None

    @functools.lru_cache(maxsize=64)
    def longest(self, part: str, epochs: int, steps_max) -> int:
        """The longest schedule any client of this population can have (over its distinct
        batch counts: a split's part need not grow with the client)."""
        return int(schedule(np.unique(self.num_batches), part, epochs, steps_max)[1].max(initial=1))


class EvalSet:
    """Evaluation clients streamed in chunks (memory bounded by a chunk): yields
    (selection, their ids, the selection of their own training data or None).
    idx: the evaluated clients' indices in the population (all of them, or a sample);
    recon_from: (training population, the training index of each evaluated client)."""

    def __init__(self, pop: Population, idx, ids, recon_from=None, size: int = EVAL_CHUNK):
        self.pop, self.idx, self.ids, self.recon_from, self.size = pop, np.asarray(idx), list(ids), recon_from, size

    def __len__(self) -> int:
        return len(self.idx)

    def __iter__(self):
        for a in range(0, len(self.idx), self.size):
            b = min(a + self.size, len(self.idx))
            sel = self.pop.select(self.idx[a:b])
            rsel = None
            if self.recon_from is not None:
                train, at = self.recon_from
                rsel = train.select(np.asarray(at[a:b]))
            yield sel, self.ids[a:b], rsel


class Selection:
    """Some clients of a population, packed: their arrays, rows and schedules, as numpy."""

    def __init__(self, pop: Population, idx: np.ndarray):
        self.pop, self.idx = pop, idx

    def __len__(self) -> int:
        return len(self.idx)

    @functools.cached_property
    def _packed(self):
        pop, bs = self.pop, self.pop.model.batch_size
        clients = [pop.client(i) for i in self.idx]
        per_example = sum(v.dtype.itemsize * int(np.prod(v.shape[1:], dtype=np.int64)) + 4  # + mask
                          for v in (clients[0]["inputs"].values() if clients else []))
        B = padded(pop.num_batches[self.idx].max(initial=1), pop.max_batches, len(clients), bs * per_example)
        n = pop.num_examples[self.idx]
        data = {name: _pad([cl["inputs"][name] for cl in clients], B * bs).reshape(
            (len(clients), B, bs) + clients[0]["inputs"][name].shape[1:])
            for name in (clients[0]["inputs"] if clients else {})}
        data["mask"] = (np.arange(B * bs)[None, :] < n[:, None]).reshape(len(clients), B, bs).astype(np.float32)
        rows = {}
        for f in pop.sparse_fields:
            R = bucket(max((len(cl["rows"][f]) for cl in clients), default=1),  # bucketed: a lockstep
                       int(pop.num_examples.max(initial=1)))  # group reads every row (rows <= examples)
            rows[f] = _pad([cl["rows"][f] for cl in clients], R, PAD_ROW)
        return data, rows, all(bool(cl["unique"]) for cl in clients)

    @property
    def data(self) -> dict:
        return self._packed[0]

    @property
    def rows(self) -> dict:
        return self._packed[1]

    def schedule(self, part: str, epochs: int = 1, steps_max=None) -> Schedule:
        idx, count = schedule(self.pop.num_batches[self.idx], part, epochs, steps_max)
        longest = self.pop.longest(part, epochs, steps_max)
        width = (bucket(idx.shape[1], longest) if self.pop.lockstep
                 else padded(idx.shape[1], longest, len(self.idx), 4))
        idx = np.pad(idx, ((0, 0), (0, max(0, width - idx.shape[1]))))
        return Schedule(idx, count, once=epochs == 1 and self._packed[2])


def _pad(arrays: list, width: int, fill=0) -> np.ndarray:
    """[len(arrays), width, ...]: each array's leading entries, then `fill` (one scatter)."""
    lens = np.array([len(a) for a in arrays], np.int64)
    first = arrays[0]
    out = np.full((len(arrays), width) + first.shape[1:], fill, first.dtype)
    if lens.sum():
        row = np.repeat(np.arange(len(arrays)), lens)
        col = np.arange(lens.sum()) - np.repeat(np.cumsum(lens) - lens, lens)
        out[row, col] = np.concatenate(arrays)
    return out
