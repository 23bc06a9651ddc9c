"""Stack Overflow (TFF's SQLite database), read lazily.

Client ids and sizes come from the database's `client_metadata` table (no example is
read); a client's sentences are read when a round needs them, by TFF's own query, and
their tf.Example protos are decoded without TensorFlow (tasks/tff_sqlite.py). The word
counts come from TFF's extracted `datasets/stackoverflow.word_count` file when it is there
("word count" lines, most frequent first). Only a missing database or word-count file
needs TFF (`tff.simulation.datasets.stackoverflow.load_data` / `load_word_counts` download
them and check the archives' sha256).

Files, as TFF's loaders place them under the cache dir:
    <cache>/stackoverflow.sqlite
    <cache>/datasets/stackoverflow.word_count
"""
from __future__ import annotations

import collections
import os
import sqlite3
import time

from fedrecon_bench.errors import UserError
from tasks import tff_sqlite

DB_NAME = "stackoverflow.sqlite"
WORD_COUNT = os.path.join("datasets", "stackoverflow.word_count")
SPLITS = ("train", "heldout", "test")
_SYNTH = "generate a synthetic one with `python -m fedrecon_bench.synth stackoverflow --out <data_dir>`"


def _offline(cache_dir: str, e: Exception) -> UserError:
    msg = str(e).splitlines()[0] if str(e) else type(e).__name__
    return UserError(
        f"task.source=stackoverflow: could not download or open TFF's Stack Overflow data in "
        f"{cache_dir} ({type(e).__name__}: {msg}); it needs internet access once (several GB), "
        f"or {_SYNTH}, or use task.source=shakespeare")


def word_counts(cache_dir: str, vocab_size: int) -> collections.OrderedDict:
    """The first `vocab_size` entries of TFF's word counts (most frequent first)."""
    path = os.path.join(cache_dir, WORD_COUNT)
    if not os.path.isfile(path):
        tff_sqlite.download_or_refuse("task.source=stackoverflow", path, _SYNTH)
        import tensorflow_federated as tff

        try:
            return tff.simulation.datasets.stackoverflow.load_word_counts(
                cache_dir=cache_dir, vocab_size=vocab_size)
        except Exception as e:  # offline: URLError, OSError, ...
            raise _offline(cache_dir, e) from None
    counts = collections.OrderedDict()
    with open(path) as f:
        for lineno, line in enumerate(f, start=1):
            parts = line.split()
            if len(parts) != 2 or not parts[1].isdigit():
                raise UserError(f"{path}:{lineno}: expected 'word count', got {line.strip()!r}; "
                                "regenerate or re-download the word counts")
            counts[parts[0]] = int(parts[1])
            if len(counts) >= vocab_size:
                break
    return counts


def client_sizes(db_path: str, split: str) -> dict:
    """client id -> number of examples, from the `client_metadata` table."""
    try:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as con:
            rows = con.execute("SELECT client_id, num_examples FROM client_metadata WHERE split_name = ?",
                               (split,)).fetchall()
    except sqlite3.Error as e:
        raise UserError(f"{db_path}: not a readable Stack Overflow database ({e}); delete it to "
                        "download it again, or regenerate it") from None
    return dict(rows)


class Database:
    """One database (`open_s`: the time opening it took, a download included)."""

    def __init__(self, cache_dir: str):
        self.cache_dir, self.path = cache_dir, os.path.join(cache_dir, DB_NAME)
        t = time.perf_counter()
        if not os.path.isfile(self.path):
            tff_sqlite.download_or_refuse("task.source=stackoverflow", self.path, _SYNTH)
            import tensorflow_federated as tff

            try:  # downloads the database
                tff.simulation.datasets.stackoverflow.load_data(cache_dir=cache_dir)
            except Exception as e:
                raise _offline(cache_dir, e) from None
        self.db = tff_sqlite.SqlClientData(self.path)
        self.open_s = time.perf_counter() - t

    def sentences(self, split: str, client_id: str, cap: int | None) -> list[str]:
        """A client's first `cap` sentences, then stably sorted by creation date (the
        paper's `take(max_elements)` then `_sort_examples_by_date`)."""
        rows = [(date_key(e["creation_date"][0]), e["tokens"][0].decode("utf-8", "replace"))
                for e in self.db.examples(split, client_id, cap)]
        order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # sorted() is stable
        return [rows[i][1] for i in order]


def date_key(date: bytes | str) -> int:
    """'2009-06-15 13:45:30.1 UTC' -> 20090615134530 (the paper's integer date key)."""
    d = date.decode() if isinstance(date, bytes) else date
    return int(d[0:4] + d[5:7] + d[8:10] + d[11:13] + d[14:16] + d[17:19])
