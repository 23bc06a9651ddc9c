"""Next-word prediction with local out-of-vocabulary (OOV) embeddings (issue #5).

Each user keeps its own embeddings for the words outside the shared vocabulary:
the K OOV-bucket rows of the input embedding are FedRecon *local* variables,
reconstructed on the device and never sent to the server; everything else is
global. The model is the FedRecon paper's Stack Overflow LSTM.

Token ids (a fixed layout; V = `task.vocab_size`, K = `task.num_oov_buckets`):

    0              pad (masked in the loss and in every metric)
    1 .. V         vocabulary words, most frequent first (ties: alphabetical)
    V+1 .. V+K     OOV buckets: word w goes to V+1 + (md5(w) mod K) (see `oov_id`)
    V+K+1          BOS, the first input of every sequence (never a label)
    V+K+2          EOS, the label after a snippet's last word

so the logits cover V+K+3 ids. (The paper's public code keeps `id < V+3` global
and `id >= V+3` local, which puts the first two OOV buckets in the global
embedding and BOS/EOS in the local one; here the boundary is the layout's.)

The vocabulary is the V most frequent words of the TRAINING clients only (val
and test clients never contribute). If those clients have fewer than V distinct
words, the remaining word ids are simply never produced. The OOV hash is the
first 8 bytes of the word's UTF-8 md5 (big-endian) mod K, the same in every
process and on every machine (Python's `hash()` is salted per process).

Tokenizer (Shakespeare): lowercase, then a word is a maximal run of letters or
digits, optionally joined by single apostrophes inside it (`master's`, `o'er`,
`i'll` are one word each). Everything else -- whitespace and punctuation
including hyphens and leading/trailing apostrophes -- separates words and is
dropped. Stack Overflow text is already tokenized by TFF (lowercased,
punctuation as separate tokens), so it is split on spaces as the paper does.

Sequences. Shakespeare: each snippet (one line of dialogue) becomes
`BOS w1 .. wn EOS` and is cut into windows of `seq_len + 1` tokens taken every
`seq_len` tokens (consecutive windows share one token, so every next-word
transition is a target exactly once); `x` is the first `seq_len` tokens of a
window, `y` the last `seq_len` (x shifted by one), both right-padded with 0.
Stack Overflow (the paper's code): one sequence per sentence,
`BOS + first seq_len words + EOS` (EOS only when the sentence is shorter),
truncated to seq_len + 1 tokens. `task.max_elements_per_user` keeps each
client's first N sequences (Shakespeare, in play order) or first N sentences
(Stack Overflow, then sorted by creation date, as the paper's code does).

Model: input embedding (global part for ids outside V+1..V+K, local part with
exactly K rows for the OOV ids, selected per token), LSTM(`lstm_units`,
return sequences), Dense projection to `projection_dim`, Dense logits over all
V+K+3 ids. `task.local_oov_output=true` also splits the logits layer: the K
OOV columns come from a local Dense, the other V+3 from a global one.
`task.local_oov=false` keeps the same architecture with every layer global
(the all-global / FedAvg-style comparison). No Keras masking is needed: pads
only ever follow a sequence's real tokens and the LSTM reads left to right.

Loss and metrics (all keras, aggregated across clients by summing their
variables, then dividing; pad positions excluded everywhere):

    loss                    cross-entropy of the logits vs the true next id,
                            averaged over the batch's non-pad positions; TFF
                            reports the mean of that over batches (as for MovieLens)
    accuracy                argmax == label, over positions whose label != pad
                            (OOV labels included: predicting the right bucket counts)
    accuracy_no_oov         same, over positions whose label is neither pad nor an
                            OOV bucket; predicting an OOV bucket there is simply wrong
                            (TFF/paper `accuracy_no_oov`)
    accuracy_no_oov_no_eos  same, also excluding EOS labels (paper
                            `accuracy_no_oov_or_eos`; BOS is never a label)
    num_tokens              the number of non-pad label positions
"""
from __future__ import annotations

import collections
import hashlib
import json
import os
import re
import stat
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import tensorflow as tf

from fedrecon_bench.errors import UserError
from fedrecon_bench.fast.model import FastModel, masked_mean
from tasks.base import ClientSet, FederatedData, KerasParts, Task
from tasks.movielens import md5sum, split_users

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
    """Token chunks of length <= seq_len + 1 -> right-padded x (chunk[:-1]) and y (chunk[1:])."""
    x = np.zeros((len(chunks), seq_len), np.int64)
    y = np.zeros((len(chunks), seq_len), np.int64)
    for r, chunk in enumerate(chunks):
        x[r, :len(chunk) - 1] = chunk[:-1]
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


class NWP(Task):
    name = "nwp"
    metric_names = ("loss", "accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos", "num_tokens")
    headline_metric = "accuracy_no_oov"

    def __init__(self, cfg, data_dir: str, seed: int):
        super().__init__(cfg, data_dir, seed)
        self.layout = Layout(cfg.vocab_size, cfg.num_oov_buckets)

    # --- config -----------------------------------------------------------
    def check_config(self) -> None:
        c = self.cfg
        for key in ("vocab_size", "num_oov_buckets", "seq_len", "embedding_dim",
                    "lstm_units", "projection_dim", "batch_size", "lstm_unroll"):
            v = c.get(key)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise UserError(f"task.{key}={v!r} must be an integer >= 1")
        for key in ("max_elements_per_user", "max_users"):
            v = c.get(key)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise UserError(f"task.{key}={v!r} must be an integer >= 1 or null (no cap)")
        if c.source not in SOURCES:
            raise UserError(f"task.source={c.source!r} is unknown; use one of {', '.join(SOURCES)}")
        if c.split_by not in SPLIT_BY:
            raise UserError(f"task.split_by={c.split_by!r} is unknown; use one of {', '.join(SPLIT_BY)}")
        for key in ("local_oov", "local_oov_output"):
            if not isinstance(c.get(key), bool):
                raise UserError(f"task.{key}={c.get(key)!r} must be true or false")

    # --- data -------------------------------------------------------------
    def load(self) -> FederatedData:
        self.check_config()
        if self.cfg.source == "stackoverflow":
            return self._load_stackoverflow()
        return self._load_shakespeare()

    def _cache_dirs(self, sub: str) -> list[str]:
        if self.cfg.get("cache_dir"):
            return [os.path.expanduser(str(self.cfg.cache_dir))]
        return [os.path.join(os.path.expanduser(self.data_dir), sub),
                os.path.join(os.path.expanduser("~/.cache/fedrecon_bench"), sub)]

    def _load_shakespeare(self) -> FederatedData:
        c, lay = self.cfg, self.layout
        root = os.path.join(os.path.expanduser(self.data_dir), "shakespeare")
        paths = {s: os.path.join(root, f"shakespeare_{s}.h5") for s in ("train", "test")}
        raw = {s: read_snippets_h5(p) for s, p in paths.items()}
        ids = sorted(cid for cid, snips in raw["train"].items() if snips)  # roles with train data
        if c.get("max_users"):
            ids = ids[:c.max_users]
        if not ids:
            raise UserError(f"{paths['train']}: no client has any snippet; expected TFF's "
                            "federated Shakespeare")
        words = {s: {cid: [tokenize(t) for t in raw[s].get(cid, [])] for cid in ids}
                 for s in ("train", "test")}

        if c.split_by == "user":
            tr, va, te = (np.sort(p) for p in split_users(len(ids), self.seed))
            groups = {"train": [ids[i] for i in tr], "val": [ids[i] for i in va],
                      "test": [ids[i] for i in te]}
            # Unseen users: a client's whole data (train + test snippets) is in one population.
            data = {name: {cid: words["train"][cid] + words["test"][cid] for cid in members}
                    for name, members in groups.items()}
        else:
            data = {"train": {cid: words["train"][cid] for cid in ids}, "val": {}, "test": {}}
            for cid in ids:  # seen users: the test snippets, first half val, second half test
                t = words["test"][cid]
                data["val"][cid], data["test"][cid] = t[:len(t) // 2], t[len(t) // 2:]

        key = {"source": "shakespeare", "train_md5": md5sum(paths["train"]),
               "test_md5": md5sum(paths["test"]), "split_by": c.split_by, "seed": self.seed,
               "vocab_size": lay.V, "max_users": c.get("max_users"),
               "tokenizer": TOKENIZER_VERSION}
        vocab, vocab_file = cached_vocab(
            key, self._cache_dirs("shakespeare"),
            lambda: build_vocab((w for snips in data["train"].values() for w in snips), lay.V))
        enc = Encoder(vocab, lay)

        seq_len, cap = int(c.seq_len), c.get("max_elements_per_user")  # plain ints: hot loop
        to_chunks = lambda words: window_chunks(enc.ids(words), seq_len, lay)

        def client_set(clients: dict) -> ClientSet:
            out_ids, examples = [], []
            for cid, snips in clients.items():
                ex = client_examples(snips, to_chunks, seq_len, cap)
                if len(ex["x"]):
                    out_ids.append(cid)
                    examples.append(ex)
            return ClientSet(out_ids, examples)

        sets = {name: client_set(data[name]) for name in ("train", "val", "test")}
        info = {"source": "shakespeare", "vocab_words": len(vocab), "vocab_file": vocab_file,
                "num_ids": lay.num_ids}
        return FederatedData(sets["train"], sets["val"], sets["test"], info, c.split_by)

    def _load_stackoverflow(self) -> FederatedData:
        """TFF's Stack Overflow (downloaded by TFF into the cache dir). Every
        client is read eagerly: the full 342K-user training set takes hours, so
        `task.max_users` caps each population for anything but the paper run."""
        c, lay = self.cfg, self.layout
        cache = self._cache_dirs("stackoverflow")
        cache = next((d for d in cache if _writable(d)), cache[-1])
        train_cd, heldout_cd, test_cd, counts = load_stackoverflow_raw(cache, lay.V)
        vocab = list(counts.keys())[:lay.V]  # word counts are over training users only
        enc = Encoder(vocab, lay)
        cap, n, seq_len = c.get("max_elements_per_user"), c.get("max_users"), int(c.seq_len)
        to_chunks = lambda sent: [truncated_chunk(enc.ids(sent.split()), seq_len, lay)]

        def client_set(cd, ids, part=None) -> ClientSet:
            out_ids, examples = [], []
            for cid in ids:
                sents = stackoverflow_client_sentences(cd, cid, cap)
                if part is not None:  # seen users: first half by date val, second half test
                    sents = sents[:len(sents) // 2] if part == 0 else sents[len(sents) // 2:]
                ex = client_examples(sents, to_chunks, seq_len, None)
                if len(ex["x"]):
                    out_ids.append(cid)
                    examples.append(ex)
            return ClientSet(out_ids, examples)

        train_ids = sorted(train_cd.client_ids)[:n]
        train = client_set(train_cd, train_ids)
        if c.split_by == "user":
            # Unseen users: TFF's held-out users (user_id % 10 == 0), halved by a seeded shuffle.
            held = sorted(heldout_cd.client_ids)
            perm = np.random.default_rng([self.seed, 3]).permutation(len(held))
            held = [held[i] for i in perm][:2 * n if n else None]
            half = len(held) // 2
            val, test = client_set(heldout_cd, sorted(held[:half])), client_set(heldout_cd, sorted(held[half:]))
        else:
            # Seen users: the same users' posts after 2018-01-01 (TFF's test split), halved by date.
            later = sorted(set(test_cd.client_ids) & set(train_ids))
            val, test = client_set(test_cd, later, part=0), client_set(test_cd, later, part=1)
        info = {"source": "stackoverflow", "vocab_words": len(vocab), "num_ids": lay.num_ids}
        return FederatedData(train, val, test, info, c.split_by)

    def client_dataset(self, ex):
        return tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
            x=ex["x"], y=ex["y"])).batch(self.cfg.batch_size)

    # --- model ------------------------------------------------------------
    def keras_parts(self, info: dict) -> KerasParts:
        c, lay = self.cfg, self.layout
        init = lambda k: tf.keras.initializers.RandomUniform(-0.05, 0.05, seed=self.seed * 1000 + k)
        glorot = lambda k: tf.keras.initializers.GlorotUniform(seed=self.seed * 1000 + k)
        tokens = tf.keras.layers.Input(shape=(None,), dtype=tf.int64, name="tokens")
        g_emb = GlobalTokenEmbedding(lay.V, lay.K, c.embedding_dim, init(1), name="embedding_global")
        l_emb = LocalOOVEmbedding(lay.V, lay.K, c.embedding_dim, init(2), name="embedding_oov_local")
        emb = SelectOOV(lay.V, lay.K, name="token_embedding")([tokens, g_emb(tokens), l_emb(tokens)])
        lstm = tf.keras.layers.LSTM(
            c.lstm_units, return_sequences=True, kernel_initializer=glorot(3),
            recurrent_initializer=tf.keras.initializers.Orthogonal(seed=self.seed * 1000 + 4),
            name="lstm")
        proj = tf.keras.layers.Dense(c.projection_dim, kernel_initializer=glorot(5), name="projection")
        h = proj(lstm(emb))
        global_layers, local_layers = [g_emb, lstm, proj], [l_emb]
        if c.local_oov_output:
            g_out = tf.keras.layers.Dense(lay.V + 3, kernel_initializer=glorot(6), name="logits_global")
            l_out = tf.keras.layers.Dense(lay.K, kernel_initializer=glorot(7), name="logits_oov_local")
            logits = MergeOOVLogits(lay.V, lay.K, name="logits")([g_out(h), l_out(h)])
            global_layers.append(g_out)
            local_layers.append(l_out)
        else:
            out = tf.keras.layers.Dense(lay.num_ids, kernel_initializer=glorot(6), name="logits")
            logits = out(h)
            global_layers.append(out)
        if not c.local_oov:  # same model, nothing local: the all-global baseline
            global_layers, local_layers = global_layers + local_layers, []
        model = tf.keras.Model(inputs=tokens, outputs=logits)
        spec = collections.OrderedDict(x=tf.TensorSpec([None, c.seq_len], tf.int64),
                                       y=tf.TensorSpec([None, c.seq_len], tf.int64))
        return KerasParts(model, global_layers, local_layers, spec)

    # --- loss and metrics ---------------------------------------------------
    def loss_fn(self):
        return lambda: MaskedCrossEntropy(name="masked_cross_entropy")

    def metrics_fn(self):
        V, K = self.layout.V, self.layout.K
        return lambda: [
            MaskedAccuracy(V, K, name="accuracy"),
            MaskedAccuracy(V, K, mask_oov=True, name="accuracy_no_oov"),
            MaskedAccuracy(V, K, mask_oov=True, mask_eos=True, name="accuracy_no_oov_no_eos"),
            NumTokens(name="num_tokens"),
        ]

    # --- the same model for engine=fast ---------------------------------------
    def fast_model(self, info: dict) -> "NwpFast":
        return NwpFast(self.cfg, self.layout)


class NwpFast(FastModel):
    """keras_parts' model, loss and metrics in JAX (fedrecon_bench/fast/model.py).
    All parameters are dense (no `sparse`): the logits layer reads every id's column
    for every token anyway."""
    client_mode = "sequential"  # measured: clients one after another beat batched small matmuls on CPU

    ACCURACIES = {"accuracy": (False, False), "accuracy_no_oov": (True, False),
                  "accuracy_no_oov_no_eos": (True, True)}  # name: (mask_oov, mask_eos)

    def __init__(self, c, layout: Layout):
        self.V, self.K, self.batch_size = layout.V, layout.K, int(c.batch_size)
        self.unroll = int(c.get("lstm_unroll", 1))
        self.split_output = bool(c.local_oov_output)
        out = ("logits_global", "logits_oov_local") if self.split_output else ("logits", None)
        dense = lambda n: (f"{n}/kernel", f"{n}/bias")
        # The order of keras_parts' layers and, within each, of its trainable weights.
        glob = ("embedding_global", "lstm/kernel", "lstm/recurrent_kernel", "lstm/bias",
                *dense("projection"), *dense(out[0]))
        loc = ("embedding_oov_local",) + (dense(out[1]) if self.split_output else ())
        self.global_names, self.local_names = (glob, loc) if c.local_oov else (glob + loc, ())

    def inputs(self, ex):
        return {"x": ex["x"].astype(np.int32), "y": ex["y"].astype(np.int32)}

    def predict(self, p, batch, train=False, rng=None):
        V, K, ids = self.V, self.K, batch["x"]
        # GlobalTokenEmbedding / LocalOOVEmbedding / SelectOOV: unselected rows get no gradient.
        g = p["embedding_global"][jnp.where(ids > V + K, ids - K, jnp.clip(ids, 0, V))]
        loc = p["embedding_oov_local"][jnp.clip(ids - (V + 1), 0, K - 1)]
        emb = jnp.where(self._is_oov(ids)[..., None], loc, g)
        h = _lstm(p["lstm/kernel"], p["lstm/recurrent_kernel"], p["lstm/bias"], emb, self.unroll)
        h = h @ p["projection/kernel"] + p["projection/bias"]
        if not self.split_output:
            return h @ p["logits/kernel"] + p["logits/bias"]
        gl = h @ p["logits_global/kernel"] + p["logits_global/bias"]
        ll = h @ p["logits_oov_local/kernel"] + p["logits_oov_local/bias"]
        return jnp.concatenate([gl[..., :V + 1], ll, gl[..., V + 1:]], axis=-1)  # MergeOOVLogits

    def _is_oov(self, ids):
        return (ids >= self.V + 1) & (ids <= self.V + self.K)

    def _keep(self, batch):
        """Label positions that count: not pad, and not in a padding sequence."""
        return (batch["y"] != 0) & (batch["mask"][:, None] > 0)

    def loss(self, batch, logits):
        y = batch["y"]
        ce = -jnp.take_along_axis(jax.nn.log_softmax(logits), y[..., None], axis=-1)[..., 0]
        return masked_mean(ce, self._keep(batch).astype(ce.dtype))

    def stats(self, batch, logits):
        y, keep = batch["y"], self._keep(batch)
        hit = jnp.argmax(logits, axis=-1) == y
        count = lambda a: jnp.sum(a, dtype=jnp.float32)  # the engine tallies in float32
        out = {"num_tokens": count(keep)}
        for name, (mask_oov, mask_eos) in self.ACCURACIES.items():
            k = keep
            if mask_oov:
                k = k & ~self._is_oov(y)
            if mask_eos:
                k = k & (y != self.V + self.K + 2)
            out[f"{name}/hits"], out[f"{name}/count"] = count(hit & k), count(k)
        return out

    def metrics(self, s):
        ratio = lambda hits, count: float(hits) / float(count) if count else 0.0  # Keras: divide_no_nan
        out = {n: ratio(s[f"{n}/hits"], s[f"{n}/count"]) for n in self.ACCURACIES}
        return {**out, "num_tokens": int(round(float(s["num_tokens"])))}


def _lstm(kernel, recurrent_kernel, bias, x, unroll: int = 1):
    """Keras LSTM(return_sequences=True) from zero states: gates i, f, c, o;
    tanh activation, sigmoid recurrent activation. x [bs, T, in] -> [bs, T, units].
    unroll: time steps per loop iteration (seq_len = fully unrolled)."""
    units = recurrent_kernel.shape[0]
    zx = jnp.swapaxes(x @ kernel + bias, 0, 1)  # input projections of all steps at once: [T, bs, 4u]

    def step(carry, z):
        h, c = carry
        i, f, g, o = jnp.split(z + h @ recurrent_kernel, 4, axis=-1)
        c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
        h = jax.nn.sigmoid(o) * jnp.tanh(c)
        return (h, c), h

    zeros = jnp.zeros((x.shape[0], units), zx.dtype)
    _, hs = jax.lax.scan(step, (zeros, zeros), zx, unroll=unroll)
    return jnp.swapaxes(hs, 0, 1)


# --------------------------------------------------------------------------
# Stack Overflow (TFF's download; not available offline)
# --------------------------------------------------------------------------
def load_stackoverflow_raw(cache_dir: str, vocab_size: int):
    """(train, heldout, test ClientData, word counts) or a one-line UserError."""
    import tensorflow_federated as tff

    so = tff.simulation.datasets.stackoverflow
    try:
        train, heldout, test = so.load_data(cache_dir=cache_dir)
        counts = so.load_word_counts(cache_dir=cache_dir, vocab_size=vocab_size)
    except Exception as e:  # TFF raises URLError, plain Exception, OSError, ... when offline
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UserError(
            f"task.source=stackoverflow: could not download or open TFF's Stack Overflow data "
            f"in {cache_dir} ({type(e).__name__}: {msg}); it needs internet access once (several GB), "
            "or use task.source=shakespeare") from None
    return train, heldout, test, counts


def _date_key(date: bytes | str) -> int:
    """'2009-06-15 13:45:30.1 UTC' -> 20090615134530 (the paper's integer date key)."""
    d = date.decode() if isinstance(date, bytes) else date
    return int(d[0:4] + d[5:7] + d[8:10] + d[11:13] + d[14:16] + d[17:19])


def stackoverflow_client_sentences(client_data, client_id, cap: int | None) -> list[str]:
    """A client's first `cap` sentences, then stably sorted by creation date (the
    paper's `take(max_elements)` then `_sort_examples_by_date`)."""
    ds = client_data.create_tf_dataset_for_client(client_id)
    if cap:
        ds = ds.take(cap)
    rows = [(_date_key(e["creation_date"]), e["tokens"].decode("utf-8", "replace"))
            for e in ds.as_numpy_iterator()]
    order = sorted(range(len(rows)), key=lambda i: rows[i][0])  # sorted() is stable
    return [rows[i][1] for i in order]


# --------------------------------------------------------------------------
# Keras layers: the embedding and the logits split at the OOV rows
# --------------------------------------------------------------------------
def _is_oov(ids, V: int, K: int):
    return tf.logical_and(ids >= V + 1, ids <= V + K)


class GlobalTokenEmbedding(tf.keras.layers.Layer):
    """V+3 rows: pad and words (ids 0..V) then BOS, EOS (ids V+K+1, V+K+2 -> rows V+1, V+2).
    OOV ids read a clipped row that `SelectOOV` discards."""

    def __init__(self, V, K, dim, initializer, **kw):
        super().__init__(**kw)
        self.V, self.K, self.dim = V, K, dim
        self.initializer = tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.V + 3, self.dim),
                                          initializer=self.initializer, trainable=True)

    def call(self, ids):
        ids = tf.cast(ids, tf.int64)
        rows = tf.where(ids > self.V + self.K, ids - self.K, tf.clip_by_value(ids, 0, self.V))
        return tf.gather(self.embeddings, rows)


class LocalOOVEmbedding(tf.keras.layers.Layer):
    """Exactly K rows, one per OOV bucket (id V+1+j -> row j); other ids read a
    clipped row that `SelectOOV` discards."""

    def __init__(self, V, K, dim, initializer, **kw):
        super().__init__(**kw)
        self.V, self.K, self.dim = V, K, dim
        self.initializer = tf.keras.initializers.get(initializer)

    def build(self, input_shape):
        self.embeddings = self.add_weight(name="embeddings", shape=(self.K, self.dim),
                                          initializer=self.initializer, trainable=True)

    def call(self, ids):
        rows = tf.clip_by_value(tf.cast(ids, tf.int64) - (self.V + 1), 0, self.K - 1)
        return tf.gather(self.embeddings, rows)


class SelectOOV(tf.keras.layers.Layer):
    """Per token: the local embedding for OOV ids, the global one otherwise. The
    unselected branch gets no gradient, so OOV tokens never touch global rows."""

    def __init__(self, V, K, **kw):
        super().__init__(**kw)
        self.V, self.K = V, K

    def call(self, inputs):
        ids, global_vec, local_vec = inputs
        oov = _is_oov(tf.cast(ids, tf.int64), self.V, self.K)[..., None]
        return tf.where(oov, local_vec, global_vec)


class MergeOOVLogits(tf.keras.layers.Layer):
    """Full logits in id order from V+3 global columns (pad, words, BOS, EOS) and
    K local OOV columns: [global 0..V | local V+1..V+K | global BOS, EOS]."""

    def __init__(self, V, K, **kw):
        super().__init__(**kw)
        self.V, self.K = V, K

    def call(self, inputs):
        g, l = inputs
        return tf.concat([g[..., :self.V + 1], l, g[..., self.V + 1:]], axis=-1)


# --------------------------------------------------------------------------
# Loss and metrics
# --------------------------------------------------------------------------
class MaskedCrossEntropy(tf.keras.losses.Loss):
    """Mean softmax cross-entropy over the non-pad label positions of a batch.
    TFF calls the loss without sample weights, so the pad mask lives here."""

    def __call__(self, y_true, y_pred, sample_weight=None):
        y = tf.cast(y_true, tf.int64)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tf.cast(y_pred, tf.float32))
        w = tf.cast(tf.not_equal(y, 0), ce.dtype)
        return tf.math.divide_no_nan(tf.reduce_sum(ce * w), tf.reduce_sum(w))

    def call(self, y_true, y_pred):  # per-position values (pads 0), for completeness
        y = tf.cast(y_true, tf.int64)
        ce = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=y_pred)
        return ce * tf.cast(tf.not_equal(y, 0), ce.dtype)


class MaskedAccuracy(tf.keras.metrics.Mean):
    """argmax(logits) == label over the label positions not masked (pad always;
    OOV buckets with mask_oov; EOS with mask_eos). Variables: hits, positions."""

    def __init__(self, vocab_size, num_oov_buckets, mask_oov=False, mask_eos=False,
                 name="accuracy", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.vocab_size, self.num_oov_buckets = int(vocab_size), int(num_oov_buckets)
        self.mask_oov, self.mask_eos = bool(mask_oov), bool(mask_eos)

    def update_state(self, y_true, y_pred, sample_weight=None):
        V, K = self.vocab_size, self.num_oov_buckets
        y = tf.cast(y_true, tf.int64)
        keep = tf.not_equal(y, 0)
        if self.mask_oov:
            keep = tf.logical_and(keep, tf.logical_not(_is_oov(y, V, K)))
        if self.mask_eos:
            keep = tf.logical_and(keep, tf.not_equal(y, V + K + 2))
        hit = tf.cast(tf.equal(tf.argmax(y_pred, axis=-1, output_type=tf.int64), y), tf.float32)
        return super().update_state(hit, sample_weight=tf.cast(keep, tf.float32))

    def get_config(self):
        return {**super().get_config(), "vocab_size": self.vocab_size,
                "num_oov_buckets": self.num_oov_buckets, "mask_oov": self.mask_oov,
                "mask_eos": self.mask_eos}


class NumTokens(tf.keras.metrics.Sum):
    """The number of non-pad label positions (int64: exact at Stack Overflow scale)."""

    def __init__(self, name="num_tokens", dtype=tf.int64):
        super().__init__(name=name, dtype=dtype)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(tf.cast(tf.not_equal(tf.cast(y_true, tf.int64), 0), tf.int64))
