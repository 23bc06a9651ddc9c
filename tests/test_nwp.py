"""Next-word prediction (tasks/nwp.py): id layout, tokenizer, vocabulary, HDF5
loader, the local/global partition id by id, masked metrics by hand, Stack
Overflow's offline failure and date ordering, and a short real-data run."""
import hashlib
import json
import math
import os
import pathlib
import subprocess
import sys
import urllib.error

import h5py
import numpy as np
import pytest
try:
    import tensorflow as tf
except ImportError:  # the TF-free `modern` environment: the tests using it are marked tff
    tf = None
from omegaconf import OmegaConf

from conftest import ROOT, compose
from fedrecon_bench.errors import UserError
from tasks import nwp
from tasks.movielens import split_users

# V=3 words, K=2 buckets: pad 0 | words 1..3 | OOV 4, 5 | BOS 6 | EOS 7
V, K = 3, 2


def _cfg(**kw):
    base = dict(name="nwp", source="shakespeare", split_by="user", vocab_size=V,
                num_oov_buckets=K, seq_len=4, max_elements_per_user=None, max_users=None,
                batch_size=2, embedding_dim=2, lstm_units=3, projection_dim=2,
                local_oov=True, local_oov_output=False, cache_dir=None)
    base.update(kw)
    return OmegaConf.create(base)


def _task(tmp_path=None, seed=0, **kw):
    if tmp_path is not None:
        kw.setdefault("cache_dir", str(tmp_path / "cache"))
    return nwp.NWP(_cfg(**kw), data_dir=str(tmp_path or "unused"), seed=seed)


# --------------------------------------------------------------------------
# Tokenizer, id layout, hashing
# --------------------------------------------------------------------------
def test_tokenizer_lowercases_and_splits_on_whitespace_and_punctuation():
    assert nwp.tokenize("Yonder comes my master's brother-- O'er 'tis FOUR-score!\nEnd.") == [
        "yonder", "comes", "my", "master's", "brother", "o'er", "tis", "four", "score", "end"]
    assert nwp.tokenize("  ,.;!  ") == []


def test_id_layout_covers_every_range_on_a_tiny_corpus():
    lay = nwp.Layout(V, K)
    assert (lay.pad, lay.oov_first, lay.oov_last, lay.bos, lay.eos, lay.num_ids) == (0, 4, 5, 6, 7, 8)
    vocab, counts = nwp.build_vocab([["b", "a", "c", "b"], ["a", "b", "d", "zz"]], V)
    assert vocab == ["b", "a", "c"] and counts == [3, 2, 1]  # ties ("c","d","zz" once) alphabetical
    enc = nwp.Encoder(vocab, lay)
    ids = enc.ids(["b", "a", "c", "d", "zz"])
    assert ids[:3] == [1, 2, 3]
    assert ids[3:] == [nwp.oov_id("d", lay), nwp.oov_id("zz", lay)]
    assert all(4 <= i <= 5 for i in ids[3:])
    # seq_len=4: BOS b a c d zz EOS (7 tokens) -> windows [0:5], [4:7]; pad 0 after, then
    # x = padded[:-1] (the paper's construction: the short window keeps EOS in x).
    chunks = nwp.window_chunks(ids, 4, lay)
    rows = nwp._rows(chunks, 4)
    d, zz = ids[3:]
    np.testing.assert_array_equal(rows["x"], [[6, 1, 2, 3], [d, zz, 7, 0]])
    np.testing.assert_array_equal(rows["y"], [[1, 2, 3, d], [zz, 7, 0, 0]])
    # An empty snippet is BOS -> EOS; an exact fit leaves no empty trailing window.
    np.testing.assert_array_equal(nwp._rows(nwp.window_chunks([], 4, lay), 4)["y"], [[7, 0, 0, 0]])
    assert len(nwp.window_chunks([1, 2, 3], 4, lay)) == 1
    # Stack Overflow, the paper's truncation: EOS only when the sentence is shorter than seq_len.
    assert nwp.truncated_chunk([1, 2], 4, lay) == [6, 1, 2, 7]
    assert nwp.truncated_chunk([1, 2, 3, 1, 2], 4, lay) == [6, 1, 2, 3, 1]


def test_oov_hash_is_md5_based_and_stable_across_processes():
    lay = nwp.Layout(10000, 500)
    words = ["hamlet", "ophelia", "zounds", "naïve", "o'er"]
    here = [nwp.oov_id(w, lay) for w in words]
    md5 = [10001 + int.from_bytes(hashlib.md5(w.encode()).digest()[:8], "big") % 500 for w in words]
    assert here == md5
    code = ("import json; from tasks import nwp; lay = nwp.Layout(10000, 500); "
            f"print(json.dumps([nwp.oov_id(w, lay) for w in {words!r}]))")
    env = dict(os.environ, PYTHONHASHSEED="12345", TF_CPP_MIN_LOG_LEVEL="3")  # a different salt
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == here


# --------------------------------------------------------------------------
# HDF5 loader and vocabulary
# --------------------------------------------------------------------------
def _write_h5(path, clients: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        for cid, snippets in clients.items():
            f.create_dataset(f"examples/{cid}/snippets", data=np.array(
                [s.encode() for s in snippets], dtype=f"S{max(1, max(map(len, snippets)))}"))


@pytest.fixture
def tiny_shakespeare(tmp_path):
    """10 roles; role i says 'the king' and its own word own{i}, i+1 times; its test
    snippets add 'test{i}'. ROLE_0 has 3 test snippets (for the per-example split)."""
    train = {f"PLAY_ROLE_{i}": [f"The king! own{i}" for _ in range(i + 1)] for i in range(10)}
    test = {f"PLAY_ROLE_{i}": [f"test{i}, the king."] for i in range(10)}
    test["PLAY_ROLE_0"] = ["t0a the", "t0b the", "t0c the"]
    test["ONLY_IN_TEST"] = ["never a client"]
    _write_h5(tmp_path / "shakespeare" / "shakespeare_train.h5", train)
    _write_h5(tmp_path / "shakespeare" / "shakespeare_test.h5", test)
    return tmp_path


def _vocab(data):
    return json.loads(pathlib.Path(data.info["vocab_file"]).read_text())["words"]


def test_user_split_vocabulary_comes_only_from_training_clients(tiny_shakespeare):
    t = _task(tiny_shakespeare, vocab_size=50, num_oov_buckets=7, seed=1)
    data = t.load()
    ids = sorted(f"PLAY_ROLE_{i}" for i in range(10))
    tr, va, te = split_users(10, 1)
    assert data.train.ids == [ids[i] for i in sorted(tr)]
    assert data.val.ids == [ids[i] for i in sorted(va)] and data.test.ids == [ids[i] for i in sorted(te)]
    assert len(data.train) == 8 and len(data.val) == 1 and len(data.test) == 1
    train_words = {"the", "king"} | {f"own{c[-1]}" for c in data.train.ids} | {
        f"test{c[-1]}" for c in data.train.ids if c != "PLAY_ROLE_0"}
    if "PLAY_ROLE_0" in data.train.ids:
        train_words |= {"t0a", "t0b", "t0c"}
    assert set(_vocab(data)) == train_words  # nothing of the val/test speakers
    # A val speaker's own word is an OOV bucket in its examples, never a word id.
    (vid,) = data.val.ids
    own = nwp.oov_id(f"own{vid[-1]}", t.layout)
    assert own in data.val.examples[0]["x"]
    # Unseen users: the val client's data is its train + test snippets.
    n_train, n_test = int(vid[-1]) + 1, 3 if vid == "PLAY_ROLE_0" else 1
    assert len(data.val.examples[0]["x"]) == n_train + n_test  # one window per snippet


def test_example_split_and_exact_sequences(tiny_shakespeare):
    t = _task(tiny_shakespeare, vocab_size=4, num_oov_buckets=3, split_by="example")
    data = t.load()
    assert data.split_by == "example" and len(data.train) == 10
    vocab = _vocab(data)
    assert vocab[:2] == ["king", "the"]  # 55 each, alphabetical; then own9 (10x), own8 (9x)
    assert vocab[2:] == ["own9", "own8"]
    assert not any(w.startswith(("test", "t0")) for w in vocab)  # test snippets never count
    lay = t.layout  # V=4, K=3: OOV 5..7, BOS 8, EOS 9
    # ROLE_9's 10 train snippets "The king! own9" -> BOS the king own9 EOS: one window each.
    ex = data.train.examples[data.train.index_of("PLAY_ROLE_9")]
    np.testing.assert_array_equal(ex["x"], [[8, 2, 1, 3]] * 10)
    np.testing.assert_array_equal(ex["y"], [[2, 1, 3, 9]] * 10)
    # Seen users: test snippets halved; ROLE_0's 3 -> 1 val, 2 test; 1-snippet roles test only.
    assert data.val.ids == ["PLAY_ROLE_0"] and len(data.test) == 10
    t0a = nwp.oov_id("t0a", lay)
    # x = padded[:-1] (the paper's construction): EOS stays in x where the label is pad
    np.testing.assert_array_equal(data.val.examples[0]["x"], [[8, t0a, 2, 9]])
    np.testing.assert_array_equal(data.val.examples[0]["y"], [[t0a, 2, 9, 0]])
    assert data.test.num_examples == 2 + 9
    # The cap keeps each client's first sequences.
    capped = _task(tiny_shakespeare, vocab_size=4, num_oov_buckets=3, split_by="example",
                   max_elements_per_user=3).load()
    ex9 = capped.train.examples[capped.train.index_of("PLAY_ROLE_9")]
    np.testing.assert_array_equal(ex9["x"], ex["x"][:3])


def test_vocabulary_is_cached_as_json_and_keyed(tiny_shakespeare, monkeypatch):
    first = _task(tiny_shakespeare, vocab_size=5).load()
    path = pathlib.Path(first.info["vocab_file"])
    assert path.parent == tiny_shakespeare / "cache" and path.suffix == ".json"
    monkeypatch.setattr(nwp, "build_vocab", lambda *a: pytest.fail("cache not used"))
    again = _task(tiny_shakespeare, vocab_size=5).load()
    assert again.info["vocab_file"] == str(path)
    monkeypatch.undo()
    other = _task(tiny_shakespeare, vocab_size=6).load()  # another V: another file
    assert other.info["vocab_file"] != str(path) and len(_vocab(other)) == 6
    seed2 = _task(tiny_shakespeare, vocab_size=5, seed=2).load()  # another split: another file
    assert seed2.info["vocab_file"] != str(path)


def test_vocabulary_cache_skips_a_read_only_data_dir(tiny_shakespeare, monkeypatch, tmp_path):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    shak = tiny_shakespeare / "shakespeare"
    os.chmod(shak, 0o555)  # published read-only; root could still write, the mode bits decide
    try:
        data = _task(tiny_shakespeare, cache_dir=None).load()
    finally:
        os.chmod(shak, 0o755)
    assert data.info["vocab_file"].startswith(str(home / ".cache" / "fedrecon_bench" / "shakespeare"))
    assert sorted(p.name for p in shak.iterdir()) == ["shakespeare_test.h5", "shakespeare_train.h5"]
    writable = _task(tiny_shakespeare, cache_dir=None, vocab_size=4).load()  # new key: built, written
    assert pathlib.Path(writable.info["vocab_file"]).parent == shak


@pytest.mark.parametrize("layout,expect", [
    ("no_examples", "no 'examples' group"),
    ("no_snippets", "examples/ROLE has no 'snippets' dataset"),
    ("client_is_dataset", "examples/ROLE has no 'snippets' dataset"),
    ("not_hdf5", "not a readable HDF5 file"),
    ("missing", "file not found"),
])
def test_wrong_hdf5_layout_is_a_one_line_error_naming_the_file(tmp_path, layout, expect):
    path = tmp_path / "shakespeare" / "shakespeare_train.h5"
    path.parent.mkdir(parents=True)
    if layout == "not_hdf5":
        path.write_text("user,snippet\n")
    elif layout != "missing":
        with h5py.File(path, "w") as f:
            if layout == "no_examples":
                f.create_dataset("clients/ROLE/snippets", data=np.array([b"hi"]))
            elif layout == "no_snippets":
                f.create_dataset("examples/ROLE/lines", data=np.array([b"hi"]))
            else:
                f.create_dataset("examples/ROLE", data=np.array([b"hi"]))
    _write_h5(tmp_path / "shakespeare" / "shakespeare_test.h5", {"ROLE": ["hi"]})
    with pytest.raises(UserError) as e:
        _task(tmp_path).load()
    msg = str(e.value)
    assert msg.startswith(f"{path}: ") and expect in msg and "\n" not in msg


@pytest.mark.parametrize("key,value,expect", [
    ("split_by", "time", "task.split_by='time' is unknown"),
    ("source", "reddit", "task.source='reddit' is unknown"),
    ("num_oov_buckets", 0, "task.num_oov_buckets=0 must be an integer >= 1"),
    ("max_elements_per_user", 0, "task.max_elements_per_user=0 must be"),
])
def test_bad_task_config_is_refused(tmp_path, key, value, expect):
    with pytest.raises(UserError, match=expect):
        _task(tmp_path, **{key: value}).load()


# --------------------------------------------------------------------------
# Model: the local/global partition, id by id
# --------------------------------------------------------------------------
def _shapes(layers):
    return sorted(tuple(w.shape.as_list()) for l in layers for w in l.weights)


@pytest.mark.tff
def test_local_variables_are_exactly_the_oov_rows_and_each_id_reads_its_embedding():
    import tensorflow_federated as tff

    parts = _task(embedding_dim=2).keras_parts({})
    assert _shapes(parts.local_layers) == [(K, 2)]
    model = tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
        keras_model=parts.model, global_layers=parts.global_layers,
        local_layers=parts.local_layers, input_spec=parts.input_spec)
    assert [tuple(v.shape) for v in model.local_trainable_variables] == [(K, 2)]
    assert (V + 3, 2) in [tuple(v.shape) for v in model.global_trainable_variables]

    g_emb, l_emb = parts.global_layers[0], parts.local_layers[0]
    g = np.array([[100.0 + r, 0.5] for r in range(V + 3)], np.float32)  # rows: pad, 3 words, BOS, EOS
    loc = np.array([[-1.0 - r, -0.5] for r in range(K)], np.float32)
    g_emb.set_weights([g])
    l_emb.set_weights([loc])
    emb = tf.keras.Model(parts.model.input, parts.model.get_layer("token_embedding").output)
    ids = np.arange(V + K + 3, dtype=np.int64)[None, :]  # 0..7
    got = emb(ids).numpy()[0]
    expected = {0: g[0], 1: g[1], 2: g[2], 3: g[3],  # pad and words: global rows 0..V
                4: loc[0], 5: loc[1],                 # OOV ids V+1..V+K: local rows 0..K-1
                6: g[4], 7: g[5]}                     # BOS, EOS: global rows V+1, V+2
    for i in range(V + K + 3):
        np.testing.assert_array_equal(got[i], expected[i], err_msg=f"token id {i}")


@pytest.mark.tff
def test_oov_tokens_give_gradient_only_to_local_rows():
    parts = _task(embedding_dim=2).keras_parts({})
    x = np.array([[6, 4, 5, 4]], np.int64)  # BOS then OOV ids only
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(parts.model(x))
    g_emb, l_emb = parts.global_layers[0], parts.local_layers[0]
    dg, dl = tape.gradient(loss, [g_emb.embeddings, l_emb.embeddings])
    dg = tf.convert_to_tensor(dg).numpy()
    assert np.all(dg[:V + 1] == 0) and np.all(dg[V + 2] == 0)  # only BOS's global row moves
    assert np.any(dg[V + 1] != 0) and np.all(np.any(tf.convert_to_tensor(dl).numpy() != 0, axis=1))


@pytest.mark.tff
def test_local_oov_output_splits_the_logits_at_the_oov_columns():
    parts = _task(embedding_dim=2, projection_dim=2, local_oov_output=True).keras_parts({})
    assert _shapes(parts.local_layers) == sorted([(2, K), (K,), (K, 2)])  # kernel, bias, OOV rows
    g_out, l_out = parts.model.get_layer("logits_global"), parts.model.get_layer("logits_oov_local")
    assert g_out in parts.global_layers and l_out in parts.local_layers
    g_out.set_weights([np.zeros((2, V + 3), np.float32), 100 + np.arange(V + 3, dtype=np.float32)])
    l_out.set_weights([np.zeros((2, K), np.float32), -1 - np.arange(K, dtype=np.float32)])
    logits = parts.model(np.array([[6, 1]], np.int64)).numpy()[0, 0]
    assert logits.shape == (V + K + 3,)
    np.testing.assert_array_equal(logits, [100, 101, 102, 103, -1, -2, 104, 105])


@pytest.mark.tff
def test_local_oov_false_makes_everything_global_with_the_same_model():
    local = _task(local_oov_output=True).keras_parts({})
    allg = _task(local_oov_output=True, local_oov=False).keras_parts({})
    assert allg.local_layers == [] and _shapes(allg.global_layers) == sorted(
        _shapes(local.global_layers) + _shapes(local.local_layers))
    default = _task().keras_parts({})
    assert default.model.output_shape == (None, None, V + K + 3)


# --------------------------------------------------------------------------
# Loss and metrics by hand
# --------------------------------------------------------------------------
# Labels (V=3, K=2: OOV 4, 5; EOS 7) and argmax predictions, position by position:
Y = np.array([[1, 4, 7, 0],      # word hit, OOV hit, EOS miss, pad
              [2, 3, 5, 7]])     # word missed by predicting OOV 5, word hit, OOV hit, EOS hit
PRED = np.array([[1, 4, 2, 3],
                 [5, 3, 5, 7]])


def _logits():
    """Zeros with ln 2 at the predicted id: p(pred) = 2/9, every other id 1/9.
    The pad position gets a huge wrong logit, which must not count."""
    z = np.zeros((2, 4, V + K + 3), np.float32)
    for b in range(2):
        for t in range(4):
            z[b, t, PRED[b, t]] = math.log(2)
    z[0, 3, 3] = 100.0
    return z


@pytest.mark.tff
def test_masked_metrics_match_hand_computed_values():
    mets = _task().metrics_fn()()
    for m in mets:
        m.update_state(tf.constant(Y), tf.constant(_logits()))
    got = {m.name: float(m.result()) for m in mets}
    # 7 non-pad labels, 5 hits; no OOV labels: 5 positions, 3 hits; no OOV/EOS: 3 positions, 2 hits.
    assert got == pytest.approx({"accuracy": 5 / 7, "accuracy_no_oov": 3 / 5,
                                 "accuracy_no_oov_no_eos": 2 / 3, "num_tokens": 7})


@pytest.mark.tff
def test_metrics_aggregate_by_summing_variables_across_clients():
    whole = _task().metrics_fn()()
    a, b, merged = _task().metrics_fn()(), _task().metrics_fn()(), _task().metrics_fn()()
    for ms, rows in ((a, slice(0, 1)), (b, slice(1, 2)), (whole, slice(0, 2))):
        for m in ms:
            m.update_state(tf.constant(Y[rows]), tf.constant(_logits()[rows]))
    for ma, mb, mm, mw in zip(a, b, merged, whole):
        for va, vb, vm in zip(ma.variables, mb.variables, mm.variables):
            vm.assign(va + vb)  # what TFF's sum-then-finalize does
        # and the finalizer rebuilds the metric from its config
        clone = type(mm).from_config(mm.get_config())
        assert clone.get_config() == mm.get_config()
        assert float(mm.result()) == pytest.approx(float(mw.result()))
    assert [float(m.result()) for m in a] == pytest.approx([2 / 3, 1 / 2, 1 / 1, 3])


@pytest.mark.tff
def test_loss_is_cross_entropy_over_non_pad_positions():
    expected = (5 * math.log(4.5) + 2 * math.log(9)) / 7  # hits -ln(2/9), misses -ln(1/9)
    loss = _task().loss_fn()()
    assert float(loss(tf.constant(Y), tf.constant(_logits()))) == pytest.approx(expected, rel=1e-6)
    # TFF wraps it in MeanMetricWrapper (labels cast to float on the way): same value.
    wrapped = tf.keras.metrics.MeanMetricWrapper(loss, name="loss")
    wrapped.update_state(tf.constant(Y), tf.constant(_logits()))
    assert float(wrapped.result()) == pytest.approx(expected, rel=1e-6)


# --------------------------------------------------------------------------
# Stack Overflow: offline failure, paper's cap and date order (TFF's synthetic data)
# --------------------------------------------------------------------------
@pytest.mark.tff
def test_stackoverflow_offline_is_a_one_line_user_error(tmp_path, monkeypatch):
    import tensorflow_federated as tff

    def offline(cache_dir=None):  # what TFF raises here without a network
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tff.simulation.datasets.stackoverflow, "load_data", offline)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    data_dir = tmp_path / "published"
    data_dir.mkdir(mode=0o555)  # a read-only data dir gets no stackoverflow/ folder
    task = nwp.NWP(_cfg(source="stackoverflow"), data_dir=str(data_dir), seed=0)
    try:
        with pytest.raises(UserError) as e:
            task.load()
    finally:
        os.chmod(data_dir, 0o755)
    msg = str(e.value)
    assert msg.startswith("task.source=stackoverflow: could not download") and "\n" not in msg
    assert "URLError" in msg and "task.source=shakespeare" in msg
    assert str(tmp_path / "home" / ".cache" / "fedrecon_bench" / "stackoverflow") in msg
    assert list(data_dir.iterdir()) == []


def _so_database(root, clients: dict, counts: dict):
    """TFF's Stack Overflow files under root (fedrecon_bench/synth.py's writer): clients
    {(split, id): [(date, tokens), ...]} in stored order, and the word counts."""
    from fedrecon_bench import synth

    db = synth.Database(str(root / "stackoverflow" / "stackoverflow.sqlite"))
    for (split, cid), posts in clients.items():
        db.client(split, cid, [synth.so_example(d.encode(), t) for d, t in posts])
    db.close()
    synth.write_word_counts(str(root / "stackoverflow" / "datasets" / "stackoverflow.word_count"),
                            counts.items())


def test_stackoverflow_path_caps_then_sorts_by_date(tmp_path):
    """Through TFF's own reader of the database: the first `cap` posts are taken, then
    sorted by date (stable on ties), one sequence per sentence, truncated at seq_len."""
    posts = [("2010-01-08 09:34:05.0 UTC", "if you're x"), ("2008-08-10 00:00:00.0 UTC", "css3 does y"),
             ("2008-08-10 00:00:00.0 UTC", "which is e")]
    clients = {("train", "u1"): posts, ("train", "u2"): [("2009-01-01 00:00:00.0 UTC", "the spec")],
               ("train", "u3"): [("2011-05-05 00:00:00.0 UTC", "the spec is ."),
                                 ("2011-05-04 00:00:00.0 UTC", "edit :")],
               ("heldout", "h1"): [("2009-01-01 00:00:00.0 UTC", "is the")],
               ("heldout", "h2"): [("2009-01-01 00:00:00.0 UTC", "the is")],
               ("test", "u1"): [("2018-02-02 00:00:00.0 UTC", "is is")]}  # TFF needs every split
    _so_database(tmp_path, clients, {"the": 9, "is": 8, ".": 7, "edit": 6, ":": 5, "css3": 4})
    db = nwp.so.Database(str(tmp_path / "stackoverflow"))
    assert [s[:10] for s in db.sentences("train", "u1", cap=2)] == ["css3 does ", "if you're "]
    assert [s[:10] for s in db.sentences("train", "u1", cap=None)] == ["css3 does ", "which is e", "if you're "]
    t = nwp.NWP(_cfg(source="stackoverflow", vocab_size=5, num_oov_buckets=3, seq_len=3,
                     max_elements_per_user=2), data_dir=str(tmp_path), seed=0)
    data = t.load()
    assert data.train.ids == ["u1", "u2", "u3"] and data.train.sizes.tolist() == [2, 1, 2]  # capped
    assert data.train.reads == 0  # ids and sizes come from the database's metadata
    assert len(data.val) + len(data.test) == 2
    ex = data.train.read(data.train.index_of("u3"))  # "edit :" (older), then "the spec is ."
    bos, eos = t.layout.bos, t.layout.eos
    np.testing.assert_array_equal(ex["x"][0], [bos, 4, 5])
    np.testing.assert_array_equal(ex["y"][0], [4, 5, eos])
    spec = nwp.oov_id("spec", t.layout)
    np.testing.assert_array_equal(ex["y"][1], [1, spec, 2])  # truncated at seq_len, no EOS
    assert data.train.reads == 1


# --------------------------------------------------------------------------
# A short real-data run
# --------------------------------------------------------------------------
def test_short_real_shakespeare_run_completes(shared_data, tmp_path):
    from fedrecon_bench import loop

    if not (shared_data / "shakespeare" / "shakespeare_train.h5").is_file():
        pytest.skip("shared data has no shakespeare/")
    cfg = compose("+task=nwp", "+algo=fedrecon", f"data_dir={shared_data}",
                  f"task.cache_dir={tmp_path / 'cache'}", "task.max_users=40",
                  "task.vocab_size=300", "task.num_oov_buckets=10", "task.max_elements_per_user=8",
                  "task.batch_size=4", "task.embedding_dim=8", "task.lstm_units=16",
                  "task.projection_dim=8", "rounds=2", "clients_per_round=3", "eval_every=2",
                  "logger=none")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = loop.run(cfg, str(run_dir))
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "completed" and on_disk["task"] == "nwp"
    assert on_disk["num_clients"] == {"train": 32, "val": 4, "test": 4}
    assert on_disk["local_params"] == 10 * 8  # the K OOV rows only
    for split in ("train", "val", "test"):
        m = on_disk["final"][split]
        assert m["num_tokens"] > 0 and math.isfinite(m["loss"])
        assert 0 <= m["accuracy_no_oov_no_eos"] <= 1 and 0 <= m["accuracy"] <= 1
    assert summary["final"]["test"]["loss"] == on_disk["final"]["test"]["loss"]
