"""TFF's federated EMNIST (`emnist_all.sqlite`, 3,400 writers), read lazily.

Writer ids and sizes come from the database's `client_metadata` table; a writer's
images are read when a round (or an evaluation chunk) needs them, by TFF's own query,
their tf.Example protos decoded without TensorFlow (tasks/tff_sqlite.py). Only a missing
database needs TFF (`tff.simulation.datasets.emnist.load_data` downloads it into the cache
dir). The populations are the ones data.py's `build_populations` makes from LEAF (same
splits, shuffles and caps), without reading every writer first.
"""
from __future__ import annotations

import os

import numpy as np

from fedrecon_bench.errors import UserError
from tasks import tff_sqlite
from tasks.base import LazyClients
from tasks.emnist.data import NUM_PIXELS, compact_pixels
from tasks.movielens.data import split_users


LEAF = "use the LEAF JSON under <data_dir>/femnist-leaf with task.source=leaf"


def _open(only_digits: bool, cache_dir: str) -> tff_sqlite.SqlClientData:
    db = os.path.join(cache_dir, "emnist_all.sqlite")
    if not os.path.isfile(db):  # TFF downloads it
        tff_sqlite.download_or_refuse("task.source=tff", db, LEAF)
        call = f"tff.simulation.datasets.emnist.load_data(only_digits={only_digits}, cache_dir={cache_dir!r})"
        try:
            import tensorflow_federated as tff

            tff.simulation.datasets.emnist.load_data(only_digits=only_digits, cache_dir=cache_dir)
        except Exception as e:  # URLError offline, a corrupt download, a missing sqlite table...
            msg = " ".join(str(e).split())[:200]
            raise UserError(
                f"task.source=tff: {call} failed ({type(e).__name__}: {msg}); it downloads "
                f"TFF's federated EMNIST (internet needed once, or put emnist_all.sqlite in {cache_dir}); "
                f"or {LEAF}") from None
    return tff_sqlite.SqlClientData(db)


def populations(only_digits: bool, cache_dir: str, split_by: str, seed: int, cap: int | None):
    """(train, val, test) LazyClients, as build_populations would make them."""
    sql = _open(only_digits, cache_dir)
    db = sql.path
    prefix = "digits_only" if only_digits else "all"
    train_cd, test_cd = f"{prefix}_train", f"{prefix}_test"  # the two splits TFF's load_data opens
    n_train, n_test = sql.sizes(train_cd), sql.sizes(test_cd)
    writers = sorted(w for w, n in n_train.items() if n > 0)  # writers with train data
    if not writers:
        raise UserError(f"{db}: no writer has training examples; check the database")
    k_of = {w: k for k, w in enumerate(writers)}
    capped = lambda n: min(n, cap) if cap else n

    def images(cd, w):
        if w not in (n_train if cd == train_cd else n_test):
            return np.zeros((0, NUM_PIXELS), np.uint8), np.zeros((0,), np.uint8)
        rows = sql.examples(cd, w)
        pixels = np.stack([e["pixels"] for e in rows]).reshape(-1, NUM_PIXELS)
        return compact_pixels(pixels), np.array([e["label"][0] for e in rows]).astype(np.uint8)

    def shuffled(w, x, y, salt):  # as build_populations: one generator per writer
        perm = np.random.default_rng([seed, 1, salt, k_of[w]]).permutation(len(y))
        return x[perm], y[perm]

    def example(x, y):
        return {"x": x[:cap] if cap else x, "y": y[:cap] if cap else y}

    if split_by == "user":
        def whole(w):
            (x1, y1), (x2, y2) = images(train_cd, w), images(test_cd, w)
            return example(*shuffled(w, np.concatenate([x1, x2.astype(x1.dtype)]), np.concatenate([y1, y2]), 0))
        both = [capped(n_train[w] + n_test.get(w, 0)) for w in writers]
        parts = [np.sort(p) for p in split_users(len(writers), seed)]
        return tuple(LazyClients([writers[i] for i in p], [both[i] for i in p], whole) for p in parts)
    if split_by != "example":
        raise UserError(f"task.split_by={split_by!r} is unknown; use user (unseen writers) or example (seen writers)")

    def half(first: bool):
        def read(w):
            x, y = shuffled(w, *images(test_cd, w), 1)
            h = len(y) // 2
            return example(x[:h], y[:h]) if first else example(x[h:], y[h:])
        return read

    t = [n_test.get(w, 0) for w in writers]
    return (LazyClients(writers, [capped(n_train[w]) for w in writers],
                        lambda w: example(*shuffled(w, *images(train_cd, w), 0))),
            LazyClients(writers, [capped(m // 2) for m in t], half(True)),
            LazyClients(writers, [capped(m - m // 2) for m in t], half(False)))
