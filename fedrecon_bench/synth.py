"""Synthetic federated populations in TFF's real on-disk formats, for testing and
benchmarking scale without the multi-GB downloads.

    python -m fedrecon_bench.synth stackoverflow --clients 342477 --out <data_dir>
    python -m fedrecon_bench.synth emnist --clients 3400 --out <data_dir>

stackoverflow  <out>/stackoverflow/stackoverflow.sqlite (TFF's SqlClientData layout:
               tables `examples` (split_name, client_id, serialized_example_proto) and
               `client_metadata` (client_id, split_name, num_examples); splits train,
               heldout (other users, a tenth as many) and test (later posts of 60% of the
               training users); every example a tf.Example with the fields TFF parses:
               creation_date, score, tags, title, tokens, type) and
               <out>/stackoverflow/datasets/stackoverflow.word_count ("word count" lines,
               most frequent first: the number of training users using the word).
emnist         <out>/emnist-tff/emnist_all.sqlite with splits all_train, all_test,
               digits_only_train, digits_only_test (tf.Examples: pixels 28x28 floats,
               label), as `tff.simulation.datasets.emnist.load_data` reads it.

Client sizes are long-tailed like the real data (a power law: most users have a few
examples, about 1% more than 1,024), the text is drawn from a Zipf vocabulary, and the
images are a fixed template per class plus noise. Everything is a function of --seed.
The protos are written in protobuf's wire format directly (no TensorFlow needed to
generate); TFF's own loaders read them (tests/test_lazy.py).
"""
from __future__ import annotations

import argparse
import os
import sqlite3
import struct
import sys
import time

import numpy as np

VOCAB = 50_000


# --------------------------------------------------------------------------
# tf.train.Example in protobuf's wire format
# --------------------------------------------------------------------------
def _varint(n: int) -> bytes:
    n &= (1 << 64) - 1  # int64: negatives as ten-byte two's complement
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, payload: bytes) -> bytes:  # a length-delimited field
    return _varint(num << 3 | 2) + _varint(len(payload)) + payload


def _bytes_feature(v: bytes) -> bytes:
    return _field(1, _field(1, v))


def _int64_feature(v: int) -> bytes:
    return _field(3, _field(1, _varint(v)))


def _float_feature(v: np.ndarray) -> bytes:
    return _field(2, _field(1, np.asarray(v, "<f4").tobytes()))


def example(features: dict) -> bytes:
    """A serialized tf.train.Example of {name: encoded Feature}, keys sorted."""
    return _field(1, b"".join(_field(1, _field(1, k.encode()) + _field(2, f))
                              for k, f in sorted(features.items())))


def so_example(date: bytes, tokens: str, score: int = 0, kind: bytes = b"answer") -> bytes:
    """One Stack Overflow post as TFF stores it (the fields its loader parses)."""
    words = tokens.split()
    return example({"creation_date": _bytes_feature(date), "score": _int64_feature(score),
                    "tags": _bytes_feature("|".join(words[:2]).encode()),
                    "title": _bytes_feature(" ".join(words[:4]).encode()),
                    "tokens": _bytes_feature(tokens.encode()), "type": _bytes_feature(kind)})


def emnist_example(pixels: np.ndarray, label: int) -> bytes:
    """One EMNIST image as TFF stores it (28x28 float pixels, an int64 label)."""
    return example({"label": _int64_feature(int(label)), "pixels": _float_feature(pixels.reshape(-1))})


# --------------------------------------------------------------------------
# Databases
# --------------------------------------------------------------------------
class Database:
    """TFF's SqlClientData layout, written to `<path>.tmp` and renamed when closed, so a
    killed run leaves no half-written database."""

    def __init__(self, path: str):
        self.path = path
        os.makedirs(os.path.dirname(path), exist_ok=True)
        if os.path.exists(path + ".tmp"):
            os.remove(path + ".tmp")
        self.con = sqlite3.connect(path + ".tmp")
        self.con.execute("PRAGMA journal_mode = OFF")
        self.con.execute("PRAGMA synchronous = OFF")
        self.con.execute("CREATE TABLE examples (split_name TEXT, client_id TEXT, serialized_example_proto BLOB)")
        self.con.execute("CREATE TABLE client_metadata (client_id TEXT, split_name TEXT, num_examples INTEGER)")

    def client(self, split: str, client_id: str, protos: list) -> None:
        self.con.executemany("INSERT INTO examples VALUES (?, ?, ?)", [(split, client_id, p) for p in protos])
        self.con.execute("INSERT INTO client_metadata VALUES (?, ?, ?)", (client_id, split, len(protos)))

    def close(self) -> None:
        # TFF reads one client with `WHERE client_id = ... and split_name = ...`: index it.
        self.con.execute("CREATE INDEX examples_by_client ON examples (client_id, split_name)")
        self.con.execute("CREATE INDEX metadata_by_split ON client_metadata (split_name, client_id)")
        self.con.commit()
        self.con.close()
        os.replace(self.path + ".tmp", self.path)


def write_word_counts(path: str, counts) -> None:
    """TFF's word-count file: 'word count' lines, most frequent first."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        f.writelines(f"{w} {c}\n" for w, c in counts)
    os.replace(path + ".tmp", path)


def sizes(rng, n: int, a: float = 1.6, most: int = 1100) -> np.ndarray:
    """Long-tailed example counts: P(k) ~ k^-a, at most `most` (above the 1,024 cap)."""
    return np.minimum(rng.zipf(a, n), most)


class Zipf:
    """Words w0, w1, ... drawn with P(rank r) ~ 1 / (r + 1)^s."""

    def __init__(self, rng, size: int = VOCAB, s: float = 1.1):
        self.rng, p = rng, 1.0 / np.arange(1, size + 1) ** s
        self.cdf = np.cumsum(p / p.sum())
        self.words = np.array([f"w{r}" for r in range(size)], dtype=object)

    def draw(self, n: int) -> np.ndarray:
        return np.minimum(np.searchsorted(self.cdf, self.rng.random(n)), len(self.cdf) - 1)


def _dates(rng, n: int, first_year: int, last_year: int) -> list[bytes]:
    """n creation dates in TFF's format, '2010-04-14 20:44:36.123 UTC'."""
    lo = np.array([first_year, 1, 1, 0, 0, 0, 0])
    hi = np.array([last_year + 1, 13, 29, 24, 60, 60, 1000])
    parts = rng.integers(lo, hi, (n, 7))
    return [b"%04d-%02d-%02d %02d:%02d:%02d.%03d UTC" % tuple(p) for p in parts.tolist()]


def stackoverflow(out: str, clients: int, seed: int = 0, log=print) -> dict:
    """Writes the database and the word counts; returns paths, counts and timings."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    z = Zipf(rng)
    root = os.path.join(out, "stackoverflow")
    db = Database(os.path.join(root, "stackoverflow.sqlite"))
    users_of = np.zeros(VOCAB, np.int64)  # training users per word (the word-count file)
    heldout = max(1, clients // 10)
    test_users = rng.random(clients) < 0.6
    plan = [("train", f"{i:08d}", n, 2008, 2017) for i, n in enumerate(sizes(rng, clients))]
    plan += [("heldout", f"{clients + i:08d}", n, 2008, 2017)
             for i, n in enumerate(sizes(rng, heldout))]
    plan += [("test", f"{i:08d}", max(1, n // 4), 2018, 2019)
             for i, n in zip(np.flatnonzero(test_users), sizes(rng, int(test_users.sum())))]
    total = 0
    for k, (split, cid, n, y0, y1) in enumerate(plan):
        lengths = 1 + rng.geometric(1 / 12, n).clip(max=40)
        ids = z.draw(int(lengths.sum()))
        if split == "train":
            users_of[np.unique(ids)] += 1
        words, ends = z.words[ids].tolist(), np.cumsum(lengths).tolist()
        scores, questions = rng.integers(-3, 50, n).tolist(), (rng.random(n) < 0.3).tolist()
        db.client(split, cid, [so_example(d, " ".join(words[e - k:e]), sc, b"question" if q else b"answer")
                               for d, e, k, sc, q in zip(_dates(rng, n, y0, y1), ends, lengths.tolist(),
                                                         scores, questions)])
        total += int(n)
        if log and (k + 1) % 20000 == 0:
            log(f"synth stackoverflow: {k + 1:,} of {len(plan):,} clients, {total:,} examples, "
                f"{time.perf_counter() - t0:.0f} s")
    db.close()
    counts = os.path.join(root, "datasets", "stackoverflow.word_count")
    order = np.lexsort((np.arange(VOCAB), -users_of))
    write_word_counts(counts, ((z.words[r], users_of[r]) for r in order if users_of[r] > 0))
    return {"database": db.path, "word_count": counts, "clients": {s: sum(p[0] == s for p in plan) for s in
                                                               ("train", "heldout", "test")},
            "examples": total, "bytes": os.path.getsize(db.path), "seconds": time.perf_counter() - t0}


def emnist(out: str, clients: int, seed: int = 0, images: float = 200.0, log=print) -> dict:
    """Writes emnist_all.sqlite: every writer's images split ~90/10 into all_train /
    all_test, and the digit images alone into digits_only_train / digits_only_test."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    templates = rng.random((62, 28, 28)).astype(np.float32)
    db = Database(os.path.join(out, "emnist-tff", "emnist_all.sqlite"))
    counts = {}
    for w in range(clients):
        cid = f"f{w:04d}_{w % 100:02d}"
        n = max(2, int(rng.poisson(images)))
        labels = rng.integers(0, 62, n)
        pixels = np.clip(templates[labels] + 0.3 * rng.standard_normal((n, 28, 28)), 0, 1).astype(np.float32)
        part = np.where(rng.random(n) < 0.9, "train", "test")
        protos = [emnist_example(x, y) for x, y in zip(pixels, labels)]
        for prefix, keep in (("all", np.ones(n, bool)), ("digits_only", labels < 10)):
            for p in ("train", "test"):
                sel = np.flatnonzero(keep & (part == p))
                if len(sel):
                    db.client(f"{prefix}_{p}", cid, [protos[i] for i in sel])
                    counts[f"{prefix}_{p}"] = counts.get(f"{prefix}_{p}", 0) + 1
    db.close()
    return {"database": db.path, "clients": counts, "bytes": os.path.getsize(db.path),
            "seconds": time.perf_counter() - t0}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m fedrecon_bench.synth", description=__doc__.splitlines()[0])
    ap.add_argument("dataset", choices=("stackoverflow", "emnist"))
    ap.add_argument("--clients", type=int, required=True, help="training clients (writers for emnist)")
    ap.add_argument("--out", required=True, help="the data dir (as data_dir= / FEDRECON_BENCH_DATA)")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args(argv)
    if a.clients < 1:
        ap.error("--clients must be >= 1")
    log = lambda msg: print(msg, file=sys.stderr, flush=True)
    res = (stackoverflow if a.dataset == "stackoverflow" else emnist)(a.out, a.clients, a.seed, log=log)
    print(f"{a.dataset}: {res['clients']} clients, {res['bytes'] / 2**20:,.1f} MB in "
          f"{res['seconds']:.1f} s: {res['database']}")


if __name__ == "__main__":
    main()
