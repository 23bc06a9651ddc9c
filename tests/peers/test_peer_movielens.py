"""MovieLens preparation (task.preparation=authors, tasks/movielens/data.py) against the
authors' dataset tests.

SOURCE = google-research/federated reconstruction/movielens/movielens_dataset_test.py

Their fixture: users 0 and 1, movies 0-3, ratings 1-6, timestamps (the test case's
ratings_df). Their split by example (`split_ratings_df`) ranks each user's ratings by
time, rank / count <= train fraction to train, <= train + val fraction to val, the rest
to test; their split by user (`create_user_split_np_arrays`, `split_tf_datasets`)
shuffles the user list with NumPy's legacy seed 42 and cuts it at int(n * fraction).
Each user's examples are shuffled (seed 42) and capped. Compared as (user, item, rating)
multisets, as the peers compare them (assertCountEqual; a shuffle decides the order).
The suite refuses a val or train fraction outside (0, 1) in one line (a run needs a val
population); the preparation functions themselves give the authors' parts for them.
"""
from __future__ import annotations

import numpy as np
import pytest

from conftest import compose
from fedrecon_bench.errors import UserError
from tasks.movielens import MovieLens, Ratings, prepare_authors, split_users

SOURCE = "google-research/federated reconstruction/movielens/movielens_dataset_test.py"
RATINGS = Ratings(user=np.array([0, 0, 1, 1, 1, 1]), item=np.array([0, 1, 2, 3, 2, 2]),
                  rating=np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0], np.float32),
                  timestamp=np.array([1, 2, 1, 4, 5, 3]))
SEED = 42  # their np.random.seed(42) before every shuffle


def _triples(clients) -> list[tuple]:
    return sorted((u, int(i), float(r)) for u, ex in zip(clients.ids, clients.examples)
                  for i, r in zip(ex["item"], ex["rating"]))


def _by_example(train, val):
    (parts, num_items) = prepare_authors(RATINGS, SEED, None, None, seen=True, fractions=(train, val))
    assert num_items == 4
    return [_triples(p) for p in parts]


@pytest.mark.parametrize("val", [0.25, 0.49],
                         ids=["test_split_ratings_df", "test_split_ratings_df_fraction_floor"])
def test_split_by_example(val):
    """One of user 1's two non-train ratings goes to val (floor(2 * 0.49) = 0 still leaves the
    rank-0.75 rating under 0.5 + 0.49), the rest to test."""
    train, val_part, test = _by_example(0.5, val)
    assert train == [(0, 0, 1.0), (1, 2, 3.0), (1, 2, 6.0)]
    assert val_part == [(1, 3, 4.0)]
    assert test == [(0, 1, 2.0), (1, 2, 5.0)]


def test_split_ratings_df_no_val():
    train, val, test = _by_example(0.5, 0.0)
    assert train == [(0, 0, 1.0), (1, 2, 3.0), (1, 2, 6.0)] and val == []
    assert test == [(0, 1, 2.0), (1, 2, 5.0), (1, 3, 4.0)]
    _refused("task.val_fraction=0.0")  # a run needs val users to evaluate


def _refused(*overrides):
    cfg = compose("+task=movielens", "+algo=fedrecon", "task.preparation=authors", *overrides)
    with pytest.raises(UserError) as e:
        MovieLens(cfg.task, "unused", 0).check_config()
    assert str(e.value).startswith("task.train_fraction=") and "\n" not in str(e.value)
    assert "each must be in (0, 1) and their sum <= 1" in str(e.value)


def test_split_ratings_df_raises_error():
    """Their ValueError for val_fraction 1.25: here the same refusal, one line, before loading."""
    _refused("task.train_fraction=0.5", "task.val_fraction=1.25")


def _user_examples(cap=None):
    users, examples, num_items = prepare_authors(RATINGS, SEED, cap, None, seen=False)
    assert users == [0, 1] and num_items == 4
    return examples


def test_get_user_examples():
    ex = _user_examples()[0]
    assert sorted(zip(ex["item"].tolist(), ex["rating"].tolist())) == [(0, 1.0), (1, 2.0)]
    assert ex["item"].dtype == np.int64 and ex["rating"].dtype == np.float32


def test_get_user_examples_max_examples():
    assert [len(ex["item"]) for ex in _user_examples(cap=1)] == [1, 1]


def _elements(batch_size: int) -> list[list[tuple]]:
    """User 0's batches as engine=tff feeds them (the task's tf.data dataset) and as
    engine=fast packs them (its model's inputs cut into batches, masked)."""
    from fedrecon_bench.engines.fast.data import Population
    from tasks.base import ClientSet

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.batch_size={batch_size}").task
    task, ex = MovieLens(cfg, "unused", 0), _user_examples()[0]
    tff_batches = [sorted(zip(b["x"][:, 0].tolist(), b["y"][:, 0].tolist()))
                   for b in task.client_dataset(ex).as_numpy_iterator()]
    data = Population(task.fast_model({"num_items": 4}), ClientSet([0], [ex])).select([0]).data
    cols = lambda j: zip(*(data[k][0, j] for k in ("item", "rating", "mask")))
    fast_batches = [sorted((int(i), float(r)) for i, r, m in cols(j) if m) for j in range(data["mask"].shape[1])]
    assert fast_batches == tff_batches
    return tff_batches


@pytest.mark.tff
def test_create_tf_dataset_for_user():
    assert sorted(_elements(1)) == [[(0, 1.0)], [(1, 2.0)]]  # two elements of one example


@pytest.mark.tff
def test_create_tf_dataset_for_user_batch_size():
    assert _elements(3) == [[(0, 1.0), (1, 2.0)]]  # one element holding both


@pytest.mark.parametrize("val,sizes", [(0.25, (2, 1, 1)), (0.0, (2, 0, 2))],
                         ids=["test_split_tf_datasets", "test_split_tf_datasets_empty_val"])
def test_split_tf_datasets(val, sizes):
    """Four users cut at int(4 * 0.5) and int(4 * (0.5 + val))."""
    assert tuple(len(p) for p in split_users(4, SEED, (0.5, val), authors=True)) == sizes


def _by_user(val, cap=None):
    users, examples, _ = prepare_authors(RATINGS, SEED, cap, None, seen=False)
    pairs = lambda i: zip(examples[i]["item"], examples[i]["rating"])
    return [[(users[i], int(it), float(r)) for i in idx for it, r in pairs(i)]
            for idx in split_users(len(users), SEED, (0.5, val), authors=True)]


@pytest.mark.parametrize("val,expect", [
    (0.25, ([(1, 2, 3.0), (1, 3, 4.0), (1, 2, 5.0), (1, 2, 6.0)], [], [(0, 0, 1.0), (0, 1, 2.0)])),
    (0.5, ([(1, 2, 3.0), (1, 3, 4.0), (1, 2, 5.0), (1, 2, 6.0)], [(0, 0, 1.0), (0, 1, 2.0)], [])),
], ids=["test_create_user_split_np_arrays", "test_create_user_split_np_arrays_val_data"])
def test_create_user_split_np_arrays(val, expect):
    """Seed 42 puts user 1 in train and user 0 after it, as their test fixes."""
    assert [sorted(p) for p in _by_user(val)] == [sorted(p) for p in expect]


def test_create_user_split_np_arrays_max_examples_per_user():
    assert [len(p) for p in _by_user(0.5, cap=2)] == [2, 2, 0]
