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
transition is a target exactly once). Stack Overflow (the paper's code): one
sequence per sentence, `BOS + first seq_len words + EOS` (EOS only when the
sentence is shorter), truncated to seq_len + 1 tokens. Both then as the paper's
code: pad the tokens with 0 to seq_len + 1, `x = padded[:-1]`, `y = padded[1:]`,
so a short sequence keeps its EOS in `x`, at the position whose label is pad
(the masked loss ignores it; `task.masked_loss=false` counts it). `task.max_elements_per_user` keeps each
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

import os

import numpy as np

from fedrecon_bench import schema
from fedrecon_bench.errors import UserError
from fedrecon_bench.schema import Field, positive_int
from tasks.base import ClientSet, FederatedData, KerasParts, LazyClients, Task
from tasks.nwp import stackoverflow as so
from tasks.nwp.data import (SOURCES, SPLIT_BY, TOKENIZER_VERSION, Encoder, Layout, _rows,  # noqa: F401
                            _writable, build_vocab, cached_vocab, client_examples, md5sum, oov_id,
                            read_snippets_h5, split_users, tokenize, truncated_chunk, window_chunks)
from tasks.nwp.fast_model import NwpFast


class NWP(Task):
    name = "nwp"
    metric_names = ("loss", "accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos", "num_tokens")
    headline_metric = "accuracy_no_oov"

    def __init__(self, cfg, data_dir: str, seed: int, split_seed: int | None = None):
        super().__init__(cfg, data_dir, seed, split_seed)
        self.layout = Layout(cfg.vocab_size, cfg.num_oov_buckets)

    # --- config -----------------------------------------------------------
    fields = Task.fields + (
        *(positive_int(f"task.{k}") for k in ("vocab_size", "num_oov_buckets", "seq_len", "lstm_units",
                                               "projection_dim", "batch_size")),
        positive_int("task.lstm_unroll", default=1), positive_int("task.num_layers", default=1),
        positive_int("task.max_elements_per_user", none="no cap"),
        Field("task.source", "choice", choices=SOURCES), Field("task.split_by", "choice", choices=SPLIT_BY),
        *(Field(f"task.{k}", "bool", default=True) for k in ("local_oov", "local_oov_output", "masked_loss")))

    def check_config(self) -> None:
        schema.check({"task": self.cfg}, self.fields)

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
            tr, va, te = (np.sort(p) for p in split_users(len(ids), self.data_seed))
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
               "test_md5": md5sum(paths["test"]), "split_by": c.split_by, "seed": self.data_seed,
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
        """TFF's Stack Overflow database, read lazily (tasks/nwp/stackoverflow.py): ids and
        sizes from its metadata; a client's sentences are read and tokenized when a round
        (or an evaluation chunk) needs them. The database is downloaded by TFF into the
        first cache dir that can hold it, unless one of them has it already."""
        c, lay = self.cfg, self.layout
        dirs = self._cache_dirs("stackoverflow")
        cache = next((d for d in dirs if os.path.isfile(os.path.join(d, so.DB_NAME))),
                     next((d for d in dirs if _writable(d)), dirs[-1]))
        db = so.Database(cache)
        counts = so.word_counts(cache, lay.V)  # over training users only; most frequent first
        vocab = list(counts)[:lay.V]
        enc = Encoder(vocab, lay)
        cap, n, seq_len = c.get("max_elements_per_user"), c.get("max_users"), int(c.seq_len)
        to_chunks = lambda sent: [truncated_chunk(enc.ids(sent.split()), seq_len, lay)]
        sizes = {split: so.client_sizes(db.path, split) for split in so.SPLITS}
        capped = lambda k: min(k, cap) if cap else k  # one sequence per sentence

        def clients(split, ids, part=None) -> LazyClients:
            def read(cid):
                sents = db.sentences(split, cid, cap)
                if part is not None:  # seen users: first half by date val, second half test
                    sents = sents[:len(sents) // 2] if part == 0 else sents[len(sents) // 2:]
                return client_examples(sents, to_chunks, seq_len, None)
            k = [capped(sizes[split][cid]) for cid in ids]
            if part is not None:
                k = [m // 2 if part == 0 else m - m // 2 for m in k]
            keep = [i for i, m in enumerate(k) if m > 0]  # as before: clients without data are left out
            return LazyClients([ids[i] for i in keep], [k[i] for i in keep], read)

        train_ids = sorted(sizes["train"])[:n]
        train = clients("train", train_ids)
        if c.split_by == "user":
            # Unseen users: TFF's held-out users (user_id % 10 == 0), halved by a seeded shuffle.
            held = sorted(sizes["heldout"])
            perm = np.random.default_rng([self.data_seed, 3]).permutation(len(held))
            held = [held[i] for i in perm][:2 * n if n else None]
            half = len(held) // 2
            val, test = clients("heldout", sorted(held[:half])), clients("heldout", sorted(held[half:]))
        else:
            # Seen users: the same users' posts after 2018-01-01 (TFF's test split), halved by date.
            later = sorted(set(sizes["test"]) & set(train_ids))
            val, test = clients("test", later, part=0), clients("test", later, part=1)
        info = {"source": "stackoverflow", "vocab_words": len(vocab), "num_ids": lay.num_ids,
                "open_s": round(db.open_s, 3), "database": db.path}
        return FederatedData(train, val, test, info, c.split_by)

    def fast_model(self, info: dict) -> NwpFast:
        return NwpFast(self.cfg, self.layout)

    # --- engine=tff (Keras) -----------------------------------------------------
    def client_dataset(self, ex):
        from tasks.nwp import keras_model

        return keras_model.client_dataset(ex, self.cfg.batch_size)

    def keras_parts(self, info: dict) -> KerasParts:
        from tasks.nwp import keras_model

        return keras_model.keras_parts(self.cfg, self.layout, *self.initial_weights(info))

    def loss_fn(self):
        from tasks.nwp.keras_model import MaskedCrossEntropy

        masked = bool(self.cfg.get("masked_loss", True))
        return lambda: MaskedCrossEntropy(masked, name="masked_cross_entropy")

    def metrics_fn(self):
        from tasks.nwp.keras_model import MaskedAccuracy, NumTokens

        V, K = self.layout.V, self.layout.K
        return lambda: [
            MaskedAccuracy(V, K, name="accuracy"),
            MaskedAccuracy(V, K, mask_oov=True, name="accuracy_no_oov"),
            MaskedAccuracy(V, K, mask_oov=True, mask_eos=True, name="accuracy_no_oov_no_eos"),
            NumTokens(name="num_tokens"),
        ]
