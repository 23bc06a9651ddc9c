"""TFF's SQLite client data read without TensorFlow (tasks/tff_sqlite.py): the tf.Example
decoder on hand-made protos, the same examples in the same order as TFF's own loaders
(where TFF is installed), and a one-line refusal for a missing database where it is not."""
import numpy as np
import pytest

from fedrecon_bench import synth
from fedrecon_bench.errors import UserError
from tasks import tff_sqlite


def test_example_decoder_reads_every_feature_kind_packed_or_not():
    f, v = synth._field, synth._varint
    unpacked_ints = f(3, v(1 << 3 | 0) + v(7) + v(1 << 3 | 0) + v(-2))  # Int64List, one varint each
    unpacked_floats = f(2, b"".join(v(1 << 3 | 5) + np.float32(x).tobytes() for x in (0.5, -1.25)))
    proto = synth.example({"b": synth._bytes_feature(b"caf\xc3\xa9"), "i": synth._int64_feature(-3),
                           "p": synth._float_feature(np.array([0.25, 1.0, 3.5])),
                           "u": unpacked_ints, "q": unpacked_floats,
                           "n": f(3, f(1, v(5) + v(300) + v(-1)))})  # packed varints
    got = tff_sqlite.parse_example(proto)
    assert got["b"] == [b"caf\xc3\xa9"] and got["i"] == [-3] and got["u"] == [7, -2]
    assert got["n"] == [5, 300, -1]
    assert got["p"].dtype == np.float32 and got["p"].tolist() == [0.25, 1.0, 3.5]
    assert got["q"].tolist() == [0.5, -1.25]
    assert tff_sqlite.parse_example(synth.example({})) == {}


@pytest.mark.tff
def test_stackoverflow_sentences_are_tffs_in_tffs_order(tmp_path):
    """Database.sentences against TFF's ClientData (`take(cap)`, then a stable sort by date)
    for every client of every split of a synthetic database, with and without the cap."""
    import tensorflow_federated as tff

    from tasks.nwp import stackoverflow as so

    info = synth.stackoverflow(str(tmp_path), 120, seed=3, log=None)
    cache = str(tmp_path / "stackoverflow")
    splits = dict(zip(so.SPLITS, tff.simulation.datasets.stackoverflow.load_data(cache_dir=cache)))
    db, compared = so.Database(cache), 0
    for split, cd in splits.items():
        for cid in cd.client_ids:
            for cap in (None, 3):
                ds = cd.serializable_dataset_fn(cid)
                rows = [(so.date_key(e["creation_date"]), e["tokens"].decode())
                        for e in (ds.take(cap) if cap else ds).as_numpy_iterator()]
                want = [t for _, t in sorted(rows, key=lambda r: r[0])]
                assert db.sentences(split, cid, cap) == want, (split, cid, cap)
                compared += len(want)
    assert compared > info["clients"]["train"] * 2


@pytest.mark.tff
def test_emnist_images_are_tffs_in_tffs_order(tmp_path):
    import tensorflow_federated as tff

    synth.emnist(str(tmp_path), 6, seed=0, images=30.0, log=None)  # as test_lazy.py
    db = tff_sqlite.SqlClientData(str(tmp_path / "emnist-tff" / "emnist_all.sqlite"))
    for digits, prefix in ((False, "all"), (True, "digits_only")):
        train, test = tff.simulation.datasets.emnist.load_data(only_digits=digits,
                                                               cache_dir=str(tmp_path / "emnist-tff"))
        for split, cd in ((f"{prefix}_train", train), (f"{prefix}_test", test)):
            for w in cd.client_ids:
                want = list(cd.serializable_dataset_fn(w).as_numpy_iterator())
                got = db.examples(split, w)
                assert len(got) == len(want) == db.sizes(split).get(w, 0)
                for g, e in zip(got, want):
                    np.testing.assert_array_equal(g["pixels"].reshape(28, 28), e["pixels"])
                    assert g["label"] == [int(e["label"])]


@pytest.mark.parametrize("task,source", [("nwp", "stackoverflow"), ("emnist", "tff")])
def test_a_missing_database_without_tff_is_refused_in_one_line(tmp_path, monkeypatch, task, source):
    import tasks
    from conftest import compose

    monkeypatch.setattr(tff_sqlite, "have_tff", lambda: False)
    cfg = compose(f"+task={task}", "+algo=fedrecon", f"task.source={source}", f"data_dir={tmp_path}",
                  f"task.cache_dir={tmp_path / 'cache'}")
    with pytest.raises(UserError) as e:
        tasks.get(task)(cfg.task, cfg.data_dir, cfg.seed).load()
    msg = str(e.value)
    assert msg.startswith(f"task.source={source}: ") and "is missing" in msg and "\n" not in msg
    assert "needs TensorFlow Federated" in msg and "uv sync --locked" in msg
