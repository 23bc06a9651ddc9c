"""Paper-scale populations: clients read lazily from TFF's databases (here synthetic ones
in TFF's real on-disk format, fedrecon_bench/synth.py), a round reading only its clients
through a byte-bounded cache, with the same data, metrics and resume as an eager read."""
import numpy as np
import pytest

from conftest import compose, crash_then_resume, untimed_rows
from fedrecon_bench import synth
from fedrecon_bench.cache import ByteLRU

SMALL = ["task.vocab_size=200", "task.num_oov_buckets=8", "task.embedding_dim=4", "task.lstm_units=6",
         "task.projection_dim=4", "task.lstm_unroll=1"]


@pytest.fixture(scope="module")
def so_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    info = synth.stackoverflow(str(out), 1500, seed=1, log=None)
    return out, info


def _nwp(so_dir, *overrides):
    import tasks

    cfg = compose("experiment=nwp_stackoverflow_paper", f"data_dir={so_dir[0]}", "logger=none", *SMALL,
                  *overrides)
    task = tasks.get("nwp")(cfg.task, cfg.data_dir, cfg.seed)
    return cfg, task, task.load()


@pytest.mark.tff
def test_synthetic_stackoverflow_is_read_by_tffs_own_loader(so_dir):
    import tensorflow_federated as tff

    from tasks.nwp import stackoverflow as so

    out, info = so_dir
    train, heldout, test = tff.simulation.datasets.stackoverflow.load_data(cache_dir=str(out / "stackoverflow"))
    assert (len(train.client_ids), len(heldout.client_ids), len(test.client_ids)) == (
        info["clients"]["train"], info["clients"]["heldout"], info["clients"]["test"])
    sizes = so.client_sizes(info["database"], "train")
    cid = max(sizes, key=sizes.get)
    rows = list(train.create_tf_dataset_for_client(cid).as_numpy_iterator())
    assert len(rows) == sizes[cid] > 1024  # a few users above the paper's cap
    assert set(rows[0]) == {"creation_date", "score", "tags", "title", "tokens", "type"}
    assert rows[0]["tokens"].decode().split()[0].startswith("w") and rows[0]["creation_date"].endswith(b"UTC")
    k = np.array(list(sizes.values()))
    assert np.median(k) <= 3 and k.mean() > 10  # long-tailed: most users small
    counts = so.word_counts(str(out / "stackoverflow"), 50)
    assert len(counts) == 50 and list(counts.values()) == sorted(counts.values(), reverse=True)
    assert list(counts)[0] == "w0" and counts["w0"] <= info["clients"]["train"]  # users, not uses


@pytest.mark.tff
def test_synthetic_emnist_is_read_by_tffs_own_loader(tmp_path):
    import tensorflow_federated as tff

    info = synth.emnist(str(tmp_path), 6, seed=0, images=30.0, log=None)
    for digits in (False, True):
        train, test = tff.simulation.datasets.emnist.load_data(only_digits=digits,
                                                               cache_dir=str(tmp_path / "emnist-tff"))
        assert len(train.client_ids) == info["clients"][("digits_only" if digits else "all") + "_train"]
        b = next(iter(train.create_tf_dataset_for_client(train.client_ids[0]).batch(1000)))
        assert b["pixels"].shape[1:] == (28, 28) and 0 <= float(b["pixels"].numpy().min())
        assert (b["label"].numpy() < 10).all() == digits or not digits


def test_a_round_reads_only_its_sampled_clients(so_dir):
    from fedrecon_bench import algorithms, engines

    cfg, task, data = _nwp(so_dir)
    algo = algorithms.get("fedrecon", "fast")(task, data.info, cfg)
    train, val, _ = engines.get("fast").populations(task, data, algo)
    assert data.train.reads == data.val.reads == 0 and len(data.train) == so_dir[1]["clients"]["train"]
    train.select([3, 8, 11, 400]).data
    assert data.train.reads == 4
    train.select([8, 11, 401]).data  # two cached
    assert data.train.reads == 5
    train.prefetch([7, 9])  # the next round, read in the background
    sel = train.select([7, 9])
    assert data.train.reads == 7 and sel.data["x"].shape[:2] == (2, sel.data["mask"].shape[1])


@pytest.mark.tff
def test_an_engine_tff_round_reads_only_its_sampled_clients(so_dir):
    from fedrecon_bench import algorithms, engines

    cfg, task, data = _nwp(so_dir)
    algo = algorithms.get("fedrecon", "fast")(task, data.info, cfg)
    tff_train = engines.get("tff").populations(task, data, algo)[0]
    before = data.train.reads
    assert len(tff_train.select([20, 21])) == 2 and data.train.reads == before + 2


def test_same_seed_same_round_data_lazy_or_eager(so_dir):
    from fedrecon_bench.engines.fast.data import Population
    from tasks.base import ClientSet

    cfg, task, data = _nwp(so_dir)
    fm = task.fast_model(data.info)
    eager = ClientSet(data.train.ids, [data.train.read(i) for i in range(len(data.train))])
    lazy, ref = Population(fm, data.train), Population(fm, eager)
    rng = np.random.default_rng([cfg.seed, 2])
    for _ in range(3):
        idx = rng.choice(len(eager), 20, replace=False)
        a, b = lazy.select(idx), ref.select(idx)
        for k in b.data:
            np.testing.assert_array_equal(a.data[k], b.data[k])
        for part in (("even", 5, 100), ("odd", 1, 100), ("all", 1, None)):
            sa, sb = a.schedule(*part), b.schedule(*part)
            np.testing.assert_array_equal(sa.idx, sb.idx)
            np.testing.assert_array_equal(sa.count, sb.count)


def test_kill_and_resume_on_a_lazy_population_gives_identical_metrics(so_dir, tmp_path, monkeypatch):
    from fedrecon_bench import algorithms

    args = ("rounds=5", "clients_per_round=6", "eval_every=2", "checkpoint_every=2",
            "task.max_users=300", "engine=fast")
    s = crash_then_resume(monkeypatch, algorithms.get("fedrecon", "fast"), lambda: _nwp(so_dir, *args)[0],
                          tmp_path / "full", tmp_path / "crashed", crash_call=3)  # in round 3
    assert s["resumed_from_round"] == 2 and s["status"] == "completed"
    full = untimed_rows(tmp_path / "full")
    assert untimed_rows(tmp_path / "crashed") == full and len(full) == 5 + 3 + 1


def test_the_cache_never_exceeds_its_byte_limit(so_dir):
    from fedrecon_bench.engines.fast.data import Population

    lru = ByteLRU(1000)
    for k in range(50):
        lru.get(k, lambda: {"a": np.zeros(30 + k, np.float32)})
        assert lru.bytes <= 1000
    assert lru.get("big", lambda: np.zeros(2000, np.uint8)).nbytes == 2000 and "big" not in lru._items
    cfg, task, data = _nwp(so_dir)
    pop = Population(task.fast_model(data.info), data.train, cache_bytes=64 << 10)
    rng = np.random.default_rng(0)
    for _ in range(20):
        pop.select(rng.choice(len(pop), 10, replace=False)).data
    assert 0 < pop.cache.peak <= 64 << 10 and pop.cache.misses > len(pop.cache)  # it evicted
