"""analysis.explore: the TFF tutorial's data exploration, on hand-made and real MovieLens."""
from __future__ import annotations

import collections
import pathlib

import pytest

from analysis import explore

MOVIES = {1: "Toy Story (1995)::Animation|Children's|Comedy",
          2: "Jumanji (1995)::Adventure|Children's|Fantasy",
          3: "Heat (1995)::Action|Crime|Thriller",
          5: "Sabrina (1995)::Comedy|Romance"}


def _ratings():
    """(user, movie, rating): 10 users; user u rates the movies with (u + m) % 4 != 0."""
    return [(u, m, (u * m) % 5 + 1) for u in range(1, 11) for m in MOVIES if (u + m) % 4 != 0]


def _write_movies(d: pathlib.Path):
    d.mkdir(parents=True, exist_ok=True)
    (d / "movies.dat").write_bytes("".join(f"{m}::{t}\n" for m, t in MOVIES.items()).encode("latin-1"))


@pytest.fixture
def ml_dat(tmp_path):
    d = tmp_path / "ml-1m"
    _write_movies(d)
    (d / "ratings.dat").write_text("".join(f"{u}::{m}::{r}::97830{u}\n" for u, m, r in _ratings()))
    return d / "ratings.dat"


@pytest.fixture
def ml_csv(tmp_path):
    """The same ratings with dense item ids (ascending MovieID), as the shared ratings.csv."""
    d = tmp_path / "csv" / "ml-1m"
    _write_movies(d)
    dense = {m: i + 1 for i, m in enumerate(sorted(MOVIES))}
    (d / "ratings.csv").write_text("user_id,item_id,rating\n" +
                                   "".join(f"{u},{dense[m]},{r}\n" for u, m, r in _ratings()))
    (d / "item_ids.csv").write_text("item_id,movie_id\n" +
                                    "".join(f"{i},{m}\n" for m, i in dense.items()))
    return d / "ratings.csv"


def _expected_top(user: int):
    c = collections.Counter(g for u, m, _ in _ratings() if u == user
                            for g in MOVIES[m].split("::")[1].split("|"))
    return sorted(c.items(), key=lambda t: (-t[1], t[0]))[:5]


def test_explore_movielens_tutorial_views(ml_dat, tmp_path, capsys):
    out = tmp_path / "out"
    assert explore.main(["+task=movielens", f"task.ratings_file={ml_dat}", "task.max_users=null",
                         "--users", "1,2,99", "--out", str(out)]) == 0
    report = (out / "report.txt").read_text()
    hist = collections.Counter(r for _, _, r in _ratings())
    assert "ratings: " + ", ".join(f"{k}: {hist[k]}" for k in sorted(hist)) in report
    assert "movies per genre: Children's 2, Comedy 2, Animation 1" in report
    # user 1 rates movies 1, 2, 5 -> Children's 2, Comedy 2, then the rest alphabetically
    assert _expected_top(1) == [("Children's", 2), ("Comedy", 2), ("Adventure", 1),
                                ("Animation", 1), ("Fantasy", 1)]
    assert ("user 1 (3 ratings): top genres Children's rated 2 times, Comedy rated 2 times, "
            "Adventure rated 1 times, Animation rated 1 times, Fantasy rated 1 times") in report
    assert "user 99: no ratings in" in report
    n = len({u for u, _, _ in _ratings()})
    assert f"train: {int(n * 0.8)} clients" in report  # the benchmark's own populations
    for stem in ("ratings", "ratings_per_user", "genres", "user_genres", "examples_per_client"):
        import matplotlib.image as mpimg

        img = mpimg.imread(out / f"{stem}.png")
        assert img[..., :3].var() > 0.001, stem
        assert (out / f"{stem}.pdf").is_file()
    assert "wrote " in capsys.readouterr().out


def test_dense_item_ids_are_mapped_through_item_ids_csv(ml_dat, ml_csv, tmp_path):
    cfgs = [explore.compose(["+task=movielens", f"task.ratings_file={p}"]) for p in (ml_dat, ml_csv)]
    reports = []
    for i, cfg in enumerate(cfgs):
        report: list[str] = []
        explore.explore_movielens(cfg, str(tmp_path / f"o{i}"), report, [1, 2, 3])
        reports.append([l for l in report if l.startswith(("user ", "ratings:", "ratings per"))])
    assert reports[0] == reports[1] and len(reports[0]) == 5
    # without the mapping the genre views are left out, with a note naming the file
    (ml_csv.parent / "item_ids.csv").unlink()
    report = []
    explore.explore_movielens(cfgs[1], str(tmp_path / "o3"), report, [1])
    assert any("has dense item ids and there is no" in l and "item_ids.csv" in l for l in report)
    assert not any(l.startswith("user 1") for l in report)


def test_explore_errors(tmp_path, capsys):
    assert explore.main(["--users", "1"]) == 2
    assert "error: no task given; add +task=<name>" in capsys.readouterr().err
    assert explore.main(["+task=nope"]) == 2
    assert "error: unknown task 'nope'" in capsys.readouterr().err
    assert explore.main(["+task=movielens", "--users", "a,b"]) == 2
    assert "error: --users 'a,b': give UserIDs like 1,2,3" in capsys.readouterr().err
    bad = tmp_path / "ml-1m"
    bad.mkdir()
    (bad / "movies.dat").write_text("1::Toy Story\n")
    with pytest.raises(Exception, match=r"movies.dat:1: malformed line"):
        explore.read_movies(str(bad))


@pytest.mark.slow
def test_real_ratings_csv_and_original_dat_agree_on_genres(shared_data, tmp_path):
    """ratings.csv (dense ids, mapped through item_ids.csv) and the original ratings.dat
    for users 1-2999 must give the same per-user genre counts."""
    ml = shared_data / "ml-1m"
    out = {}
    for name in ("ratings.csv", "ratings_users_1-2999.dat"):
        cfg = explore.compose(["+task=movielens", f"task.ratings_file={ml / name}"])
        report: list[str] = []
        explore.explore_movielens(cfg, str(tmp_path / name), report, [1, 2, 3, 2999])
        out[name] = [l for l in report if l.startswith("user ")]
    assert out["ratings.csv"] == out["ratings_users_1-2999.dat"]
    assert out["ratings.csv"][0] == ("user 1 (53 ratings): top genres Drama rated 21 times, "
                                     "Children's rated 20 times, Animation rated 18 times, "
                                     "Comedy rated 14 times, Musical rated 14 times")


def test_target_names_for_emnist_labels_and_nwp_words(tmp_path):
    import json

    from omegaconf import OmegaConf

    name, ignore = explore.target_names(OmegaConf.create({"task": {"name": "emnist"}}), {})
    assert [name(i) for i in (0, 9, 10, 35, 36, 61)] == ["0", "9", "A", "Z", "a", "z"] and not ignore
    vocab = tmp_path / "vocab.json"
    vocab.write_text(json.dumps({"words": ["the", "and"]}))
    cfg = OmegaConf.create({"task": {"name": "nwp", "vocab_size": 2, "num_oov_buckets": 1}})
    name, ignore = explore.target_names(cfg, {"vocab_file": str(vocab)})
    # ids: 0 pad (left out), 1..V words, V+1..V+K OOV, then BOS, EOS
    assert [name(i) for i in (1, 2, 3, 4, 5)] == ["the", "and", "<oov>", "<bos>", "<eos>"]
    assert ignore == {0}
