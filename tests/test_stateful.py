"""Stateful FedAvg: the client-state store, its evaluation modes, and resume."""
import json

import numpy as np
import pytest

from conftest import compose, crash_then_resume, untimed_rows
from fedrecon_bench.algorithms import testing
from test_fast_engine import _build


def _algo(tiny_ratings, tmp_path, store):
    import tasks
    from fedrecon_bench.algorithms.stateful_fedavg.tff import StatefulFedAvg

    cfg = compose("+task=movielens", "+algo=stateful_fedavg", f"task.ratings_file={tiny_ratings}",
                  f"algo.store={store}", "task.embedding_dim=4")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    data = task.load()
    return StatefulFedAvg(task, data.info, cfg, run_dir=str(tmp_path)), task, data


@pytest.mark.tff
@pytest.mark.parametrize("store", ["memory", "disk"])
def test_client_resumes_from_exactly_the_local_state_it_left(tiny_ratings, tmp_path, store):
    algo, task, data = _algo(tiny_ratings, tmp_path, store)
    ds = {c: task.client_dataset(e) for c, e in zip(data.train.ids, data.train.examples)}
    a, b = data.train.ids[:2]
    seen_at_start = []
    steps = algo.steps  # the TF client steps (engines/tff/client.py)
    original = steps.train

    def spy(dataset, metrics):
        seen_at_start.append([v.numpy().copy() for v in steps.lvars])
        return original(dataset, metrics)

    steps.train = spy
    state = algo.initialize()
    state, m1 = algo.next(state, [ds[a]], [a])
    after_round_1 = algo.client_store.get(a)
    assert not np.allclose(after_round_1[0], steps.local_init[0])  # training moved it
    state, m2 = algo.next(state, [ds[b], ds[a]], [b, a])
    np.testing.assert_array_equal(seen_at_start[0][0], steps.local_init[0])   # a, first time: init
    np.testing.assert_array_equal(seen_at_start[1][0], steps.local_init[0])   # b, first time: init
    np.testing.assert_array_equal(seen_at_start[2][0], after_round_1[0])     # a again: its own state
    assert m2["store_clients"] == len(algo.client_store) == 2
    if store == "disk":
        assert sorted(p.name for p in (tmp_path / "client_store").iterdir()) == sorted(
            f"{c}.npz" for c in (a, b))
    else:
        assert m2["store_bytes"] == 2 * 4 * 4  # two clients, one float32 vector of 4


@pytest.mark.tff
def test_only_global_variables_are_aggregated(tiny_ratings, tmp_path):
    algo, task, data = _algo(tiny_ratings, tmp_path, "memory")
    state = algo.initialize()
    assert [g.shape for g in state["global"]] == [(25, 4)]  # no user vector on the server
    new, _ = algo.next(state, [task.client_dataset(data.train.examples[0])], [data.train.ids[0]])
    assert [g.shape for g in new["global"]] == [(25, 4)]


def test_stateful_run_reports_fresh_and_reconstructed_evaluation(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", "+algo=stateful_fedavg", f"task.ratings_file={tiny_ratings}",
                  "rounds=2", "clients_per_round=4", "eval_every=2", "logger=none")
    s = loop.run(cfg, str(tmp_path))
    assert s["status"] == "completed"
    assert {"val", "val_fresh", "test", "test_fresh"} <= s["final"].keys()
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    evals = [(r["split"], r.get("eval_mode")) for r in rows if r["split"] != "train"]
    assert evals == [("val", "fresh"), ("val", "recon"), ("test", "fresh"), ("test", "recon")]
    train = [r for r in rows if r["split"] == "train"]
    assert train[-1]["store_clients"] >= 4 and train[-1]["store_bytes"] == train[-1]["store_clients"] * 50 * 4
    assert s["comm"]["bytes_up_per_client"] == 25 * 50 * 4  # the user vectors never travel


@pytest.mark.parametrize("engine", testing.engines("tff", "fast"))
def test_stateful_resume_restores_the_client_store(tiny_ratings, tmp_path, monkeypatch, engine):
    from fedrecon_bench import algorithms

    StatefulFedAvg = algorithms.get("stateful_fedavg", engine)
    args = ("+task=movielens", "+algo=stateful_fedavg", f"task.ratings_file={tiny_ratings}",
            "rounds=6", "clients_per_round=8", "eval_every=3", "checkpoint_every=2",
            "logger=none", "algo.store=disk", f"engine={engine}")
    s = crash_then_resume(monkeypatch, StatefulFedAvg, lambda: compose(*args), tmp_path / "full",
                          tmp_path / "crashed", crash_call=5)  # after the round-4 checkpoint, mid round 5
    assert s["resumed_from_round"] == 4
    assert untimed_rows(tmp_path / "crashed") == untimed_rows(tmp_path / "full")
    full, resumed = (_stored_files(tmp_path / d / "client_store") for d in ("full", "crashed"))
    assert len(full) >= 8 and resumed.keys() == full.keys()
    for client, arrays in full.items():
        for a, b in zip(arrays, resumed[client], strict=True):
            np.testing.assert_array_equal(a, b, err_msg=client)


def _stored_files(root) -> dict:
    """A disk store's {file: its arrays}."""
    out = {}
    for f in sorted(root.glob("*.npz")):
        with np.load(f) as z:
            out[f.name] = [z[k] for k in sorted(z.files, key=int)]
    return out


@pytest.mark.parametrize("store", ["memory", "disk"])
def test_fast_store_restore_gives_the_same_local_variables_and_metrics(tiny_ratings, tmp_path, store):
    """engine=fast: round 2 run again after restoring the store snapshotted after round 1
    starts every client from the same stored variables, so it gives the same metrics, the
    same global weights and the same store."""
    a, data, pops = _build("fast", "stateful_fedavg", tiny_ratings, tmp_path, f"algo.store={store}")
    first, second = np.arange(0, 6), np.arange(3, 9)  # clients 3-5 in both rounds, 6-8 new in round 2
    ids = lambda idx: [data.train.ids[i] for i in idx]
    s1, _ = a.next(a.initialize(), pops[0].select(first), ids(first))
    a.client_store.snapshot(str(tmp_path / "snapshot"))
    after_1 = {c: a.client_store.get(c) for c in data.train.ids}
    s2, m2 = a.next(s1, pops[0].select(second), ids(second))
    after_2 = {c: a.client_store.get(c) for c in data.train.ids}
    assert m2["store_clients"] == 9 and not np.array_equal(after_2[ids(first)[3]][0], after_1[ids(first)[3]][0])
    a.client_store.restore(str(tmp_path / "snapshot"))
    assert len(a.client_store) == 6
    for c in data.train.ids:
        now = a.client_store.get(c)
        assert (now is None) == (after_1[c] is None), c
        for x, y in zip(now or [], after_1[c] or [], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=str(c))
    s2_again, m2_again = a.next(s1, pops[0].select(second), ids(second))
    assert m2_again == m2
    for x, y in zip(a.global_weights(s2_again).trainable, a.global_weights(s2).trainable, strict=True):
        np.testing.assert_array_equal(x, y)
    for c in data.train.ids:
        for x, y in zip(a.client_store.get(c) or [], after_2[c] or [], strict=True):
            np.testing.assert_array_equal(x, y, err_msg=str(c))


def test_seen_user_mode_keeps_ids_and_uses_stored_state(tiny_ratings, tmp_path):
    import tasks
    from fedrecon_bench import loop
    from tasks.movielens import read_ratings

    cfg = compose("+task=movielens", "+algo=stateful_fedavg", f"task.ratings_file={tiny_ratings}",
                  "task.split_by=example", "rounds=2", "clients_per_round=10", "eval_every=2",
                  "logger=none")
    data = tasks.get("movielens")(cfg.task, "unused", 0).load()
    assert data.split_by == "example" and set(data.val.ids) <= set(data.train.ids)
    # Each user's ratings cut 80/10/10: disjoint, complete, sized int(.8n), int(.9n) - int(.8n), rest.
    file = read_ratings(str(tiny_ratings))
    assert sorted(data.train.ids) == sorted(set(file.user.tolist()))  # 12-25 ratings each: all train
    for u in data.train.ids:
        parts = [pop.examples[pop.index_of(u)]["item"].tolist() if pop.index_of(u) is not None else []
                 for pop in (data.train, data.val, data.test)]
        n = int(np.sum(file.user == u))
        assert [len(p) for p in parts] == [n * 8 // 10, n * 9 // 10 - n * 8 // 10, n - n * 9 // 10], u
        assert sorted(sum(parts, [])) == sorted((file.item[file.user == u] - 1).tolist()), u  # dense = raw - 1
    s = loop.run(cfg, str(tmp_path))
    assert s["split_by"] == "example" and {"val", "val_stored", "test_stored"} <= s["final"].keys()


@pytest.mark.tff
def test_centralized_carries_global_variables_from_user_to_user(tiny_ratings, tmp_path):
    import tasks
    from fedrecon_bench import loop
    from fedrecon_bench.algorithms.centralized.tff import Centralized

    cfg = compose("+task=movielens", "+algo=centralized", f"task.ratings_file={tiny_ratings}",
                  "task.embedding_dim=4")
    task = tasks.get("movielens")(cfg.task, "unused", 0)
    data = task.load()
    algo = Centralized(task, data.info, cfg, run_dir=str(tmp_path))
    ds = [task.client_dataset(e) for e in data.train.examples[:2]]
    ids = data.train.ids[:2]
    # Two users in one round == user 1's round followed by user 2's round (sequential SGD).
    both, _ = algo.next(algo.initialize(), ds, ids)
    algo2 = Centralized(task, data.info, cfg, run_dir=str(tmp_path))
    s1, _ = algo2.next(algo2.initialize(), ds[:1], ids[:1])
    s2, _ = algo2.next(s1, ds[1:], ids[1:])
    np.testing.assert_allclose(both["global"][0], s2["global"][0], rtol=1e-6)
    cfg = compose("+task=movielens", "+algo=centralized", f"task.ratings_file={tiny_ratings}",
                  "rounds=2", "clients_per_round=8", "eval_every=2", "logger=none")
    s = loop.run(cfg, str(tmp_path / "run"))
    assert s["status"] == "completed" and "test" in s["final"] and s["local_params"] == 50
