"""A least-recently-used cache bounded in bytes, for clients' data: a round reads its
sampled clients through it, so clients sampled again soon are not read again, and
memory stays bounded whatever the population size."""
from __future__ import annotations

import collections
import threading

import numpy as np


def nbytes(value) -> int:
    """Bytes held by the numpy arrays in a (nested) dict / list / tuple."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    return 0


class ByteLRU:
    def __init__(self, limit_bytes: int):
        self.limit = int(limit_bytes)
        self.bytes, self.peak, self.hits, self.misses = 0, 0, 0, 0
        self._items: collections.OrderedDict = collections.OrderedDict()
        self._lock = threading.Lock()  # the prefetch thread and the round share it

    def get(self, key, make):
        """The cached value for `key`, or make() (kept if it fits the limit)."""
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
        value = make()  # outside the lock: reading a client may be slow
        size = nbytes(value)
        with self._lock:
            self.misses += 1
            if key not in self._items and size <= self.limit:
                self._items[key] = (value, size)
                self.bytes += size
                while self.bytes > self.limit:
                    _, (_, old) = self._items.popitem(last=False)
                    self.bytes -= old
                self.peak = max(self.peak, self.bytes)
        return value

    def __len__(self) -> int:
        return len(self._items)
