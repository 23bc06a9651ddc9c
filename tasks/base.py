"""The small interface the training loop uses for every task.

A task turns raw files into per-client example arrays (data), builds a Keras
model and names which of its layers are global and which are local (model),
and supplies the loss and metrics (metrics). Algorithms combine these pieces
into TFF computations, so adding a task never touches an algorithm.
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from fedrecon_bench.schema import positive_int


class Clients:
    """The clients of one population (train, val or test), as the loop and the engines
    see them: `ids`, `sizes` (each client's number of examples, known without reading
    them) and `read(i)`, client i's examples: a dict of equal-length numpy arrays,
    already shuffled (seeded) and capped. Batching happens in the engines."""

    ids: list
    sizes: np.ndarray

    def read(self, i: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def __len__(self) -> int:
        return len(self.ids)

    def index_of(self, client_id) -> int | None:
        if not hasattr(self, "_index"):
            self._index = {c: i for i, c in enumerate(self.ids)}
        return self._index.get(client_id)

    @property
    def num_examples(self) -> int:
        return int(np.sum(self.sizes))


@dataclasses.dataclass
class ClientSet(Clients):
    """A population held in memory: `examples[i]` is client i's examples."""

    ids: list
    examples: list[dict[str, np.ndarray]]

    def __post_init__(self):
        self.sizes = np.array([len(next(iter(e.values()))) for e in self.examples], np.int64)

    def read(self, i: int) -> dict[str, np.ndarray]:
        return self.examples[i]


class LazyClients(Clients):
    """A population read on demand (a large database): ids and sizes up front, then
    `reader(client_id)` reads one client's examples. `reads` counts the reads (tests)."""

    lazy = True

    def __init__(self, ids: list, sizes, reader: Callable[[object], dict]):
        self.ids, self.sizes, self._reader = list(ids), np.asarray(sizes, np.int64), reader
        self.reads = 0

    def read(self, i: int) -> dict[str, np.ndarray]:
        self.reads += 1
        return self._reader(self.ids[i])


@dataclasses.dataclass
class FederatedData:
    """Three client populations.

    `task.split_by=user` (default): val/test clients are users never seen in
    training. `task.split_by=example`: every user's examples are split 80/10/10
    (by time where the data has it, else a seeded shuffle), so val/test clients
    are *seen* users; their ids are the same ids as in `train`, and an algorithm
    may look up the user's training examples by id (`train.index_of`).
    """

    train: Clients
    val: Clients
    test: Clients
    info: dict  # task-specific facts the model needs (e.g. num_items)
    split_by: str = "user"


@dataclasses.dataclass
class KerasParts:
    """A Keras model plus the partition of its layers into global and local."""

    model: "object"  # tf.keras.Model
    global_layers: Sequence
    local_layers: Sequence
    input_spec: object


class Task:
    """Base class; see tasks/movielens/ for a complete example."""

    name: str = ""
    # The task's config keys (fedrecon_bench/schema.py), checked before any data is read.
    fields: tuple = (positive_int("task.max_examples_per_user", none="no cap"),
                     positive_int("task.max_users", none="no cap"), positive_int("task.embedding_dim"))

    def __init__(self, cfg, data_dir: str, seed: int, split_seed: int | None = None):
        self.cfg = cfg
        self.data_dir = data_dir
        self.seed = seed  # initial weights (and dropout)
        # User split and per-user shuffles: `split_seed` when given (the authors fix 42),
        # so the spread over run seeds excludes the split's.
        self.data_seed = seed if split_seed is None else split_seed
        self._initial = {}

    def initial_weights(self, info: dict) -> tuple[dict, dict]:
        """(global, local) initial values: the JAX model's `init(seed)`, the one definition
        both engines start from (engine=tff builds its Keras model with them)."""
        key = repr(sorted((k, v) for k, v in info.items() if isinstance(v, (int, float, str))))
        if key not in self._initial:
            self._initial[key] = self.fast_model(info).init(self.seed)
        return self._initial[key]

    # --- data -------------------------------------------------------------
    def load(self) -> FederatedData:
        raise NotImplementedError

    def client_dataset(self, examples: dict[str, np.ndarray]):
        """A batched tf.data.Dataset in the model's input_spec structure."""
        raise NotImplementedError

    # --- model ------------------------------------------------------------
    def fast_model(self, info: dict):
        """The model in JAX (tasks/model.py), with its initial weights."""
        raise NotImplementedError

    def keras_parts(self, info: dict) -> KerasParts:
        """The same model in Keras for engine=tff, built from `initial_weights(info)`."""
        raise NotImplementedError

    # --- loss and metrics ---------------------------------------------------
    def loss_fn(self) -> Callable:
        raise NotImplementedError

    def metrics_fn(self) -> Callable[[], list]:
        raise NotImplementedError

    # Metrics reported from the aggregated keras metrics, in display order.
    metric_names: tuple[str, ...] = ("loss",)
    # The metric the progress bar and tables lead with.
    headline_metric: str = "loss"
