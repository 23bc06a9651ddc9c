"""Client data on engine=tff: tf.data datasets built on demand from the clients' examples,
read through a byte-bounded cache (engines/fast/data.py is the JAX twin)."""
from __future__ import annotations

from fedrecon_bench.cache import ByteLRU


class Datasets:
    """A population as TFF consumes it; answers what engines/fast/data.Population does."""

    def __init__(self, task, clients, cache_bytes: int):
        self.task, self.clients, self.cache = task, clients, ByteLRU(cache_bytes)
        self.ids = clients.ids

    def __len__(self) -> int:
        return len(self.clients)

    def __getitem__(self, i: int):
        return self.task.client_dataset(self.cache.get(int(i), lambda: self.clients.read(int(i))))

    def select(self, idx):
        return [self[int(i)] for i in idx]

    def all(self):
        return self.select(range(len(self.clients)))

    def prefetch(self, idx) -> None:
        pass  # TFF builds its datasets lazily; reading ahead would not overlap with its rounds

    def evaluation(self, idx, ids=None, recon_from=None):
        """(the evaluated clients' datasets, seen users' training datasets or None);
        recon_from: (training population, each evaluated client's training index)."""
        return self.select(idx), (None if recon_from is None else recon_from[0].select(recon_from[1]))
