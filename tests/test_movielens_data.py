"""MovieLens loaders: the three file formats, errors, preparation, user split, download.

Tiny synthetic files under tmp_path, a loopback HTTP server for the download
path, and (when present) the shared real data. No TFF computation runs here.
"""
from __future__ import annotations

import hashlib
import http.server
import io
import os
import threading
import time
import zipfile

import numpy as np
import pytest
from omegaconf import OmegaConf

from fedrecon_bench.errors import UserError
from tasks.movielens import (ML1M_URL, Ratings, find_ratings_file, prepare, read_ratings,
                             split_users)


def write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    (path.write_bytes if isinstance(text, bytes) else path.write_text)(text)
    return path


DAT = "1::1193::5::978300760\n1::661::3::978302109\n2::1193::4::978298413\n"


def assert_ratings(r: Ratings, user, item, rating, timestamp):
    np.testing.assert_array_equal(r.user, user)
    np.testing.assert_array_equal(r.item, item)
    np.testing.assert_array_equal(r.rating, np.asarray(rating, np.float32))
    assert r.rating.dtype == np.float32
    if timestamp is None:
        assert r.timestamp is None
    else:
        np.testing.assert_array_equal(r.timestamp, timestamp)


# --------------------------------------------------------------------------
# The three formats
# --------------------------------------------------------------------------
def test_read_dat_official_layout(tmp_path):
    r = read_ratings(str(write(tmp_path / "ratings.dat", DAT)))
    assert_ratings(r, [1, 1, 2], [1193, 661, 1193], [5, 3, 4], [978300760, 978302109, 978298413])


def test_read_csv_with_timestamp(tmp_path):
    f = write(tmp_path / "r.csv", "user_id,item_id,rating,timestamp\n7,3,2,100\n7,9,5,101\n8,3,1,99\n")
    assert_ratings(read_ratings(str(f)), [7, 7, 8], [3, 9, 3], [2, 5, 1], [100, 101, 99])


def test_read_csv_without_timestamp(tmp_path):
    f = write(tmp_path / "r.csv", "user_id,item_id,rating\n7,3,2\n7,9,4.5\n8,3,1\n")
    assert_ratings(read_ratings(str(f)), [7, 7, 8], [3, 9, 3], [2, 4.5, 1], None)


def test_read_csv_with_utf8_bom_header(tmp_path):
    f = write(tmp_path / "r.csv", "\ufeffuser_id,item_id,rating\r\n1,2,3\r\n".encode("utf-8"))
    assert_ratings(read_ratings(str(f)), [1], [2], [3], None)


def test_read_ml100k_u_data(tmp_path):
    f = write(tmp_path / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n22\t377\t1\t878887116\n")
    assert_ratings(read_ratings(str(f)), [196, 186, 22], [242, 302, 377], [3, 3, 1],
                   [881250949, 891717742, 878887116])


# --------------------------------------------------------------------------
# Malformed input: one UserError naming file:line
# --------------------------------------------------------------------------
@pytest.mark.parametrize("name,text,line,fragment", [
    ("ratings.dat", DAT + "3::10::4\n", 4, "'3::10::4'"),                    # too few fields
    ("ratings.dat", DAT + "3::10::4::1::9\n", 4, "'3::10::4::1::9'"),        # too many fields
    ("ratings.dat", "1::10::4::5\n1::11::good::5\n", 2, "'1::11::good::5'"),  # non-numeric rating
    ("ratings.dat", "1::10::4::5\n1::x::4::5\n", 2, "'1::x::4::5'"),          # non-numeric item
    ("ratings.dat", "1::10::4::5\n1::11::nan::5\n", 2, "'1::11::nan::5'"),    # NaN rating
    ("ratings.dat", DAT + "4::10::7::5\n", 4, "rating 7 is outside 1..5"),  # out of range
    ("ratings.dat", DAT + "\n\n4::10::0::5\n", 6, "rating 0 is outside"),   # blank lines counted
    ("r.csv", "user_id,item_id,rating\n1,2,3\n1,3,9\n", 3, "rating 9 is outside"),
    ("r.csv", "user_id,item_id,rating\n1,2,3\n1,3\n", 3, "'1,3'"),
    ("r.csv", "user,item,rating\n1,2,3\n", 1, "CSV header is 'user,item,rating'"),
    ("r.csv", "user_id,item_id,rating,ts\n1,2,3,4\n", 1, "CSV header"),
    ("r.csv", "", 1, "CSV header is ''"),                                     # empty CSV
    ("u.data", "1\t2\t3\t4\n1\t2\t3\n", 2, "'1\\t2\\t3'"),
])
def test_malformed_line_names_file_and_line(tmp_path, name, text, line, fragment):
    f = write(tmp_path / name, text)
    with pytest.raises(UserError) as e:
        read_ratings(str(f))
    msg = str(e.value)
    assert msg.startswith(f"{f}:{line}: "), msg
    assert fragment in msg
    assert "\n" not in msg


@pytest.mark.parametrize("name,text", [("ratings.dat", ""), ("ratings.dat", "\n\n"),
                                       ("r.csv", "user_id,item_id,rating\n")])
def test_empty_file_is_a_user_error(tmp_path, name, text):
    f = write(tmp_path / name, text)
    with pytest.raises(UserError, match="no ratings in the file") as e:
        read_ratings(str(f))
    assert str(e.value).startswith(f"{f}: ")


def test_unknown_extension_and_missing_file(tmp_path):
    f = write(tmp_path / "ratings.txt", DAT)
    with pytest.raises(UserError, match="unknown ratings format") as e:
        read_ratings(str(f))
    assert str(e.value).startswith(f"{f}: ")
    with pytest.raises(UserError, match="ratings file not found") as e:
        read_ratings(str(tmp_path / "absent.dat"))
    assert str(tmp_path / "absent.dat") in str(e.value)


# --------------------------------------------------------------------------
# prepare() and split_users()
# --------------------------------------------------------------------------
def _ratings(pairs):
    """Ratings from (user, item) pairs; each rating is a function of (user, item)."""
    u = np.array([p[0] for p in pairs], np.int64)
    i = np.array([p[1] for p in pairs], np.int64)
    return Ratings(u, i, ((u * 7 + i) % 5 + 1).astype(np.float32), None)


def _rating_of(user, item):
    return float((user * 7 + item) % 5 + 1)


# Raw users 30, 10, 20 (out of order); items 500, 100, 300, 900 (900: only user 30).
SMALL = [(30, 500), (10, 100), (10, 300), (30, 900), (20, 300), (10, 500), (20, 100)]


def test_prepare_dense_ids_and_all_ratings_under_cap():
    users, ex, num_items, raw_items = prepare(_ratings(SMALL), seed=0, max_examples_per_user=10,
                                              max_users=None)
    assert users == [10, 20, 30]
    assert num_items == 4
    np.testing.assert_array_equal(raw_items, [100, 300, 500, 900])
    dense = {100: 0, 300: 1, 500: 2, 900: 3}
    for u, e in zip(users, ex):
        assert e["item"].dtype == np.int64 and e["rating"].dtype == np.float32
        want = sorted((dense[i], _rating_of(u, i)) for uu, i in SMALL if uu == u)
        assert sorted(zip(e["item"].tolist(), e["rating"].tolist())) == want


def test_prepare_max_users_keeps_first_by_id_and_counts_all_items():
    users, ex, num_items, _ = prepare(_ratings(SMALL), seed=0, max_examples_per_user=None,
                                      max_users=2)
    assert users == [10, 20]
    assert [len(e["item"]) for e in ex] == [3, 2]
    assert num_items == 4  # item 900 (only user 30) still counts: model size is independent


def _many(n_users=3, per_user=40):
    pairs = [(u, it) for u in range(1, n_users + 1) for it in range(per_user)]
    return _ratings(pairs[::-1])  # reversed file order: prepare must not rely on sorted input


def test_prepare_cap_takes_a_seeded_random_subset():
    r = _many()
    users, ex, _, raw_items = prepare(r, seed=3, max_examples_per_user=7, max_users=None)
    assert users == [1, 2, 3]
    for u, e in zip(users, ex):
        assert len(e["item"]) == 7
        assert len(set(e["item"].tolist())) == 7
        for it, rt in zip(raw_items[e["item"]], e["rating"]):
            assert rt == _rating_of(u, it)  # ratings travel with their items


def test_prepare_per_user_shuffle_is_seeded():
    r = _many()
    a = prepare(r, seed=0, max_examples_per_user=None, max_users=None)[1]
    b = prepare(r, seed=0, max_examples_per_user=None, max_users=None)[1]
    c = prepare(r, seed=1, max_examples_per_user=None, max_users=None)[1]
    for ea, eb, ec in zip(a, b, c):
        np.testing.assert_array_equal(ea["item"], eb["item"])
        np.testing.assert_array_equal(ea["rating"], eb["rating"])
        assert not np.array_equal(ea["item"], ec["item"])
        assert sorted(ea["item"].tolist()) == sorted(ec["item"].tolist()) == list(range(40))
        assert ea["item"].tolist() != sorted(ea["item"].tolist())  # shuffled, not file order


@pytest.mark.parametrize("n,sizes", [(100, (80, 10, 10)), (20, (16, 2, 2)), (6040, (4832, 604, 604))])
def test_split_users_disjoint_covering_sized(n, sizes):
    parts = split_users(n, seed=0)
    assert tuple(len(p) for p in parts) == sizes
    allp = np.concatenate(parts)
    assert sorted(allp.tolist()) == list(range(n))  # covers all, no user twice


def test_split_users_is_seeded():
    a, b, c = split_users(100, 0), split_users(100, 0), split_users(100, 1)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


# --------------------------------------------------------------------------
# Finding the data; download from a loopback HTTP server
# --------------------------------------------------------------------------
def _cfg(**kw):
    base = dict(dataset="ml-1m", ratings_file=None, download=True, download_url=ML1M_URL,
                download_md5="c4d9eecfca2ab87c1945afe126590906")
    base.update(kw)
    return OmegaConf.create(base)


def _zip(members: dict[str, str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in members.items():
            zf.writestr(name, text)
    return buf.getvalue()


ML1M_ZIP = _zip({"ml-1m/movies.dat": "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n",
                 "ml-1m/ratings.dat": DAT})


@pytest.fixture
def server():
    """Serves `srv.files` (path -> bytes) on 127.0.0.1; anything else is a 404."""
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            srv.hits.append(self.path)
            body = srv.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.hits = {}, []
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    t.join(5)


def _all_files(d):
    return sorted(os.path.relpath(os.path.join(r, f), d) for r, _, fs in os.walk(d) for f in fs)


def test_download_extracts_and_leaves_no_temp_files(tmp_path, server):
    server.files["/ml-1m.zip"] = ML1M_ZIP
    data = tmp_path / "data"
    cfg = _cfg(download_url=server.url + "/ml-1m.zip", download_md5=hashlib.md5(ML1M_ZIP).hexdigest())
    path = find_ratings_file(cfg, str(data))
    assert path == str(data / "ml-1m" / "ratings.dat")
    assert server.hits == ["/ml-1m.zip"]
    assert_ratings(read_ratings(path), [1, 1, 2], [1193, 661, 1193], [5, 3, 4],
                   [978300760, 978302109, 978298413])
    assert _all_files(data) == ["ml-1m.zip", os.path.join("ml-1m", "movies.dat"),
                                os.path.join("ml-1m", "ratings.dat")]
    assert (data / "ml-1m.zip").read_bytes() == ML1M_ZIP
    assert not [n for r, ds, fs in os.walk(data) for n in ds + fs if n.startswith(".")]
    # Second call: the extracted file is found, nothing is fetched again.
    assert find_ratings_file(cfg, str(data)) == path
    assert server.hits == ["/ml-1m.zip"]


def test_download_wrong_md5_leaves_nothing(tmp_path, server):
    server.files["/ml-1m.zip"] = ML1M_ZIP
    data = tmp_path / "data"
    url = server.url + "/ml-1m.zip"
    with pytest.raises(UserError) as e:
        find_ratings_file(_cfg(download_url=url, download_md5="0" * 32), str(data))
    msg = str(e.value)
    assert url in msg and "md5" in msg and hashlib.md5(ML1M_ZIP).hexdigest() in msg
    assert "FEDRECON_BENCH_DATA" in msg
    assert server.hits == ["/ml-1m.zip"]
    assert os.listdir(data) == []


def test_download_404_is_a_user_error(tmp_path, server):
    data = tmp_path / "data"
    url = server.url + "/missing.zip"
    with pytest.raises(UserError) as e:
        find_ratings_file(_cfg(download_url=url), str(data))
    assert url in str(e.value) and "404" in str(e.value)
    assert os.listdir(data) == []


def test_malformed_url_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="download failed") as e:
        find_ratings_file(_cfg(download_url="files.example/ml-1m.zip"), str(tmp_path / "data"))
    assert "files.example/ml-1m.zip" in str(e.value)
    assert os.listdir(tmp_path / "data") == []


def test_zip_with_climbing_member_is_refused(tmp_path, server):
    evil = _zip({"ml-1m/ratings.dat": DAT, "../evil.dat": "owned\n"})
    server.files["/ml-1m.zip"] = evil
    data = tmp_path / "sub" / "data"
    cfg = _cfg(download_url=server.url + "/ml-1m.zip", download_md5=hashlib.md5(evil).hexdigest())
    with pytest.raises(UserError, match=r"unsafe member name '\.\./evil\.dat'"):
        find_ratings_file(cfg, str(data))
    assert _all_files(tmp_path) == [os.path.join("sub", "data", "ml-1m.zip")]


def test_truncated_zip_in_data_dir_is_downloaded_again(tmp_path, server):
    server.files["/ml-1m.zip"] = ML1M_ZIP
    data = tmp_path / "data"
    write(data / "ml-1m.zip", ML1M_ZIP[: len(ML1M_ZIP) // 2])
    cfg = _cfg(download_url=server.url + "/ml-1m.zip", download_md5=hashlib.md5(ML1M_ZIP).hexdigest())
    path = find_ratings_file(cfg, str(data))
    assert server.hits == ["/ml-1m.zip"]
    assert (data / "ml-1m.zip").read_bytes() == ML1M_ZIP
    assert len(read_ratings(path).user) == 3


def test_no_data_and_no_download_names_env_var_and_url(tmp_path):
    data = tmp_path / "data"
    with pytest.raises(UserError) as e:
        find_ratings_file(_cfg(download=False), str(data))
    msg = str(e.value)
    assert "FEDRECON_BENCH_DATA" in msg and ML1M_URL in msg and "\n" not in msg
    assert not data.exists()


def test_existing_csv_is_used_without_download(tmp_path, server):
    data = tmp_path / "data"
    f = write(data / "ml-1m" / "ratings.csv", "user_id,item_id,rating\n1,1,4\n")
    assert find_ratings_file(_cfg(download_url=server.url + "/ml-1m.zip"), str(data)) == str(f)
    assert server.hits == []
    explicit = write(tmp_path / "mine.csv", "user_id,item_id,rating\n1,1,4\n")
    assert find_ratings_file(_cfg(ratings_file=str(explicit)), str(data)) == str(explicit)


def test_ml100k_found_under_data_dir(tmp_path):
    data = tmp_path / "data"
    f = write(data / "ml-100k" / "u.data", "196\t242\t3\t881250949\n186\t302\t3\t891717742\n")
    path = find_ratings_file(_cfg(dataset="ml-100k"), str(data))
    assert path == str(f)
    assert_ratings(read_ratings(path), [196, 186], [242, 302], [3, 3], [881250949, 891717742])
    with pytest.raises(UserError, match="ML-100K not found"):
        find_ratings_file(_cfg(dataset="ml-100k"), str(tmp_path / "empty"))
    with pytest.raises(UserError, match="task.dataset='ml-20m' is unknown"):
        find_ratings_file(_cfg(dataset="ml-20m"), str(data))


# --------------------------------------------------------------------------
# The shared real data (skipped when absent)
# --------------------------------------------------------------------------
_READ: dict[str, Ratings] = {}


def _read_cached(path) -> Ratings:
    if str(path) not in _READ:
        _READ[str(path)] = read_ratings(str(path))
    return _READ[str(path)]


def test_shared_official_dat_users_1_2999(shared_data):
    r = _read_cached(shared_data / "ml-1m" / "ratings_users_1-2999.dat")
    assert len(r.user) == 487_650
    np.testing.assert_array_equal(np.unique(r.user), np.arange(1, 3000))
    assert r.timestamp is not None and len(r.timestamp) == 487_650
    assert set(np.unique(r.rating).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    # First line of the official file: 1::1193::5::978300760
    assert (r.user[0], r.item[0], r.rating[0], r.timestamp[0]) == (1, 1193, 5.0, 978300760)


def test_shared_ratings_csv(shared_data):
    r = _read_cached(shared_data / "ml-1m" / "ratings.csv")
    assert len(r.user) == 1_000_209
    assert len(np.unique(r.user)) == 6040 and len(np.unique(r.item)) == 3706
    assert r.timestamp is None
    assert abs(r.rating.astype(np.float64).mean() - 3.581564453029317) < 1e-9


def test_shared_dat_and_csv_agree_through_item_ids(shared_data):
    import pandas as pd

    dat = _read_cached(shared_data / "ml-1m" / "ratings_users_1-2999.dat")
    csv = _read_cached(shared_data / "ml-1m" / "ratings.csv")
    ids = pd.read_csv(shared_data / "ml-1m" / "item_ids.csv")
    assert list(ids.columns) == ["item_id", "movie_id"] and len(ids) == 3686
    ids = ids.sort_values("item_id")
    assert ids["movie_id"].is_monotonic_increasing  # dense re-index in ascending MovieID order
    to_movie = dict(zip(ids["item_id"].tolist(), ids["movie_id"].tolist()))

    in_csv = csv.user <= 2999
    assert int(in_csv.sum()) == len(dat.user)  # same number of ratings for these users
    c_item = csv.item[in_csv]
    known_c = np.isin(c_item, ids["item_id"].to_numpy())
    known_d = np.isin(dat.item, ids["movie_id"].to_numpy())
    assert int((~known_c).sum()) == int((~known_d).sum()) <= 35
    c = np.stack([csv.user[in_csv][known_c],
                  np.array([to_movie[i] for i in c_item[known_c].tolist()]),
                  csv.rating[in_csv][known_c].astype(np.int64)], axis=1)
    d = np.stack([dat.user[known_d], dat.item[known_d], dat.rating[known_d].astype(np.int64)], axis=1)
    assert len(c) > 487_000
    sort = lambda a: a[np.lexsort(a.T[::-1])]
    np.testing.assert_array_equal(sort(c), sort(d))


def test_shared_prepare_full_csv_is_fast(shared_data):
    r = _read_cached(shared_data / "ml-1m" / "ratings.csv")
    t = time.perf_counter()
    users, ex, num_items, _ = prepare(r, seed=0, max_examples_per_user=300, max_users=None)
    took = time.perf_counter() - t
    print(f"prepare() on the full ratings.csv: {took:.3f} s")
    assert took <= 3.0
    assert len(users) == 6040 and num_items == 3706
    counts = np.bincount(np.unique(r.user, return_inverse=True)[1])
    assert [len(e["item"]) for e in ex] == np.minimum(counts, 300).tolist()
    assert sum(len(e["item"]) for e in ex) < 1_000_209


def test_shared_ml100k(shared_data):
    path = find_ratings_file(_cfg(dataset="ml-100k", download=False), str(shared_data))
    assert path == str(shared_data / "ml-100k" / "u.data")
    r = read_ratings(path)
    assert len(r.user) == 100_000
    assert len(np.unique(r.user)) == 943 and len(np.unique(r.item)) == 1682
    users, ex, num_items, _ = prepare(r, seed=0, max_examples_per_user=None, max_users=None)
    assert len(users) == 943 and num_items == 1682
    assert sum(len(e["item"]) for e in ex) == 100_000  # no cap: every rating kept
    assert min(len(e["item"]) for e in ex) == 20  # ML-100K: every user rated >= 20 movies
