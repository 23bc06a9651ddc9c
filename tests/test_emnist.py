"""EMNIST task: the LEAF loader and its cache, malformed files, the two population
modes, the model's global/local partition, the TFF source, a short real-data run."""
import json
import pathlib
import stat
import urllib.error

import numpy as np
import pytest
try:
    import tensorflow as tf
except ImportError:  # the TF-free `modern` environment: the tests using it are marked tff
    tf = None
from omegaconf import OmegaConf

from conftest import compose
from fedrecon_bench.errors import UserError
import tasks.emnist as em

N_WRITERS = 10  # 10 writers split 80/10/10 -> 8/1/1, the smallest non-empty val/test


def _image(rng):
    return (rng.integers(0, 6, 784) * 51 / 255).tolist()  # k/255 exactly: 0, 0.2, ..., 1.0


def _writer_data(rng, n, first_label):
    y = [first_label] + rng.integers(0, 62, n - 1).tolist()  # first a digit: only_digits keeps it
    return {"x": [_image(rng) for _ in range(n)], "y": y}


def write_leaf(root: pathlib.Path, shards: dict) -> None:
    """shards: {"train"|"test": [{writer: {"x": ..., "y": ...}}, ...]} in LEAF's layout."""
    for split, files in shards.items():
        (root / "femnist-leaf" / split).mkdir(parents=True, exist_ok=True)
        for i, users in enumerate(files):
            doc = {"users": list(users), "num_samples": [len(u["y"]) for u in users.values()],
                   "user_data": users}
            (root / "femnist-leaf" / split / f"all_data_{i}_{split}.json").write_text(json.dumps(doc))


def fixture_shards():
    rng = np.random.default_rng(0)
    writers = [f"f{i:02d}" for i in range(N_WRITERS)]
    train = {w: _writer_data(rng, 3 + i % 3, i % 10) for i, w in enumerate(writers)}  # 3-5 each
    test = {w: _writer_data(rng, 2 + (i == 9), 9 - i % 10) for i, w in enumerate(writers)}
    test["t99"] = _writer_data(rng, 2, 0)  # test data only: no train data, so never a client
    groups = [writers[:4], writers[4:7], writers[7:]]
    return {"train": [{w: train[w] for w in g} for g in groups],
            "test": [{w: test[w] for w in g} for g in groups[:2]] + [{w: test[w] for w in groups[2] + ["t99"]}]}


@pytest.fixture(scope="module")
def leaf_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("leaf")
    write_leaf(root, fixture_shards())
    return root


def task_cfg(**kw):
    base = OmegaConf.load(pathlib.Path(__file__).resolve().parents[1] / "conf/task/emnist.yaml")
    return OmegaConf.merge(base, kw)


def load(data_dir, cache_dir, seed=0, **kw):
    return em.EMNIST(task_cfg(cache_dir=str(cache_dir), **kw), str(data_dir), seed).load()


def as_set(ex):
    """A client's examples as a set of (label, pixel bytes): order-free comparison."""
    return {(int(y), x.tobytes()) for x, y in zip(ex["x"], ex["y"])}


def source_set(d):
    return {(int(y), (np.round(np.asarray(x) * 255)).astype(np.uint8).tobytes())
            for x, y in zip(d["x"], d["y"])}


# --------------------------------------------------------------------------
# Loader, cache and populations on the tiny fixture
# --------------------------------------------------------------------------
def test_leaf_loader_reads_every_writer_exactly(leaf_dir, tmp_path):
    shards = fixture_shards()
    train_src = {w: d for f in shards["train"] for w, d in f.items()}
    test_src = {w: d for f in shards["test"] for w, d in f.items()}
    data = load(leaf_dir, tmp_path / "cache", split_by="example")
    assert data.train.ids == sorted(train_src) and data.split_by == "example"
    assert data.train.num_examples == sum(len(d["y"]) for d in train_src.values()) == 39
    for w, ex in zip(data.train.ids, data.train.examples):
        assert ex["x"].dtype == np.uint8 and ex["x"].shape[1] == 784
        assert as_set(ex) == source_set(train_src[w])
    # The writers' LEAF test data is split between val and test, nothing lost or added.
    held = {}
    for part in (data.val, data.test):
        for w, ex in zip(part.ids, part.examples):
            held.setdefault(w, set()).update(as_set(ex))
    assert held and set(held) <= set(test_src)
    assert held == {w: source_set(test_src[w]) for w in held}
    assert data.info["num_classes"] == 62 and data.info["cache"] == {"train": "miss", "test": "miss"}


@pytest.mark.tff
def test_leaf_batches_for_engine_tff_carry_float_pixels_and_int_labels(leaf_dir, tmp_path):
    """engine=tff's batches: float pixels in 0..1 (the file's values), int32 labels [n, 1]."""
    data = load(leaf_dir, tmp_path / "cache", split_by="example")
    task = em.EMNIST(task_cfg(batch_size=2), "unused", 0)
    b = next(iter(task.client_dataset(data.train.examples[0])))
    assert b["x"].shape == (2, 28, 28, 1) and b["x"].dtype == tf.float32 and b["y"].shape == (2, 1)
    np.testing.assert_allclose(b["x"].numpy().reshape(2, 784), data.train.examples[0]["x"][:2] / 255.0,
                               atol=1e-7)


def test_split_by_user_gives_disjoint_writers_with_all_their_data(leaf_dir, tmp_path):
    shards = fixture_shards()
    train_src = {w: d for f in shards["train"] for w, d in f.items()}
    test_src = {w: d for f in shards["test"] for w, d in f.items()}
    data = load(leaf_dir, tmp_path / "cache")
    tr, va, te = set(data.train.ids), set(data.val.ids), set(data.test.ids)
    assert (len(tr), len(va), len(te)) == (8, 1, 1)
    assert tr | va | te == set(train_src) and not (tr & va or tr & te or va & te)
    assert "t99" not in tr | va | te  # test-only writers are never clients
    for pop in (data.train, data.val, data.test):
        for w, ex in zip(pop.ids, pop.examples):
            assert as_set(ex) == source_set(train_src[w]) | source_set(test_src[w])
    # The writer split is seeded: same seed, same split; another seed, another one.
    again, other = load(leaf_dir, tmp_path / "cache"), load(leaf_dir, tmp_path / "cache", seed=1)
    assert again.val.ids == data.val.ids and again.test.ids == data.test.ids
    assert (other.val.ids, other.test.ids) != (data.val.ids, data.test.ids)
    np.testing.assert_array_equal(again.train.examples[0]["y"], data.train.examples[0]["y"])


def test_split_by_example_gives_same_writers_and_halves_their_test_data(leaf_dir, tmp_path):
    shards = fixture_shards()
    test_src = {w: d for f in shards["test"] for w, d in f.items()}
    data = load(leaf_dir, tmp_path / "cache", split_by="example")
    assert data.train.ids == data.val.ids == data.test.ids == [f"f{i:02d}" for i in range(10)]
    for w, v, t in zip(data.val.ids, data.val.examples, data.test.examples):
        n = len(test_src[w]["y"])
        assert (len(v["y"]), len(t["y"])) == (n // 2, n - n // 2)
        assert as_set(v) | as_set(t) == source_set(test_src[w]) and not as_set(v) & as_set(t)
    assert data.val.index_of("f03") == data.train.index_of("f03") == 3


def test_cap_and_only_digits(leaf_dir, tmp_path):
    data = load(leaf_dir, tmp_path / "cache", split_by="example", max_examples_per_user=2,
                only_digits=True)
    assert all(len(ex["y"]) <= 2 for ex in data.train.examples)
    assert all(int(ex["y"].max()) < 10 for ex in data.train.examples if len(ex["y"]))
    assert data.info["num_classes"] == 10 and len(data.train) == 10  # every writer has a digit


@pytest.mark.tff
def test_only_digits_keras_model_has_ten_outputs():
    parts = em.EMNIST(task_cfg(only_digits=True), "unused", 0).keras_parts({})
    assert parts.model.output_shape == (None, 10)


def test_second_load_comes_from_the_cache_without_parsing(leaf_dir, tmp_path, monkeypatch):
    first = load(leaf_dir, tmp_path / "cache")
    files = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert len(files) == 2 and files[0].startswith("test-") and files[1].startswith("train-")

    def no_parse(path):
        raise AssertionError(f"JSON parsed again: {path}")

    monkeypatch.setattr(em.data, "read_leaf_file", no_parse)
    second = load(leaf_dir, tmp_path / "cache")
    assert second.info["cache"] == {"train": "hit", "test": "hit"}
    for a, b in ((first.train, second.train), (first.val, second.val), (first.test, second.test)):
        assert a.ids == b.ids
        for ea, eb in zip(a.examples, b.examples):
            np.testing.assert_array_equal(ea["x"], eb["x"])
            np.testing.assert_array_equal(ea["y"], eb["y"])
    with np.load(tmp_path / "cache" / files[1], allow_pickle=False) as z:  # no pickled objects
        assert sorted(z.files) == ["counts", "writers", "x", "y"] and z["x"].dtype == np.uint8


def test_changed_file_invalidates_the_cache(tmp_path):
    write_leaf(tmp_path / "d", fixture_shards())
    load(tmp_path / "d", tmp_path / "cache")
    old = sorted(p.name for p in (tmp_path / "cache").iterdir())
    shard = tmp_path / "d/femnist-leaf/train/all_data_0_train.json"
    doc = json.loads(shard.read_text())
    doc["user_data"]["f00"]["y"][0] = 7
    shard.write_text(json.dumps(doc))
    data = load(tmp_path / "d", tmp_path / "cache", split_by="example")
    assert data.info["cache"] == {"train": "miss", "test": "hit"}
    assert 7 in data.train.examples[0]["y"].tolist()
    new = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert new[0] == old[0] and new[1] != old[1] and len(new) == 2  # stale train cache removed


def test_read_only_data_dir_falls_back_to_the_home_cache(tmp_path, monkeypatch):
    write_leaf(tmp_path / "d", fixture_shards())
    monkeypatch.setattr(em.data, "FALLBACK_CACHE", str(tmp_path / "home-cache"))
    leaf = tmp_path / "d" / "femnist-leaf"
    leaf.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)  # r-x, as the shared data
    try:
        task = em.EMNIST(task_cfg(), str(tmp_path / "d"), 0)
        assert task.load().info["cache"]["train"] == "miss"
        assert task.load().info["cache"]["train"] == "hit"
    finally:
        leaf.chmod(0o755)
    assert not (leaf / ".cache").exists()  # nothing written into the read-only folder
    assert len(list((tmp_path / "home-cache").glob("*/train-*.npz"))) == 1


# --------------------------------------------------------------------------
# Malformed files: one UserError naming the file and what is wrong
# --------------------------------------------------------------------------
def _good_doc():
    rng = np.random.default_rng(1)
    return {"users": ["w1"], "num_samples": [2], "user_data": {"w1": _writer_data(rng, 2, 3)}}


def _set(doc, fn):
    fn(doc)
    return json.dumps(doc)


MALFORMED = {
    "not_json": ('{"users": ["w1"], "user_data": {', ["not valid JSON"]),
    "no_users": (_set(_good_doc(), lambda d: d.pop("users")), ["missing key 'users'"]),
    "no_user_data": (_set(_good_doc(), lambda d: d.pop("user_data")), ["missing key 'user_data'"]),
    "no_x": (_set(_good_doc(), lambda d: d["user_data"]["w1"].pop("x")), ["'w1'", "missing key 'x'"]),
    "no_y": (_set(_good_doc(), lambda d: d["user_data"]["w1"].pop("y")), ["'w1'", "missing key 'y'"]),
    "short_row": (_set(_good_doc(), lambda d: d["user_data"]["w1"]["x"][1].pop()),
                  ["image 1", "has 783 values, expected 784"]),
    "label_62": (_set(_good_doc(), lambda d: d["user_data"]["w1"]["y"].__setitem__(1, 62)),
                 ["example 1", "label 62 is outside 0..61"]),
    "label_negative": (_set(_good_doc(), lambda d: d["user_data"]["w1"]["y"].__setitem__(0, -1)),
                       ["example 0", "label -1 is outside 0..61"]),
    "xy_mismatch": (_set(_good_doc(), lambda d: d["user_data"]["w1"]["y"].append(4)),
                    ["2 images in 'x' but 3 labels in 'y'"]),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_leaf_file_names_the_file(tmp_path, case):
    text, expect = MALFORMED[case]
    write_leaf(tmp_path, fixture_shards())
    bad = tmp_path / "femnist-leaf" / "train" / "all_data_9_bad.json"
    bad.write_text(text)
    with pytest.raises(UserError) as e:
        load(tmp_path, tmp_path / "cache")
    msg = str(e.value)
    assert msg.startswith(str(bad)) and "\n" not in msg
    for part in expect:
        assert part in msg, msg
    assert "fix the file" in msg  # and how to fix it
    assert not list((tmp_path / "cache").glob("*.npz"))  # a failed parse caches nothing


def test_bad_task_config_and_missing_data_are_user_errors(tmp_path):
    with pytest.raises(UserError, match=r"task.split_by='writer' is unknown"):
        load(tmp_path, tmp_path / "cache", split_by="writer")
    with pytest.raises(UserError, match=r"task.user_embedding_dim=0 must be an integer >= 1"):
        load(tmp_path, tmp_path / "cache", user_embedding_dim=0)
    with pytest.raises(UserError, match=r"femnist-leaf/train: no LEAF FEMNIST \*.json files.*FEDRECON_BENCH_DATA"):
        load(tmp_path, tmp_path / "cache")


# --------------------------------------------------------------------------
# TFF's federated EMNIST
# --------------------------------------------------------------------------
@pytest.mark.tff
def test_tff_source_failure_is_a_user_error(tmp_path, monkeypatch):
    import tensorflow_federated as tff

    def offline(only_digits, cache_dir):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(tff.simulation.datasets.emnist, "load_data", offline)
    with pytest.raises(UserError) as e:
        load(tmp_path, tmp_path / "cache", source="tff")
    msg = str(e.value)
    assert "tff.simulation.datasets.emnist.load_data(only_digits=False" in msg
    assert str(tmp_path / "emnist-tff") in msg and "URLError" in msg
    assert "task.source=leaf" in msg and "\n" not in msg


def test_tff_source_reads_writers_lazily_from_the_database(tmp_path):
    """TFF's emnist_all.sqlite (written by fedrecon_bench/synth.py): ids and sizes from its
    metadata, a writer's images only when read, the same populations as from LEAF."""
    from fedrecon_bench import synth

    rng = np.random.default_rng(0)
    db = synth.Database(str(tmp_path / "emnist-tff" / "emnist_all.sqlite"))
    images = {}
    for i in range(10):
        for split, n in (("all_train", 4), ("all_test", 2)):
            x = rng.integers(0, 256, (n, 28, 28)) / 255
            y = rng.integers(0, 62, n)
            images[(split, f"c{i}")] = (x, y)
            db.client(split, f"c{i}", [synth.emnist_example(p, l) for p, l in zip(x, y)])
    db.close()
    data = load(tmp_path, tmp_path / "cache", source="tff", split_by="example")
    assert data.train.ids == [f"c{i}" for i in range(10)] and data.train.num_examples == 40
    assert data.val.num_examples + data.test.num_examples == 20
    assert data.train.reads == data.val.reads == data.test.reads == 0
    ex = data.train.read(data.train.index_of("c3"))
    assert data.train.reads == 1
    assert ex["x"].dtype == np.uint8  # k/255 pixels are stored compactly
    x, y = images[("all_train", "c3")]
    want = {(int(l), np.round(p.reshape(784) * 255).astype(np.uint8).tobytes()) for p, l in zip(x, y)}
    assert as_set(ex) == want
    # the same writers as the eager LEAF path builds from the same images
    eager = em.build_populations(
        {w: (np.round(images[("all_train", w)][0].reshape(-1, 784) * 255).astype(np.uint8),
             images[("all_train", w)][1].astype(np.uint8)) for w in data.train.ids},
        {w: (np.round(images[("all_test", w)][0].reshape(-1, 784) * 255).astype(np.uint8),
             images[("all_test", w)][1].astype(np.uint8)) for w in data.train.ids},
        "example", 0, None, False)
    for lazy, ref in zip((data.train, data.val, data.test), eager):
        assert lazy.ids == ref.ids and lazy.sizes.tolist() == ref.sizes.tolist()
        for i in range(len(ref)):
            for k in ("x", "y"):
                np.testing.assert_array_equal(lazy.read(i)[k], ref.examples[i][k])


# --------------------------------------------------------------------------
# Model: partition, parameter counts, seeded init, FedRecon server state
# --------------------------------------------------------------------------
CNN = 320 + 18_496 + 1_179_776  # conv 3x3x1x32+32, conv 3x3x32x64+64, dense 9216x128+128


def _counts(parts):
    count = lambda layers: int(sum(np.prod(w.shape) for l in layers for w in l.weights))
    return count(parts.global_layers), count(parts.local_layers)


@pytest.mark.tff
def test_partition_user_embedding_local_cnn_global():
    parts = em.EMNIST(task_cfg(user_embedding_dim=16), "unused", 0).keras_parts({})
    assert _counts(parts) == (CNN + (128 + 16) * 62 + 62, 16) == (1_207_582, 16)
    assert [l.name for l in parts.local_layers] == ["user_embedding"]
    assert [l.name for l in parts.global_layers] == ["conv1", "conv2", "dense", "logits"]
    plain = em.EMNIST(task_cfg(user_embedding=False), "unused", 0).keras_parts({})
    assert _counts(plain) == (CNN + 128 * 62 + 62, 0) and plain.local_layers == []
    # The user vector shifts every example's logits the same way (broadcast over the batch).
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype(np.float32)
    before = parts.model(x, training=False).numpy()
    parts.local_layers[0].set_weights([np.ones((1, 16), np.float32)])
    shift = parts.model(x, training=False).numpy() - before
    np.testing.assert_allclose(shift, np.repeat(shift[:1], 3, axis=0), atol=1e-5)
    assert np.abs(shift).max() > 1e-3


@pytest.mark.tff
def test_init_is_seeded():
    a = em.EMNIST(task_cfg(), "unused", 0).keras_parts({}).model.get_weights()
    b = em.EMNIST(task_cfg(), "unused", 0).keras_parts({}).model.get_weights()
    c = em.EMNIST(task_cfg(), "unused", 1).keras_parts({}).model.get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


@pytest.mark.tff
def test_fedrecon_server_state_holds_only_global_variables():
    import tensorflow_federated as tff

    from fedrecon_bench.algorithms.fedrecon.tff import FedRecon

    cfg = compose("+task=emnist", "+algo=fedrecon", "task.user_embedding_dim=7")
    algo = FedRecon(em.EMNIST(cfg.task, "unused", cfg.seed), {}, cfg)
    state = algo.initialize()
    shapes = [tuple(np.shape(x)) for x in tf.nest.flatten(algo.global_weights(state).trainable)]
    assert shapes == [(3, 3, 1, 32), (32,), (3, 3, 32, 64), (64,), (9216, 128), (128,),
                      (135, 62), (62,)]  # 128 image features + 7 user dims into the logits
    leaves = [np.shape(x) for x in tf.nest.flatten(tff.structure.to_odict_or_tuple(state)
                                                   if not isinstance(state, (dict, tuple)) else state)
              if hasattr(x, "shape")]
    assert (1, 7) not in leaves  # the user embedding never reaches the server


# --------------------------------------------------------------------------
# Real data
# --------------------------------------------------------------------------
def test_shared_leaf_data_counts(shared_data, tmp_path):
    by_example = load(shared_data, tmp_path / "cache", split_by="example")
    assert len(by_example.train) == 105 and by_example.train.num_examples == 14_708
    assert by_example.val.num_examples + by_example.test.num_examples == 1_685
    by_user = load(shared_data, tmp_path / "cache")
    assert by_user.info["cache"] == {"train": "hit", "test": "hit"}
    assert (len(by_user.train), len(by_user.val), len(by_user.test)) == (84, 10, 11)
    total = sum(p.num_examples for p in (by_user.train, by_user.val, by_user.test))
    assert total == 14_708 + 1_685


def test_short_fedrecon_run_on_real_data(shared_data, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=emnist", "+algo=fedrecon", f"data_dir={shared_data}",
                  f"task.cache_dir={tmp_path / 'cache'}", "task.max_examples_per_user=40",
                  "rounds=2", "clients_per_round=3", "eval_every=1", "logger=none")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    summary = loop.run(cfg, str(run_dir))
    on_disk = json.loads((run_dir / "summary.json").read_text())
    assert on_disk["status"] == "completed" and (on_disk["task"], on_disk["algo"]) == ("emnist", "fedrecon")
    assert on_disk["global_params"] == 1_207_582 and on_disk["local_params"] == 16
    assert on_disk["num_clients"] == {"train": 84, "val": 10, "test": 11}
    rows = [json.loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [(r["round"], r["split"]) for r in rows] == [
        (1, "train"), (1, "val"), (2, "train"), (2, "val"), (2, "test")]
    for r in rows:
        assert np.isfinite(r["loss"]) and 0 <= r["accuracy"] <= 1
    assert summary["final"]["test"]["accuracy"] == rows[-1]["accuracy"]
