"""TFF's SQLite client data (`SqlClientData`: Stack Overflow, federated EMNIST), read
without TensorFlow.

A database has the tables `examples (split_name, client_id, serialized_example_proto)` and
`client_metadata (client_id, split_name, num_examples)`; each example is a serialized
`tf.train.Example`. A client's rows come from TFF's own query, in the order SQLite returns
them (TFF adds no ORDER BY), and each proto is decoded from protobuf's wire format here,
so engine=fast reads these databases in an environment without TensorFlow. TFF itself is
needed only to download a missing database. tests/test_lazy.py checks that this reader and
TFF's loaders give the same examples in the same order.
"""
from __future__ import annotations

import importlib.util
import itertools
import sqlite3
import threading

import numpy as np

from fedrecon_bench.errors import UserError


def have_tff() -> bool:
    """Whether TensorFlow Federated can be imported here (found, not imported)."""
    return all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorflow_federated"))


def download_or_refuse(key: str, path: str, fix: str):
    """For a missing database: TFF downloads it (the caller's next step) where TFF is
    installed; elsewhere one line names the fix."""
    if not have_tff():
        raise UserError(f"{key}: {path} is missing, and downloading it needs TensorFlow Federated, which "
                        f"this environment does not have (the `modern` group is engine=fast only); {fix}, "
                        "or download it once in the default environment (`uv sync --locked`)")


# --------------------------------------------------------------------------
# tf.train.Example in protobuf's wire format (tensorflow/core/example/{example,feature}.proto)
# --------------------------------------------------------------------------
def _varint(buf: bytes, i: int) -> tuple[int, int]:
    out = shift = 0
    while True:
        b = buf[i]
        i += 1
        out |= (b & 0x7F) << shift
        if b < 0x80:
            return out, i
        shift += 7


def _fields(buf: bytes):
    """(field number, wire type, value) of one message; value: int, or bytes for
    length-delimited and fixed-width fields."""
    i, n = 0, len(buf)
    while i < n:
        tag, i = _varint(buf, i)
        num, wt = tag >> 3, tag & 7
        if wt == 0:
            v, i = _varint(buf, i)
        elif wt == 2:
            size, i = _varint(buf, i)
            v, i = buf[i:i + size], i + size
        elif wt in (1, 5):
            size = 8 if wt == 1 else 4
            v, i = buf[i:i + size], i + size
        else:
            raise ValueError(f"unsupported protobuf wire type {wt}")
        yield num, wt, v


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def _feature(buf: bytes):
    """A Feature: list of bytes (BytesList), float32 array (FloatList) or list of int
    (Int64List); repeated scalars may be packed or not."""
    for kind, _, body in _fields(buf):  # oneof: one field at most
        if kind == 1:
            return [v for num, _, v in _fields(body) if num == 1]
        if kind == 2:
            parts = [v for num, _, v in _fields(body) if num == 1]
            return np.frombuffer(b"".join(parts), "<f4")
        if kind == 3:
            out = []
            for num, wt, v in _fields(body):
                if num == 1 and wt == 2:  # packed varints
                    j = 0
                    while j < len(v):
                        x, j = _varint(v, j)
                        out.append(_int64(x))
                elif num == 1:
                    out.append(_int64(v))
            return out
    return []


def parse_example(proto: bytes) -> dict:
    """A serialized tf.train.Example -> {feature name: bytes list | float32 array | int list}."""
    out = {}
    for num, _, features in _fields(proto):
        if num != 1:
            continue
        for fnum, _, entry in _fields(features):
            if fnum != 1:
                continue
            key, value = b"", b""
            for enum, _, v in _fields(entry):
                if enum == 1:
                    key = v
                elif enum == 2:
                    value = v
            out[key.decode()] = _feature(value)
    return out


# --------------------------------------------------------------------------
# A database
# --------------------------------------------------------------------------
class SqlClientData:
    """One database file, read-only; `examples(split, client_id)` are parsed protos. Each
    thread has its own connection (the next round's clients are read in a background thread)."""

    def __init__(self, path: str):
        self.path, self._local = path, threading.local()
        try:
            self._con().execute("SELECT 1 FROM examples LIMIT 1").fetchall()
        except sqlite3.Error as e:
            raise UserError(f"{path}: not a readable TFF client database ({e}); delete it to download "
                            "it again, or regenerate it") from None

    def _con(self) -> sqlite3.Connection:
        if getattr(self._local, "con", None) is None:
            self._local.con = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
        return self._local.con

    def protos(self, split: str, client_id: str, limit: int | None = None) -> list[bytes]:
        """A client's first `limit` serialized examples, by TFF's own query (its
        SqlClientData._create_dataset, then `take(limit)`), so they come in its order."""
        q = "SELECT serialized_example_proto FROM examples WHERE client_id = ? and split_name = ?"
        rows = self._con().execute(q, (client_id, split))
        return [r[0] for r in itertools.islice(rows, limit or None)]

    def examples(self, split: str, client_id: str, limit: int | None = None) -> list[dict]:
        return [parse_example(p) for p in self.protos(split, client_id, limit)]

    def sizes(self, split: str) -> dict:
        """client id -> number of examples, from the `client_metadata` table."""
        return dict(self._con().execute(
            "SELECT client_id, num_examples FROM client_metadata WHERE split_name = ?", (split,)).fetchall())
