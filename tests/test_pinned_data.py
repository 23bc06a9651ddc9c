"""Pinned data preparation: the exact users, writers and example orders that the seeded
splits and shuffles give on tiny hand-made data.

Both engines read the same prepared data, so the engine-equality tests cannot see a
change here, and "same seed, same split" tests cannot see a changed seed derivation.
The literal lists below were computed once and checked by hand (sizes, boundaries,
time order) or against an independent derivation (the documented generator calls);
a change to any of them is a change of every run's data and must be deliberate.
"""
import numpy as np
import pytest

from conftest import compose
from test_nwp import _cfg as nwp_cfg, _so_database, tiny_shakespeare  # noqa: F401 (a fixture)

# --------------------------------------------------------------------------
# MovieLens
# --------------------------------------------------------------------------
# Raw user -> number of ratings. Rating j of user u (j = 0, 1, ...): item (7j + u/10) mod 25 + 1
# (distinct within a user), rating (u/10 + j) mod 5 + 1, timestamp 1000 + 10 (n - j): the file
# lists each user's ratings newest first. User 20's first two ratings share timestamp 5000.
COUNTS = {10: 10, 20: 12, 30: 5, 40: 3, 50: 1, 60: 4, 70: 2, 80: 6, 90: 8, 100: 2}
FILE_USER_ORDER = (30, 10, 100, 20, 50, 40, 90, 60, 80, 70)


def _item(u, j):
    return (7 * j + u // 10) % 25 + 1


def _rating(u, j):
    return float((u // 10 + j) % 5 + 1)


RAW_ITEMS = sorted({_item(u, j) for u, n in COUNTS.items() for j in range(n)})  # dense id -> raw id


@pytest.fixture(scope="module")
def timed_ratings(tmp_path_factory):
    lines = ["user_id,item_id,rating,timestamp"]
    for j in range(max(COUNTS.values())):  # users interleaved: no user's ratings are contiguous
        for u in FILE_USER_ORDER:
            if j < COUNTS[u]:
                ts = 5000 if (u, j) in ((20, 0), (20, 1)) else 1000 + 10 * (COUNTS[u] - j)
                lines.append(f"{u},{_item(u, j)},{int(_rating(u, j))},{ts}")
    path = tmp_path_factory.mktemp("timed") / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _load(path, *overrides):
    import tasks

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={path}",
                  "task.max_examples_per_user=null", *overrides)
    return tasks.build(cfg).load()


def _items(data, part: str) -> dict:
    """{raw user: [raw item, ...] in the prepared order} of one population, checking that
    every rating travelled with its item."""
    pop = getattr(data, part)
    out = {}
    for u, ex in zip(pop.ids, pop.examples):
        items = [RAW_ITEMS[i] for i in ex["item"]]
        by_item = {_item(u, j): _rating(u, j) for j in range(COUNTS[u])}
        assert ex["rating"].tolist() == [by_item[i] for i in items], u
        out[u] = items
    return out


def test_user_split_is_pinned():
    """Bench: default_rng(seed).permutation(n), the first int(.8n) train, up to int(.9n) val."""
    from tasks.movielens import split_users

    assert [p.tolist() for p in split_users(10, 0)] == [[4, 6, 2, 7, 3, 5, 9, 0], [8], [1]]
    assert [p.tolist() for p in split_users(10, 7)] == [[8, 0, 7, 1, 3, 6, 2, 4], [5], [9]]
    assert [sorted(p.tolist()) for p in split_users(25, 1)] == [  # 20 / 2 / 3
        [0, 1, 2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 15, 16, 17, 20, 21, 22, 23, 24], [14, 18], [6, 13, 19]]
    # Authors: the paper code's `np.random.seed(42); np.random.shuffle(users)`, cut the same way.
    assert [p.tolist() for p in split_users(10, 42, authors=True)] == [[8, 1, 5, 0, 7, 2, 9, 4], [3], [6]]
    users = list(range(10))
    np.random.RandomState(42).shuffle(users)  # the legacy global shuffle's sequence
    assert users == [8, 1, 5, 0, 7, 2, 9, 4, 3, 6]


def test_movielens_load_pins_the_users_and_their_order_by_split_seed(timed_ratings):
    data = _load(timed_ratings, "seed=3", "split_seed=7")
    assert (data.train.ids, data.val.ids, data.test.ids) == ([10, 20, 30, 40, 50, 70, 80, 90], [60], [100])
    assert _items(data, "val") == {60: [21, 7, 14, 3]} and _items(data, "test") == {100: [11, 18]}
    train = _items(data, "train")
    assert train[10] == [9, 23, 2, 12, 1, 16, 8, 5, 19, 15]
    assert train[20] == [2, 16, 3, 9, 24, 23, 20, 17, 13, 5, 6, 10]
    assert {u: sorted(v) for u, v in train.items()} == {
        u: sorted(_item(u, j) for j in range(COUNTS[u])) for u in data.train.ids}
    # split_seed alone decides: another run seed, the same data; seed 7 alone, the same too.
    for other in (_load(timed_ratings, "seed=4", "split_seed=7"), _load(timed_ratings, "seed=7")):
        assert (other.val.ids, other.test.ids) == ([60], [100])
        assert _items(other, "train") == train
    seed3 = _load(timed_ratings, "seed=3")
    assert (seed3.val.ids, seed3.test.ids) == ([40], [90])
    capped = _load(timed_ratings, "seed=7", "task.max_examples_per_user=3")
    assert _items(capped, "train")[10] == [9, 23, 2]  # the cap keeps the shuffled order's first 3


def test_movielens_authors_preparation_is_the_legacy_shuffle(timed_ratings):
    data = _load(timed_ratings, "seed=3", "split_seed=42", "task.preparation=authors")
    assert (data.val.ids, data.test.ids) == ([40], [70])  # split_users(10, 42, authors=True)
    train = _items(data, "train")
    assert train[10] == [8, 9, 12, 2, 1, 16, 15, 5, 23, 19]
    for u in (10, 20):  # each user's file order, shuffled as the paper's np.random.shuffle
        want = [_item(u, j) for j in range(COUNTS[u])]
        np.random.RandomState(42).shuffle(want)
        assert train[u] == want


# Seen users (task.split_by=example): each user's ratings by time, oldest first (user 20's
# tie at 5000 in seeded order), cut at int(.8n) and int(.9n); found by hand from the file.
SEEN = {  # user: (train, val, test) raw items
    10: ([15, 8, 1, 19, 12, 5, 23, 16], [9], [2]),                    # n=10: 8 / 1 / 1
    20: ([5, 23, 16, 9, 2, 20, 13, 6, 24], [17], [3, 10]),            # n=12: 9 / 1 / 2
    30: ([7, 25, 18, 11], [], [4]),                                   # n=5:  4 / 0 / 1
    40: ([19, 12], [], [5]), 50: ([], [], [6]), 60: ([3, 21, 14], [], [7]),
    70: ([15], [], [8]), 80: ([19, 12, 5, 23], [16], [9]),
    90: ([9, 2, 20, 13, 6, 24], [17], [10]), 100: ([18], [], [11]),
}


def _seen_parts(data) -> dict:
    parts = [_items(data, p) for p in ("train", "val", "test")]
    return {u: tuple(p.get(u, []) for p in parts) for u in COUNTS}


def _check_seen_sizes(parts: dict):
    for u, (tr, va, te) in parts.items():
        n = COUNTS[u]
        assert (len(tr), len(va), len(te)) == (n * 8 // 10, n * 9 // 10 - n * 8 // 10, n - n * 9 // 10), u
        assert sorted(tr + va + te) == sorted(_item(u, j) for j in range(n)), u  # disjoint, complete


def test_seen_user_split_boundaries_are_pinned(timed_ratings):
    data = _load(timed_ratings, "task.split_by=example", "split_seed=7")
    assert data.split_by == "example"
    parts = _seen_parts(data)
    _check_seen_sizes(parts)
    assert parts == SEEN
    # The authors' seen split: the same parts (rank / n <= .8, <= .9; ties in file order),
    # each part then in the legacy shuffle's order.
    authors = _seen_parts(_load(timed_ratings, "task.split_by=example", "split_seed=42",
                                "task.preparation=authors"))
    _check_seen_sizes(authors)
    assert {u: tuple(map(sorted, p)) for u, p in authors.items()} == {
        u: tuple(map(sorted, p)) for u, p in SEEN.items()}
    assert authors[10][0] == [8, 5, 15, 16, 1, 12, 19, 23] and authors[20][2] == [10, 3]


@pytest.mark.parametrize("n,sizes", [(1, (0, 0, 1)), (2, (1, 0, 1)), (5, (4, 0, 1)), (6, (4, 1, 1)),
                                     (10, (8, 1, 1)), (12, (9, 1, 2)), (19, (15, 2, 2)), (20, (16, 2, 2))])
def test_split_examples_cuts_each_user_at_pinned_boundaries(n, sizes):
    from tasks.movielens import split_examples

    ex = {"item": np.arange(n), "rating": np.arange(n, dtype=np.float32)}
    parts = split_examples([7], [ex])
    a, b = sizes[0], sizes[0] + sizes[1]
    for part, (lo, hi) in zip(parts, ((0, a), (a, b), (b, n))):
        assert part.ids == ([7] if hi > lo else []), (n, lo, hi)
        got = part.examples[0]["item"].tolist() if hi > lo else []
        assert got == list(range(lo, hi)), (n, lo, hi)


# --------------------------------------------------------------------------
# EMNIST
# --------------------------------------------------------------------------
def _writers(offset: int, count) -> dict:
    """Writers w0..w9; writer k's examples carry ids 10k + offset, ... in pixel 0."""
    out = {}
    for k in range(10):
        ids = np.arange(10 * k + offset, 10 * k + offset + count(k), dtype=np.uint8)
        x = np.zeros((len(ids), 784), np.uint8)
        x[:, 0] = ids
        out[f"w{k}"] = (x, ids % 62)
    return out


def _ids(pop) -> list:
    for ex in pop.examples:
        np.testing.assert_array_equal(ex["y"], ex["x"][:, 0] % 62)  # labels travel with images
    return [ex["x"][:, 0].tolist() for ex in pop.examples]


def test_emnist_populations_are_pinned():
    from tasks.emnist.data import build_populations

    train, test = _writers(0, lambda k: 3), _writers(5, lambda k: 2 + k % 3)
    tr, va, te = build_populations(train, test, "user", 0, None, False)
    assert (tr.ids, va.ids, te.ids) == (["w0", "w2", "w3", "w4", "w5", "w6", "w7", "w9"], ["w8"], ["w1"])
    assert _ids(va) == [[80, 82, 86, 85, 81, 88, 87]] and _ids(te) == [[12, 11, 10, 15, 17, 16]]
    assert _ids(tr)[:2] == [[1, 6, 5, 0, 2], [20, 25, 27, 22, 28, 26, 21]]
    # Seen writers: train data shuffled; test data shuffled (another stream), halved.
    tr, va, te = build_populations(train, test, "example", 0, None, False)
    assert tr.ids == va.ids == te.ids == [f"w{k}" for k in range(10)]
    assert _ids(tr) == [[2, 0, 1], [11, 12, 10], [20, 22, 21], [30, 31, 32], [41, 40, 42], [52, 51, 50],
                        [60, 62, 61], [72, 71, 70], [80, 82, 81], [90, 91, 92]]
    assert _ids(va) == [[6], [15], [27, 26], [35], [45], [58, 57], [66], [75], [86, 87], [96]]
    assert _ids(te) == [[5], [17, 16], [28, 25], [36], [47, 46], [55, 56], [65], [76, 77], [85, 88], [95]]


# --------------------------------------------------------------------------
# Shakespeare and Stack Overflow
# --------------------------------------------------------------------------
def test_shakespeare_role_split_is_pinned(tiny_shakespeare):
    from tasks import nwp

    def split(seed, split_seed=None):
        cfg = nwp_cfg(vocab_size=5, cache_dir=str(tiny_shakespeare / "cache"))
        d = nwp.NWP(cfg, str(tiny_shakespeare), seed, split_seed).load()
        return [[int(c[-1]) for c in p.ids] for p in (d.train, d.val, d.test)]

    assert split(0) == [[0, 2, 3, 4, 5, 6, 7, 9], [8], [1]]
    assert split(1) == split(5, split_seed=1) == [[0, 1, 2, 4, 5, 7, 8, 9], [6], [3]]


def test_stackoverflow_heldout_halves_are_pinned(tmp_path):
    """TFF's held-out users, shuffled by default_rng([split seed, 3]), first half val."""
    from tasks import nwp

    post = [("2009-01-01 00:00:00.0 UTC", "the is")]
    clients = {("train", "u1"): post, ("train", "u2"): post, ("train", "u3"): post, ("test", "u1"): post,
               **{("heldout", f"h{i}"): post for i in range(6)}}
    _so_database(tmp_path, clients, {"the": 2, "is": 1})

    def halves(seed, max_users=None):
        cfg = nwp_cfg(source="stackoverflow", vocab_size=2, max_users=max_users)
        d = nwp.NWP(cfg, str(tmp_path), 0, seed).load()
        return d.val.ids, d.test.ids

    assert halves(0) == (["h0", "h1", "h3"], ["h2", "h4", "h5"])  # permutation [1, 3, 0, 5, 2, 4]
    assert halves(1) == (["h2", "h3", "h4"], ["h0", "h1", "h5"])  # permutation [2, 3, 4, 0, 5, 1]
    assert halves(0, max_users=2) == (["h1", "h3"], ["h0", "h5"])  # the first 2 x max_users
