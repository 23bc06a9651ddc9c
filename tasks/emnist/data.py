"""EMNIST data: LEAF JSON (with its npz cache) or TFF's federated EMNIST, and the
per-writer populations. No TensorFlow here unless task.source=tff.

Data: LEAF's FEMNIST JSON (`<data_dir>/femnist-leaf/{train,test}/*.json`,
`task.source=leaf`) or TFF's federated EMNIST (`task.source=tff`, downloaded by
TFF into `<data_dir>/emnist-tff`). The JSON is parsed once into an npz cache
(uint8 pixels, no pickle) keyed by the files' names, sizes and mtimes; later
runs load the cache (about 0.1 s instead of 3 s for the shared sample).

Populations (`task.split_by`):
  user     writers with LEAF train data are split 80/10/10 into train/val/test
           writers (seeded); every writer's examples are all its data (LEAF
           train + test), so val/test writers are never seen in training.
  example  train clients are every writer's LEAF train data; val and test
           clients are the same writer ids, with the writer's LEAF test data
           shuffled (seeded) and halved (val the first n // 2, test the rest).
"""
from __future__ import annotations

import glob
import hashlib
import json
import logging
import os
import stat
import tempfile
import zipfile

import numpy as np

from fedrecon_bench import schema
from fedrecon_bench.errors import UserError
from fedrecon_bench.schema import Field, positive_int
from tasks.base import ClientSet
from tasks.movielens.data import split_users

log = logging.getLogger(__name__)

NUM_PIXELS = 28 * 28
NUM_CLASSES = 62  # 10 digits, 26 upper-case, 26 lower-case letters
CACHE_VERSION = 1  # bump when the cache layout changes; old files are then ignored
FALLBACK_CACHE = "~/.cache/fedrecon_bench/femnist-leaf-cache"
LEAF_LAYOUT = ('{"users": [...], "user_data": {writer: {"x": [[784 pixels in 0..1], ...], '
               '"y": [label 0..61, ...]}}}')
FIX = "fix the file or re-create it with LEAF's preprocess.sh (or remove it from the folder)"


# --------------------------------------------------------------------------
# Reading LEAF JSON
# --------------------------------------------------------------------------
def _pixels(path: str, writer: str, x) -> np.ndarray:
    """(n, 784) float32; names the first bad image when the rows are not all 784 numbers."""
    if not isinstance(x, list):
        raise UserError(f"{path}: writer {writer!r}: 'x' is a {type(x).__name__}, expected a list "
                        f"of images (lists of {NUM_PIXELS} pixels); {FIX}")
    if not x:
        return np.zeros((0, NUM_PIXELS), np.float32)
    try:
        arr = np.asarray(x, dtype=np.float32)
    except (ValueError, TypeError):
        arr = None  # ragged or non-numeric: find the row below
    if arr is None or arr.ndim != 2 or arr.shape[1] != NUM_PIXELS:
        for i, row in enumerate(x):
            if not isinstance(row, list) or len(row) != NUM_PIXELS:
                n = len(row) if isinstance(row, list) else type(row).__name__
                raise UserError(f"{path}: writer {writer!r}, image {i}: pixel row has {n} values, "
                                f"expected {NUM_PIXELS} (28x28, flattened); {FIX}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row):
                raise UserError(f"{path}: writer {writer!r}, image {i}: non-numeric pixel value; {FIX}")
        raise UserError(f"{path}: writer {writer!r}: 'x' is not a list of pixel rows; {FIX}")
    bad = ~np.isfinite(arr) | (arr < 0) | (arr > 1)
    if bad.any():
        i, j = map(int, np.argwhere(bad)[0])
        raise UserError(f"{path}: writer {writer!r}, image {i}: pixel {j} is {arr[i, j]:g}, "
                        f"expected 0..1 (LEAF scales pixels by 1/255); {FIX}")
    return arr


def _labels(path: str, writer: str, y) -> np.ndarray:
    if not isinstance(y, list) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in y):
        raise UserError(f"{path}: writer {writer!r}: 'y' must be a list of integer labels 0..{NUM_CLASSES - 1}; {FIX}")
    arr = np.asarray(y, dtype=np.float64).reshape(-1)
    bad = np.flatnonzero((arr != np.round(arr)) | (arr < 0) | (arr > NUM_CLASSES - 1))
    if bad.size:
        i = int(bad[0])
        raise UserError(f"{path}: writer {writer!r}, example {i}: label {y[i]!r} is outside "
                        f"0..{NUM_CLASSES - 1} (62 classes: digits, upper, lower case); {FIX}")
    return arr.astype(np.uint8)


def read_leaf_file(path: str) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """[(writer, pixels (n, 784) float32, labels (n,) uint8)] in the file's `users` order."""
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except json.JSONDecodeError as e:
        raise UserError(f"{path}:{e.lineno}: not valid JSON ({e.msg} at column {e.colno}); "
                        f"expected LEAF's layout {LEAF_LAYOUT}; {FIX}") from None
    except UnicodeDecodeError:
        raise UserError(f"{path}: not valid JSON (not UTF-8 text); {FIX}") from None
    if not isinstance(doc, dict):
        raise UserError(f"{path}: top level is a {type(doc).__name__}, expected a JSON object "
                        f"{LEAF_LAYOUT}; {FIX}")
    for key in ("users", "user_data"):
        if key not in doc:
            raise UserError(f"{path}: missing key {key!r}; expected LEAF's layout {LEAF_LAYOUT}; {FIX}")
    users, user_data = doc["users"], doc["user_data"]
    if not isinstance(users, list) or not isinstance(user_data, dict):
        raise UserError(f"{path}: 'users' must be a list and 'user_data' an object "
                        f"(LEAF's layout {LEAF_LAYOUT}); {FIX}")
    out = []
    for w in users:
        entry = user_data.get(str(w))
        if not isinstance(entry, dict):
            raise UserError(f"{path}: writer {w!r} is listed in 'users' but has no object in "
                            f"'user_data'; {FIX}")
        for key in ("x", "y"):
            if key not in entry:
                raise UserError(f"{path}: writer {w!r}: missing key {key!r} in user_data "
                                f"(each writer needs 'x' images and 'y' labels); {FIX}")
        x, y = entry["x"], entry["y"]
        if isinstance(x, list) and isinstance(y, list) and len(x) != len(y):
            raise UserError(f"{path}: writer {w!r} has {len(x)} images in 'x' but {len(y)} "
                            f"labels in 'y' (they must pair up one to one); {FIX}")
        out.append((str(w), _pixels(path, w, x), _labels(path, w, y)))
    return out


def compact_pixels(x: np.ndarray) -> np.ndarray:
    """uint8 (x * 255) when that is lossless (LEAF's pixels are k/255), else float32."""
    q = np.round(np.asarray(x, np.float32) * 255.0)
    if np.all(np.abs(q - np.asarray(x, np.float32) * 255.0) < 1e-3):
        return q.astype(np.uint8)
    return np.asarray(x, np.float32)


# --------------------------------------------------------------------------
# The npz cache of one LEAF folder (train/ or test/)
# --------------------------------------------------------------------------
def leaf_files(folder: str) -> list[str]:
    return sorted(glob.glob(os.path.join(folder, "*.json")))


def cache_key(files: list[str]) -> str:
    """Names, sizes and mtimes: any edited, added or removed file makes a new key."""
    h = hashlib.sha256(f"v{CACHE_VERSION}".encode())
    for f in files:
        st = os.stat(f)
        h.update(f"\0{os.path.basename(f)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:20]


def _writable(d: str) -> bool:
    """Creates `d` if we may. Write bits are honoured even for root (who could
    write anyway), so a data folder published read-only (r-x) stays untouched."""
    probe = os.path.abspath(d)
    while not os.path.exists(probe):  # the nearest existing ancestor decides
        probe = os.path.dirname(probe)
    if not (os.path.isdir(probe) and os.access(probe, os.W_OK)
            and os.stat(probe).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)):
        return False
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK) and bool(os.stat(d).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))


def cache_dirs(leaf_root: str, configured: str | None) -> list[str]:
    """Where to read/write the cache, in order of preference."""
    if configured:
        return [os.path.expanduser(str(configured))]
    own = os.path.join(leaf_root, ".cache")
    # One fallback folder per source folder, so two data dirs never share a cache.
    tag = hashlib.sha256(os.path.realpath(leaf_root).encode()).hexdigest()[:12]
    return [own, os.path.join(os.path.expanduser(FALLBACK_CACHE), tag)]


def _read_cache(path: str):
    try:
        with np.load(path, allow_pickle=False) as z:
            writers, counts, x, y = z["writers"], z["counts"], z["x"], z["y"]
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None  # unreadable or partial: parse again and overwrite
    if counts.sum() != len(x) or len(x) != len(y) or len(writers) != len(counts):
        return None
    return writers, counts, x, y


def _write_cache(path: str, arrays: dict) -> bool:
    """Atomic: a temp file in the same folder, renamed into place. False if unwritable."""
    d = os.path.dirname(path)
    if not _writable(d):
        return False
    try:
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=d)
    except OSError:
        return False
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; other users of the data dir may read it
        os.replace(tmp, path)
    except OSError as e:
        log.warning("could not write the EMNIST cache %s (%s); continuing without it", path, e)
        return False
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    # Older caches of the same folder (its files have changed since) are stale.
    prefix = os.path.basename(path).rsplit("-", 1)[0] + "-"
    for old in glob.glob(os.path.join(d, prefix + "*.npz")):
        if old != path:
            try:
                os.remove(old)
            except OSError:
                pass
    return True


def parse_leaf_folder(folder: str, files: list[str]):
    """(writers, counts, x, y): the folder's writers in file order, their example
    counts, and all examples stacked (x compact, see compact_pixels)."""
    writers, counts, xs, ys = [], [], [], []
    for f in files:
        for w, x, y in read_leaf_file(f):
            writers.append(w)
            counts.append(len(y))
            xs.append(x)
            ys.append(y)
    x = np.concatenate(xs) if xs else np.zeros((0, NUM_PIXELS), np.float32)
    y = np.concatenate(ys) if ys else np.zeros((0,), np.uint8)
    return np.asarray(writers, dtype=str), np.asarray(counts, np.int64), compact_pixels(x), y


def load_leaf_folder(folder: str, cache_dir_list: list[str]):
    """Like parse_leaf_folder, through the cache. Returns (arrays, 'hit' | 'miss')."""
    files = leaf_files(folder)
    name = f"{os.path.basename(os.path.normpath(folder))}-{cache_key(files)}.npz"
    for d in cache_dir_list:
        if os.path.isfile(os.path.join(d, name)):
            got = _read_cache(os.path.join(d, name))
            if got is not None:
                return got, "hit"
    arrays = parse_leaf_folder(folder, files)
    for d in cache_dir_list:
        if _write_cache(os.path.join(d, name), dict(zip(("writers", "counts", "x", "y"), arrays))):
            break
    else:
        log.warning("no writable cache folder among %s; the JSON is parsed on every run", cache_dir_list)
    return arrays, "miss"


def group_by_writer(writers, counts, x, y) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """writer -> (x, y); a writer found in several files gets its examples concatenated."""
    out: dict[str, list] = {}
    ends = np.cumsum(counts)
    for w, e, n in zip(writers.tolist(), ends, counts):
        out.setdefault(w, []).append((x[e - n:e], y[e - n:e]))
    return {w: (np.concatenate([a for a, _ in p]), np.concatenate([b for _, b in p])) if len(p) > 1
            else p[0] for w, p in out.items()}


def unify_pixels(*dicts) -> None:
    """In place: all uint8, or all float32 in 0..1 when any source was not k/255,
    so a writer's train and test images can be concatenated."""
    if all(x.dtype == np.uint8 for d in dicts for x, _ in d.values()):
        return
    for d in dicts:
        for w, (x, y) in d.items():
            if x.dtype == np.uint8:
                d[w] = (x.astype(np.float32) / 255.0, y)


# --------------------------------------------------------------------------
# Populations
# --------------------------------------------------------------------------
def build_populations(train_w: dict, test_w: dict, split_by: str, seed: int,
                      cap: int | None, only_digits: bool):
    """(train, val, test) ClientSets from writer -> (x, y) dicts; see the module docstring."""
    def digits(d):
        if not only_digits:
            return d
        return {w: (x[y < 10], y[y < 10]) for w, (x, y) in d.items()}

    train_w, test_w = digits(train_w), digits(test_w)
    writers = sorted(w for w, (_, y) in train_w.items() if len(y))  # writers with train data
    if not writers:
        raise UserError("no writer has training examples" + (" with digit labels (task.only_digits=true)"
                        if only_digits else "") + "; check the data under data_dir")
    x_dtype = train_w[writers[0]][0].dtype
    empty = (np.zeros((0, NUM_PIXELS), x_dtype), np.zeros((0,), np.uint8))  # a writer without test data

    def shuffled(k: int, x, y, salt: int):
        # One generator per writer: a writer's order does not depend on the others.
        perm = np.random.default_rng([seed, 1, salt, k]).permutation(len(y))
        return x[perm], y[perm]

    def capped(x, y):
        return {"x": x[:cap] if cap else x, "y": y[:cap] if cap else y}

    if split_by == "user":
        per_writer = []
        for k, w in enumerate(writers):
            x, y = train_w[w]
            if w in test_w:
                x, y = np.concatenate([x, test_w[w][0]]), np.concatenate([y, test_w[w][1]])
            per_writer.append(capped(*shuffled(k, x, y, 0)))
        tr, va, te = split_users(len(writers), seed)

        def subset(idx):
            idx = np.sort(idx)
            return ClientSet([writers[i] for i in idx], [per_writer[i] for i in idx])

        return subset(tr), subset(va), subset(te)
    if split_by == "example":
        train, val, test = [], [], []
        for k, w in enumerate(writers):
            train.append(capped(*shuffled(k, *train_w[w], 0)))
            x, y = shuffled(k, *test_w.get(w, empty), 1)
            half = len(y) // 2
            val.append(capped(x[:half], y[:half]))
            test.append(capped(x[half:], y[half:]))
        return ClientSet(list(writers), train), ClientSet(list(writers), val), ClientSet(list(writers), test)
    raise UserError(f"task.split_by={split_by!r} is unknown; use user (unseen writers) or example (seen writers)")


# --------------------------------------------------------------------------
# The task
# --------------------------------------------------------------------------
SOURCES = ("leaf", "tff")
SPLITS = ("user", "example")


FIELDS = (  # the task's keys, checked before any data is read (fedrecon_bench/schema.py)
    Field("task.source", "choice", choices=SOURCES,
          note="(leaf: LEAF JSON under <data_dir>/femnist-leaf; tff: tff.simulation.datasets.emnist)"),
    Field("task.split_by", "choice", choices=SPLITS, note="(user: unseen writers; example: seen writers)"),
    Field("task.only_digits", "bool"), Field("task.user_embedding", "bool"), Field("task.dropout", "bool"),
    positive_int("task.user_embedding_dim"),
    Field("task.conv", "choice", choices=("lax", "patches"), default="lax"),
)


def check_task_config(c) -> None:
    """The task's keys (FIELDS); before any data is read."""
    schema.check({"task": c}, FIELDS)
