"""Stack Overflow preprocessing (task.source=stackoverflow: tasks/nwp/stackoverflow.py,
tasks/nwp/data.py) against the authors' dataset tests.

SOURCE = google-research/federated reconstruction/stackoverflow/stackoverflow_dataset_test.py

Their fixtures: one post "one must imagine" (2008-08-10), and three posts "one must
imagine" (2008), "imagine" (2007), "one" (2007, the same time), in that stored order;
vocabulary ["one", "must"]. Their ids: pad 0, the words 1..V, OOV V+1..V+K, BOS V+K+1,
EOS V+K+2, the suite's layout too. Their sequence: BOS + words + EOS, padded to
sequence_length + 1, x = padded[:-1]. Here the posts go into a database in TFF's format
(fedrecon_bench/synth.py's writer) and come back through the task's own loader (TFF's
reader, the first max_elements posts, sorted by date), so every expected x is what both
engines train on: engine=tff's dataset (task.client_dataset) and engine=fast's inputs
(the task's fast model) are checked to hold it. Their ValueErrors for a zero batch size,
sequence length or element cap are the suite's one-line refusals.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import HAVE_TFF, compose
from fedrecon_bench.errors import UserError
from tasks import nwp

SOURCE = "google-research/federated reconstruction/stackoverflow/stackoverflow_dataset_test.py"
SINGLE = [("2008-08-10 08:28:52.1 UTC", "one must imagine")]
MULTI = [("2008-08-10 08:28:52.1 UTC", "one must imagine"), ("2007-03-01T13:00:00.67279Z", "imagine"),
         ("2007-03-01T13:00:00.67279Z", "one")]


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory):
    """A Stack Overflow database with the two fixtures as training users `single` and
    `multi` (TFF's reader needs every split, so one held-out pair and one test user too)."""
    from fedrecon_bench import synth

    root = tmp_path_factory.mktemp("so")
    db = synth.Database(str(root / "stackoverflow" / "stackoverflow.sqlite"))
    clients = {("train", "multi"): MULTI, ("train", "single"): SINGLE,
               ("heldout", "h1"): SINGLE, ("heldout", "h2"): SINGLE, ("test", "t1"): SINGLE}
    for (split, cid), posts in clients.items():
        db.client(split, cid, [synth.so_example(d.encode(), t) for d, t in posts])
    db.close()
    synth.write_word_counts(str(root / "stackoverflow" / "datasets" / "stackoverflow.word_count"),
                            [("one", 9), ("must", 8), ("the", 7)])
    return root


def _task(so_dir, *overrides):
    cfg = compose("+task=nwp", "+algo=fedrecon", "task.source=stackoverflow", f"data_dir={so_dir}",
                  "task.vocab_size=2", "task.num_oov_buckets=1", "task.seq_len=6", "task.batch_size=32",
                  *overrides)
    return nwp.NWP(cfg.task, str(so_dir), 0)


def _x(so_dir, client: str, *overrides) -> np.ndarray:
    """The client's x as loaded, checked to be what both engines read."""
    task = _task(so_dir, *overrides)
    data = task.load()
    ex = data.train.read(data.train.index_of(client))
    if HAVE_TFF:  # engine=tff's dataset, one batch of 32
        (batch,) = list(task.client_dataset(ex).as_numpy_iterator())
        np.testing.assert_array_equal(batch["x"], ex["x"])
    np.testing.assert_array_equal(task.fast_model(data.info).inputs(ex)["x"], ex["x"])  # engine=fast
    # y is x shifted by one: padded[1:]
    np.testing.assert_array_equal(ex["y"][:, :-1], ex["x"][:, 1:])
    return ex["x"]


def test_creation_date_string_to_integer_returns_correct_values():
    dates = ["2009-06-15T13:45:30", "2020-12-30T22:58:55Z", "2007-03-01T13:00:00Z", "2007-03-01T13:00:00.67279Z",
             "2010-01-08 09:34:05 UTC", "2008-08-10 08:28:52.1 UTC", "2009-03-03 21:32:46.8 UTC"]
    assert [nwp.so.date_key(d.encode()) for d in dates] == [
        20090615134530, 20201230225855, 20070301130000, 20070301130000, 20100108093405, 20080810082852,
        20090303213246]


def test_sort_timestamps_sorts_examples(so_dir):
    """Stable: the two 2007 posts keep their stored order."""
    db = nwp.so.Database(str(so_dir / "stackoverflow"))
    assert db.sentences("train", "multi", cap=None) == ["imagine", "one", "one must imagine"]


@pytest.mark.tff
@pytest.mark.parametrize("client,buckets", [("single", 1), ("single", 10), ("multi", 10), ("single", 10)], ids=[
    "test_preprocess_fn_return_dataset_element_spec", "test_preprocess_fn_return_dataset_element_spec_oov_buckets",
    "test_preprocess_fn_return_dataset_element_spec_sort_by_date",
    "test_preprocess_fn_return_dataset_single_element_spec_sort_by_date"])
def test_element_spec(so_dir, client, buckets):
    """Sequence length 10: x and y are int64 [None, 10] in engine=tff's dataset."""
    import tensorflow as tf

    task = _task(so_dir, "task.seq_len=10", f"task.num_oov_buckets={buckets}", "task.max_elements_per_user=100")
    data = task.load()
    spec = task.client_dataset(data.train.read(data.train.index_of(client))).element_spec
    assert spec == {"x": tf.TensorSpec([None, 10], tf.int64), "y": tf.TensorSpec([None, 10], tf.int64)}


@pytest.mark.parametrize("key", ["batch_size", "seq_len", "max_elements_per_user"], ids=[
    "test_preprocess_fn_bad_batch_size_fails", "test_preprocess_fn_bad_max_sequence_length_fails",
    "test_preprocess_fn_bad_max_elements_fails"])
def test_zero_is_refused(so_dir, key):
    with pytest.raises(UserError) as e:
        _task(so_dir, f"task.{key}=0").load()
    assert str(e.value).startswith(f"task.{key}=0 must be an integer >= 1") and "\n" not in str(e.value)


def test_preprocess_fn_returns_correct_sequence(so_dir):
    """The EOS bug's case: a three-word sentence at sequence length 6 keeps EOS (5) in x."""
    np.testing.assert_array_equal(_x(so_dir, "single"), [[4, 1, 2, 3, 5, 0]])


def test_preprocess_fn_returns_correct_sequence_oov_buckets(so_dir):
    (x,) = _x(so_dir, "single", "task.num_oov_buckets=3")
    assert x[:3].tolist() == [6, 1, 2] and x[3] in (3, 4, 5) and x[4:].tolist() == [7, 0]


def test_preprocess_fn_returns_correct_sequence_sort_by_date(so_dir):
    np.testing.assert_array_equal(_x(so_dir, "multi"), [[4, 3, 5, 0, 0, 0], [4, 1, 5, 0, 0, 0],
                                                        [4, 1, 2, 3, 5, 0]])


def test_preprocess_fn_returns_correct_sequence_sort_by_date_max_elements(so_dir):
    """The first two stored posts, then sorted: the 2007 "one" never enters."""
    np.testing.assert_array_equal(_x(so_dir, "multi", "task.max_elements_per_user=2"),
                                  [[4, 3, 5, 0, 0, 0], [4, 1, 2, 3, 5, 0]])


def test_preprocess_fn_returns_correct_sequence_sort_by_date_single_example(so_dir):
    np.testing.assert_array_equal(_x(so_dir, "single"), [[4, 1, 2, 3, 5, 0]])
