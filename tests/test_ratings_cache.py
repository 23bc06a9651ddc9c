"""The per-process cache of parsed ratings files (tasks/movielens read_ratings_cached)."""
import os

import numpy as np
import pytest

from fedrecon_bench.errors import UserError
from tasks.movielens import data as mldata


@pytest.fixture
def counted(monkeypatch):
    """Counts the real parses behind the cache, starting from an empty cache."""
    calls, real = [], mldata.read_ratings
    monkeypatch.setattr(mldata, "_PARSED", {})
    monkeypatch.setattr(mldata, "read_ratings", lambda p: calls.append(p) or real(p))
    return calls


def _write(path, rows, mtime_ns=None):
    path.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{r}\n" for u, i, r in rows))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))
    return str(path)


def test_a_file_is_parsed_once_and_shared_read_only(tmp_path, counted):
    p = _write(tmp_path / "ratings.csv", [(1, 2, 3), (1, 3, 5), (2, 2, 1)])
    a, b = mldata.read_ratings_cached(p), mldata.read_ratings_cached(p)
    assert len(counted) == 1 and a is b
    np.testing.assert_array_equal(a.user, [1, 1, 2])
    np.testing.assert_array_equal(a.rating, [3, 5, 1])
    with pytest.raises(ValueError, match="read-only"):
        a.rating[0] = 4.0  # a caller that wrote into the shared arrays would change every run's data


def test_a_changed_file_is_parsed_again(tmp_path, counted):
    f = tmp_path / "ratings.csv"
    first = mldata.read_ratings_cached(_write(f, [(1, 2, 3)], mtime_ns=10**18))
    again = mldata.read_ratings_cached(_write(f, [(1, 2, 4)], mtime_ns=10**18 + 1))  # same size
    assert len(counted) == 2
    assert first.rating.tolist() == [3.0] and again.rating.tolist() == [4.0]


def test_the_cache_stays_small_and_errors_pass_through(tmp_path, counted):
    paths = [_write(tmp_path / f"r{k}.csv", [(k, 1, 1)]) for k in range(mldata._PARSED_MAX + 2)]
    for p in paths:
        mldata.read_ratings_cached(p)
    assert len(mldata._PARSED) == mldata._PARSED_MAX
    mldata.read_ratings_cached(paths[-1])
    assert len(counted) == len(paths)  # the newest stayed
    with pytest.raises(UserError, match="ratings file not found"):
        mldata.read_ratings_cached(str(tmp_path / "absent.csv"))


def test_movielens_load_twice_parses_once_and_gives_the_same_data(tiny_ratings, counted):
    import tasks
    from fedrecon_bench.algorithms import testing
    from fedrecon_bench.compose import compose

    cfg = compose("+algo=fedrecon", *testing.movielens_args(tiny_ratings))
    loads = [tasks.get("movielens")(cfg.task, cfg.data_dir, 0).load() for _ in range(2)]
    assert len(counted) == 1
    assert loads[0].train.ids == loads[1].train.ids and loads[0].test.ids == loads[1].test.ids
