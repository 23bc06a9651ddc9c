"""MovieLens data: reading the three ratings layouts, the download, and the per-user
populations. Preparation is vectorized: one lexsort over all ratings instead of a
per-user pandas filter. No TensorFlow here (engine=fast never imports it).
"""
from __future__ import annotations

import collections
import hashlib
import http.client
import io
import math
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

import numpy as np

from fedrecon_bench.errors import UserError
from tasks.base import ClientSet

ML1M_URL = "https://files.grouplens.org/datasets/movielens/ml-1m.zip"
ML1M_MD5 = "c4d9eecfca2ab87c1945afe126590906"
RATING_MIN, RATING_MAX = 1.0, 5.0


# --------------------------------------------------------------------------
# Reading ratings files
# --------------------------------------------------------------------------
class Ratings(collections.namedtuple("Ratings", "user item rating timestamp")):
    """Parallel arrays of raw ids (as in the file), ratings, timestamps (or None)."""


def _first_bad_line(path: str, sep: str, ncols: tuple[int, ...], skip: int, encoding="latin-1"):
    """Slow path, only after the fast parser failed: find the line to report."""
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            if lineno <= skip or not line.strip():
                continue
            fields = line.rstrip("\r\n").split(sep)
            ok = len(fields) in ncols
            if ok:
                try:
                    [int(fields[0]), int(fields[1]), float(fields[2])]
                    [int(v) for v in fields[3:]]
                    ok = math.isfinite(float(fields[2]))  # pandas reads 'nan' as missing
                except ValueError:
                    ok = False
            if not ok:
                return lineno, line.rstrip("\r\n")
    return None, None


def _line_of_row(path: str, row: int, skip: int, encoding="latin-1") -> int | None:
    """File line number of data row `row` (0-based); blank lines are skipped, as pandas does."""
    n = -1
    with open(path, encoding=encoding) as f:
        for lineno, line in enumerate(f, start=1):
            if lineno > skip and line.strip():
                n += 1
                if n == row:
                    return lineno
    return None


def _parse(path: str, sep: str, names: list[str], skip: int, expected: str) -> Ratings:
    import pandas as pd  # imported here: only the loaders need it

    with open(path, "rb") as f:
        raw = f.read()
    if sep == "::":  # pandas' C parser takes one-character separators only
        raw, sep = raw.replace(b"::", b"\t"), "\t"
    try:
        df = pd.read_csv(
            io.BytesIO(raw), sep=sep, header=None, names=names, skiprows=skip,
            dtype={"user": np.int64, "item": np.int64, "rating": np.float64,
                   "timestamp": np.int64}, engine="c", skip_blank_lines=True,
        )
        if df.isna().any().any():
            raise ValueError("missing field")
    except (ValueError, pd.errors.ParserError):
        lineno, line = _first_bad_line(path, "::" if path.endswith(".dat") else
                                       ("\t" if sep == "\t" else sep), (len(names),), skip)
        where = f"{path}:{lineno}" if lineno else path
        raise UserError(
            f"{where}: malformed ratings line {line!r}; expected {expected} "
            "(fix or delete that line)") from None
    bad = np.flatnonzero((df["rating"].to_numpy() < RATING_MIN) | (df["rating"].to_numpy() > RATING_MAX))
    if bad.size:
        i = int(bad[0])
        raise UserError(
            f"{path}:{_line_of_row(path, i, skip)}: rating {df['rating'].iloc[i]:g} is outside "
            f"{RATING_MIN:g}..{RATING_MAX:g} (fix or delete that line)")
    if len(df) == 0:
        raise UserError(f"{path}: no ratings in the file (point task.ratings_file at a ratings file)")
    ts = df["timestamp"].to_numpy() if "timestamp" in df else None
    return Ratings(df["user"].to_numpy(), df["item"].to_numpy(),
                   df["rating"].to_numpy(np.float32), ts)


def read_ratings(path: str) -> Ratings:
    """Reads any of the three supported layouts, chosen by the file name."""
    name = os.path.basename(path)
    if not os.path.isfile(path):
        raise UserError(f"{path}: ratings file not found (check task.ratings_file / data_dir)")
    if name.endswith(".dat"):
        return _parse(path, "::", ["user", "item", "rating", "timestamp"], 0,
                      "'UserID::MovieID::Rating::Timestamp'")
    if name == "u.data" or name.endswith(".tsv"):
        return _parse(path, "\t", ["user", "item", "rating", "timestamp"], 0,
                      "'user<TAB>item<TAB>rating<TAB>timestamp'")
    if name.endswith(".csv"):
        with open(path, encoding="utf-8-sig") as f:  # a BOM (spreadsheet export) is no header error
            header = f.readline().strip().split(",")
        if header[:3] != ["user_id", "item_id", "rating"] or header[3:] not in ([], ["timestamp"]):
            raise UserError(
                f"{path}:1: CSV header is {','.join(header)!r}; expected "
                "'user_id,item_id,rating' or 'user_id,item_id,rating,timestamp'")
        names = ["user", "item", "rating"] + (["timestamp"] if len(header) == 4 else [])
        return _parse(path, ",", names, 1, f"'{','.join(header)}'")
    raise UserError(
        f"{path}: unknown ratings format; use ratings.dat (GroupLens '::' layout), "
        "a .csv with header user_id,item_id,rating[,timestamp], or ML-100K u.data")


_PARSED: dict[tuple, Ratings] = {}
_PARSED_MAX = 4  # ML-1M is about 28 MB of arrays


def read_ratings_cached(path: str) -> Ratings:
    """read_ratings, parsed once per process for each version (size, mtime) of a file: a
    process that builds several runs (a test session, a sweep job) reads ML-1M once.
    The arrays are read-only, since every caller shares them."""
    try:
        st = os.stat(path)
    except OSError:
        return read_ratings(path)  # its one-line error
    key = (os.path.realpath(path), st.st_size, st.st_mtime_ns)
    if key not in _PARSED:
        r = read_ratings(path)
        for a in r:
            if a is not None:
                a.flags.writeable = False
        while len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[key] = r
    return _PARSED[key]


# --------------------------------------------------------------------------
# Finding or downloading the data
# --------------------------------------------------------------------------
def md5sum(path: str) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download(url: str, dest: str, md5: str | None, timeout: float = 60.0) -> str:
    """Downloads to `dest` via a temporary name; a wrong checksum leaves nothing."""
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".download-", dir=os.path.dirname(dest) or ".")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout) as resp:
            shutil.copyfileobj(resp, out)
        got = md5sum(tmp)
        if md5 and got != md5:
            raise UserError(
                f"{url}: downloaded file has md5 {got}, expected {md5}; the download "
                "is corrupt or the URL is wrong (retry, or set task.download_url/task.download_md5)")
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        # ValueError: a malformed URL ("unknown url type"); HTTPException: a cut connection
        raise UserError(f"{url}: download failed ({e}); check the URL or your network, "
                        "or place the files in the data dir yourself") from None
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return dest


def safe_extract_zip(zip_path: str, dest_dir: str) -> None:
    """Extracts every member into a fresh temp dir, then moves each top-level entry
    into `dest_dir` by rename, so a crash never leaves a half-written file there.
    Member names that are absolute or climb out with '..' are refused."""
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile:
        raise UserError(f"{zip_path}: not a valid zip archive (truncated download?); "
                        "delete it and run again to re-download") from None
    with zf:
        for name in zf.namelist():
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or ":" in parts[0]:
                raise UserError(f"{zip_path}: unsafe member name {name!r}; refusing to extract")
        bad = zf.testzip()
        if bad is not None:
            raise UserError(f"{zip_path}: member {bad!r} is corrupt; delete the archive and re-download")
        os.makedirs(dest_dir, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".extract-", dir=dest_dir)
        try:
            zf.extractall(tmp)
            for root, _, files in os.walk(tmp):
                rel = os.path.relpath(root, tmp)
                os.makedirs(os.path.join(dest_dir, rel), exist_ok=True)
                # ratings.dat last: its presence means the extraction finished.
                for f in sorted(files, key=lambda f: f == "ratings.dat"):
                    os.replace(os.path.join(root, f), os.path.join(dest_dir, rel, f))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def find_ratings_file(cfg, data_dir: str) -> str:
    """Returns the ratings file to read, downloading ML-1M if allowed and needed."""
    if cfg.get("ratings_file"):
        return os.path.expanduser(str(cfg.ratings_file))
    data_dir = os.path.expanduser(data_dir)
    if cfg.dataset == "ml-100k":
        path = os.path.join(data_dir, "ml-100k", "u.data")
        if not os.path.isfile(path):
            raise UserError(
                f"{path}: ML-100K not found; unpack ml-100k.zip from GroupLens into {data_dir} "
                "or set data_dir / FEDRECON_BENCH_DATA")
        return path
    if cfg.dataset != "ml-1m":
        raise UserError(f"task.dataset={cfg.dataset!r} is unknown; use ml-1m or ml-100k")
    root = os.path.join(data_dir, "ml-1m")
    for name in ("ratings.dat", "ratings.csv"):
        if os.path.isfile(os.path.join(root, name)):
            return os.path.join(root, name)
    if not cfg.get("download", True):
        raise UserError(
            f"no MovieLens-1M ratings in {root} (looked for ratings.dat, ratings.csv) and "
            f"task.download=false; set FEDRECON_BENCH_DATA or data_dir to a directory with "
            f"ml-1m/, or allow the download of {cfg.download_url}")
    zip_path = os.path.join(data_dir, "ml-1m.zip")
    if not (os.path.isfile(zip_path) and md5sum(zip_path) == cfg.download_md5):
        try:
            download(cfg.download_url, zip_path, cfg.download_md5)
        except UserError as e:
            raise UserError(
                f"no MovieLens-1M ratings in {root} and the download failed: {e} -- set "
                f"FEDRECON_BENCH_DATA (or data_dir=) to a directory holding ml-1m/ratings.dat "
                f"or ml-1m/ratings.csv, or fetch {cfg.download_url} yourself") from None
    safe_extract_zip(zip_path, data_dir)
    path = os.path.join(root, "ratings.dat")
    if not os.path.isfile(path):
        raise UserError(f"{zip_path}: archive has no ml-1m/ratings.dat; delete it and re-download")
    return path


# --------------------------------------------------------------------------
# Preparation: dense ids, user split, per-user shuffle and cap (vectorized)
# --------------------------------------------------------------------------
def split_users(num_users: int, seed: int, fractions=(0.8, 0.1), authors: bool = False) -> tuple[np.ndarray, ...]:
    """Train/val/test user indices: a seeded shuffle cut at the fractions (authors: the
    paper code's legacy-seeded shuffle of the user list)."""
    perm = (authors_permutation if authors else lambda n, s: np.random.default_rng(s).permutation(n))(
        num_users, seed)
    a = int(num_users * fractions[0])
    b = int(num_users * (fractions[0] + fractions[1]))
    return perm[:a], perm[a:b], perm[b:]


def prepare(r: Ratings, seed: int, max_examples_per_user: int | None,
            max_users: int | None, by_time: bool = False) -> tuple[list[int], list[dict], int, np.ndarray]:
    """Per-user example arrays, in dense user order.

    Returns (raw user ids, per-user examples, num_items, raw item id per dense id).
    Items are remapped over the whole file (ascending raw id, as the TFF tutorial
    does), so the model size does not depend on `max_users`.
    """
    raw_users, user_idx = np.unique(r.user, return_inverse=True)
    raw_items, item_idx = np.unique(r.item, return_inverse=True)
    keep = np.ones(len(user_idx), bool) if not max_users else user_idx < max_users
    user_idx, item_idx, rating = user_idx[keep], item_idx[keep], r.rating[keep]
    # One seeded random key per rating; lexsort groups by user, shuffles within.
    key = np.random.default_rng([seed, 1]).random(len(user_idx))
    if by_time and r.timestamp is not None:  # oldest first; ties in seeded random order
        order = np.lexsort((key, r.timestamp[keep], user_idx))
    else:
        order = np.lexsort((key, user_idx))
    user_idx, item_idx, rating = user_idx[order], item_idx[order], rating[order]
    num_users = int(user_idx.max()) + 1 if len(user_idx) else 0
    starts = np.searchsorted(user_idx, np.arange(num_users))
    ends = np.searchsorted(user_idx, np.arange(num_users), side="right")
    cap = max_examples_per_user or len(user_idx)  # no cap; int64 max would overflow s + cap
    examples = [
        {"item": item_idx[s:min(e, s + cap)].astype(np.int64),
         "rating": rating[s:min(e, s + cap)].astype(np.float32)}
        for s, e in zip(starts, ends)
    ]
    return raw_users[:num_users].tolist(), examples, len(raw_items), raw_items


def split_examples(users, examples, fractions=(0.8, 0.1)):
    """Seen-user populations: each user's (time-ordered or shuffled) ratings cut
    80/10/10; val/test keep the user's id. Users left with an empty part are
    dropped from that part only."""
    parts = ([], [], [])
    for u, ex in zip(users, examples):
        n = len(ex["item"])
        a, b = int(n * fractions[0]), int(n * (fractions[0] + fractions[1]))
        for part, (lo, hi) in zip(parts, ((0, a), (a, b), (b, n))):
            if hi > lo:
                part.append((u, {k: v[lo:hi] for k, v in ex.items()}))
    return tuple(ClientSet([u for u, _ in p], [e for _, e in p]) for p in parts)


# --------------------------------------------------------------------------
# The authors' preparation (task.preparation=authors)
# --------------------------------------------------------------------------
def authors_permutation(n: int, seed: int) -> np.ndarray:
    """The order `np.random.seed(seed); np.random.shuffle(items)` puts n items in (the
    authors' per-user and user-list shuffles): it depends on n and the seed only."""
    return np.random.RandomState(seed).permutation(n)


def prepare_authors(r: Ratings, seed: int, cap: int | None, max_users: int | None,
                    seen: bool, fractions=(0.8, 0.1)):
    """The paper code's MovieLens preparation (its `movielens_dataset.py`), from the
    ratings in file order, users and items remapped to sorted ids as `prepare` does.

    Unseen users (seen=False): each user's ratings shuffled by authors_permutation and
    capped; returns (raw user ids, examples, num_items). Seen users: each user's ratings
    ranked by timestamp (ties in file order), rank/count <= train fraction to train,
    <= train + val fraction to val, the rest to test; then each part shuffled and capped
    on its own; returns the three ClientSets (users with an empty part are left out of it)."""
    if seen and r.timestamp is None:
        raise UserError("task.preparation=authors with task.split_by=example ranks ratings by "
                        "timestamp; this ratings file has none (use ml-1m/ratings.dat)")
    raw_users, user_idx = np.unique(r.user, return_inverse=True)
    raw_items, item_idx = np.unique(r.item, return_inverse=True)
    keep = np.ones(len(user_idx), bool) if not max_users else user_idx < max_users
    user_idx, item_idx, rating = user_idx[keep], item_idx[keep], r.rating[keep]
    order = (np.lexsort((r.timestamp[keep], user_idx)) if seen  # stable: ties keep file order
             else np.argsort(user_idx, kind="stable"))
    user_idx, item_idx, rating = user_idx[order], item_idx[order], rating[order]
    num_users = int(user_idx.max()) + 1 if len(user_idx) else 0
    bounds = np.searchsorted(user_idx, np.arange(num_users + 1))

    def shuffled(items, ratings) -> dict:
        p = authors_permutation(len(items), seed)[:cap]
        return {"item": items[p].astype(np.int64), "rating": ratings[p].astype(np.float32)}

    users = raw_users[:num_users].tolist()
    if not seen:
        return users, [shuffled(item_idx[s:e], rating[s:e]) for s, e in zip(bounds, bounds[1:])], len(raw_items)
    parts = ([], [], [])
    for u, s, e in zip(users, bounds, bounds[1:]):
        rank = np.arange(1, e - s + 1) / (e - s)  # pandas rank(method="first") / count, float64
        train = rank <= fractions[0]
        val = ~train & (rank <= fractions[0] + fractions[1])
        for part, m in zip(parts, (train, val, ~train & ~val)):
            if m.any():
                part.append((u, shuffled(item_idx[s:e][m], rating[s:e][m])))
    return tuple(ClientSet([u for u, _ in p], [x for _, x in p]) for p in parts), len(raw_items)
