"""Next-word prediction data: the token id layout, tokenizer and OOV hashing, the
vocabulary (cached), federated Shakespeare (HDF5) and TFF's Stack Overflow readers.
No TensorFlow here unless task.source=stackoverflow (TFF reads it)."""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import stat
import tempfile

import numpy as np

from fedrecon_bench.errors import UserError
from tasks.movielens.data import md5sum, split_users  # noqa: F401 (used by the task and tests)

SOURCES = ("shakespeare", "stackoverflow")
SPLIT_BY = ("user", "example")
# Bump when tokenization or vocabulary construction changes: old caches then miss.
TOKENIZER_VERSION = 1
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


# --------------------------------------------------------------------------
# Token ids
# --------------------------------------------------------------------------
class Layout:
    """The fixed id layout for vocabulary size V and K OOV buckets."""

    def __init__(self, vocab_size: int, num_oov_buckets: int):
        self.V, self.K = int(vocab_size), int(num_oov_buckets)
        self.pad = 0
        self.oov_first, self.oov_last = self.V + 1, self.V + self.K
        self.bos, self.eos = self.V + self.K + 1, self.V + self.K + 2
        self.num_ids = self.V + self.K + 3


def tokenize(text: str) -> list[str]:
    """Lowercased words; see the module docstring for the exact rule."""
    return _WORD.findall(text.lower())


def oov_id(word: str, layout: Layout) -> int:
    """The OOV bucket id of a word: stable across processes (md5, not hash())."""
    h = int.from_bytes(hashlib.md5(word.encode("utf-8")).digest()[:8], "big")
    return layout.oov_first + h % layout.K


class Encoder:
    """Words -> ids with a fixed vocabulary and hashed OOV buckets (memoized)."""

    def __init__(self, vocab: list[str], layout: Layout):
        if len(vocab) > layout.V:
            raise ValueError(f"vocabulary has {len(vocab)} words, more than V={layout.V}")
        self.layout = layout
        self.index = {w: i + 1 for i, w in enumerate(vocab)}

    def ids(self, words: list[str]) -> list[int]:
        idx = self.index
        out = []
        for w in words:
            i = idx.get(w)
            if i is None:
                i = idx[w] = oov_id(w, self.layout)  # memoize: hashing is the slow part
            out.append(i)
        return out


def _rows(chunks: list[list[int]], seq_len: int) -> dict[str, np.ndarray]:
    """Token chunks of length <= seq_len + 1 -> x and y, as the paper's code builds them:
    pad the chunk with 0 to seq_len + 1, then x = padded[:-1], y = padded[1:]. So a short
    chunk keeps its last token (EOS) in x, at the position whose label is pad."""
    x = np.zeros((len(chunks), seq_len), np.int64)
    y = np.zeros((len(chunks), seq_len), np.int64)
    for r, chunk in enumerate(chunks):
        x[r, :min(len(chunk), seq_len)] = chunk[:seq_len]
        y[r, :len(chunk) - 1] = chunk[1:]
    return {"x": x, "y": y}


def window_chunks(ids: list[int], seq_len: int, layout: Layout) -> list[list[int]]:
    """Shakespeare: `BOS ids EOS` cut into windows of seq_len + 1 tokens, every seq_len tokens."""
    toks = [layout.bos, *ids, layout.eos]
    return [toks[s:s + seq_len + 1] for s in range(0, len(toks) - 1, seq_len)]


def truncated_chunk(ids: list[int], seq_len: int, layout: Layout) -> list[int]:
    """Stack Overflow (the paper's `to_ids`): BOS + first seq_len ids (+ EOS if shorter)."""
    return [layout.bos, *ids[:seq_len]] + ([layout.eos] if len(ids) < seq_len else [])


def client_examples(texts, to_chunks, seq_len: int, cap: int | None) -> dict[str, np.ndarray]:
    """One client's {x, y}: its texts (word lists, in order) chunked, the first `cap` kept.
    Stops encoding once the cap is reached (the heavy clients are long)."""
    chunks = []
    for words in texts:
        chunks.extend(to_chunks(words))
        if cap and len(chunks) >= cap:
            break
    return _rows(chunks[:cap] if cap else chunks, seq_len)


def build_vocab(word_lists, vocab_size: int) -> tuple[list[str], list[int]]:
    """The vocab_size most frequent words (ties alphabetical) and their counts."""
    counts = collections.Counter()
    for words in word_lists:
        counts.update(words)
    top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:vocab_size]
    return [w for w, _ in top], [c for _, c in top]


# --------------------------------------------------------------------------
# Federated Shakespeare (TFF's HDF5 release)
# --------------------------------------------------------------------------
def read_snippets_h5(path: str) -> dict[str, list[str]]:
    """{client id: [snippet, ...]} from TFF's layout `examples/<client>/snippets`."""
    import h5py  # only the Shakespeare path needs it

    if not os.path.isfile(path):
        raise UserError(
            f"{path}: file not found; put TFF's federated Shakespeare HDF5 files "
            "(shakespeare/shakespeare_train.h5 and shakespeare_test.h5) under data_dir "
            "(set data_dir= or FEDRECON_BENCH_DATA)")
    try:
        f = h5py.File(path, "r")
    except OSError as e:
        raise UserError(f"{path}: not a readable HDF5 file ({e}); expected TFF's "
                        "shakespeare_*.h5 (re-copy the file)") from None
    with f:
        ex = f.get("examples")
        if not isinstance(ex, h5py.Group):
            raise UserError(
                f"{path}: no 'examples' group; expected TFF's layout "
                "examples/<PLAY_ROLE>/snippets (is this the federated Shakespeare HDF5?)")
        out = {}
        for cid, g in ex.items():
            ds = g.get("snippets") if isinstance(g, h5py.Group) else None
            if not isinstance(ds, h5py.Dataset):
                raise UserError(
                    f"{path}: examples/{cid} has no 'snippets' dataset; expected TFF's "
                    "layout examples/<PLAY_ROLE>/snippets (an array of byte strings)")
            out[cid] = [s.decode("utf-8", "replace") if isinstance(s, bytes) else str(s)
                        for s in ds[()].reshape(-1)]
    return out


def _writable(d: str) -> bool:
    """Whether to write a cache into d (created if missing). The mode bits count
    even for root, so a directory published read-only (like shared data) is left
    alone -- nothing is created inside it either."""
    d = os.path.abspath(d)
    existing = d
    while not os.path.isdir(existing):  # the nearest existing ancestor decides
        parent = os.path.dirname(existing)
        if parent == existing:
            return False
        existing = parent
    if not (os.access(existing, os.W_OK) and os.stat(existing).st_mode & stat.S_IWUSR):
        return False
    try:
        os.makedirs(d, exist_ok=True)
    except OSError:
        return False
    return os.access(d, os.W_OK) and bool(os.stat(d).st_mode & stat.S_IWUSR)


def _write_json_atomic(path: str, obj) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".vocab-", suffix=".tmp", dir=os.path.dirname(path))
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a shared cache should be readable
        os.replace(tmp, path)  # readers see the old file or the whole new one
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def cached_vocab(key: dict, cache_dirs: list[str], build) -> tuple[list[str], str | None]:
    """The vocabulary for `key`, read from the first cache dir that has it, else
    built with `build()` and written (atomically, JSON) to the first writable dir.
    Returns (words, path of the cache file or None when nothing was writable)."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    name = f"nwp_vocab_{key['source']}_{digest}.json"
    for d in cache_dirs:
        path = os.path.join(d, name)
        try:
            with open(path) as f:
                obj = json.load(f)
            if obj.get("key") == key and isinstance(obj.get("words"), list):
                return obj["words"], path
        except (OSError, ValueError):
            pass  # missing or unreadable: rebuild below
    words, counts = build()
    for d in cache_dirs:
        if _writable(d):
            path = os.path.join(d, name)
            try:
                _write_json_atomic(path, {"key": key, "words": words, "counts": counts})
                return words, path
            except OSError:
                continue
    return words, None
