"""FedRep's own checks: a first visit is FedRecon's client update exactly, rounds of one
client by hand in numpy (the stored head comes back), the evaluation modes (stored the
headline for seen users, recon for unseen), kill and resume with the disk store, end-to-end
runs on the three tasks (DP, each weighting) and bad values refused in one line. Engine
equality: tests/test_fast_engine.py's CASES."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's tiny fixtures and run helpers
from conftest import crash_then_resume, untimed_rows  # noqa: E402
from test_fast_engine import emnist_args, nwp_args  # noqa: E402,F401  (fixtures)

from fedrecon_bench.algorithms import testing  # noqa: E402
from fedrecon_bench.compose import compose  # noqa: E402

ROUNDS = [[0, 5, 9], [3, 20]]  # every client new: FedRep's rounds are FedRecon's
OPTS = ("algo.client_optimizer.learning_rate=0.3", "algo.reconstruction_optimizer.learning_rate=0.05")
STORE = ("algo.store=memory",)
OWN = ("store_clients", "store_bytes", "num_examples")  # FedRep's training rows add these to FedRecon's


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    return testing.tiny_ratings(tmp_path_factory.mktemp("fedrep") / "ratings.csv")


def _ids(data, idx):
    return [data.train.ids[i] for i in idx]


@pytest.mark.parametrize("extra", [(), ("dp=gaussian_fixed", "dp.noise_multiplier=0.5", "dp.clip=0.3")])
def test_first_visits_are_fedrecon_client_updates_exactly(ratings, tmp_path, extra):
    """FedRecon reconstructing and training on every batch (split/train=simple: mode reuse),
    recon_epochs = local_epochs: while every sampled client is new, FedRep's rounds give the
    same global weights, training metrics (FedRep adds the store's size and examples) and unseen users' "recon"
    evaluation, with and without DP. A returning client breaks it (the check can fail)."""
    fedrecon, data, pf = testing.build("fedrecon", "fast", ratings, tmp_path / "fedrecon", *OPTS, *extra,
                                       "split/train=simple", "split.train.recon_epochs=2")
    fedrep, _, pr = testing.build("fedrep", "fast", ratings, tmp_path / "fedrep", *OPTS, *extra, *STORE,
                                  "algo.local_epochs=2")
    sf, sr = fedrecon.initialize(), fedrep.initialize()
    for idx in ROUNDS + [[5, 9]]:
        sf, mf = fedrecon.next(sf, pf[0].select(idx), _ids(data, idx))
        sr, mr = fedrep.next(sr, pr[0].select(idx), _ids(data, idx))
        same = [np.array_equal(a, b) for a, b in zip(fedrecon.global_weights(sf).trainable,
                                                     fedrep.global_weights(sr).trainable, strict=True)]
        if idx == [5, 9]:  # they come back with their stored heads
            assert not all(same) and mr["loss"] != mf["loss"]
            break
        assert all(same) and {k: v for k, v in mr.items() if k not in OWN} == mf
        assert mr["num_examples"] == sum(len(data.train.read(i)["rating"]) for i in idx)  # the global phase's
        evf, evr = (a.evaluate(s, p[1].all(), data.val.ids) for a, s, p in ((fedrecon, sf, pf), (fedrep, sr, pr)))
        assert list(evr) == ["recon", "fresh"] and [evr["recon"]] == list(evf.values())  # FedRecon: one mode
    assert mr["store_clients"] == 5 and mr["store_bytes"] == 5 * 4 * 4  # one 4-float head each


def _phase(I, u, item, rating, lr, which, steps, bs=3):
    """`steps` SGD steps on `which` (0: the item table I, global; 1: the user vector u, local)
    of the MSE of I[item] . u over the client's batches in order, the other frozen."""
    for s in range(steps):
        j, r = item[s * bs:(s + 1) * bs], rating[s * bs:(s + 1) * bs]
        e = r - I[j] @ u[0]
        if which == 0:
            g = np.zeros_like(I)
            np.add.at(g, j, -2.0 / len(j) * e[:, None] * u[0][None, :])
            I = I - lr * g
        else:
            u = u - lr * (-2.0 / len(j) * e[:, None] * I[j]).sum(0, keepdims=True)
    return I, u


@pytest.mark.parametrize("local_steps,global_steps", [(1, 1), (3, 2)])
def test_one_client_rounds_by_hand(ratings, tmp_path, local_steps, global_steps):
    """One client a round: A, B, A (server SGD 1.0: the global model is the client's). Each
    visit: local steps on u from its stored value (init on a first visit) with I frozen, then
    global steps on I with the new u frozen; A's second visit starts from the u it left."""
    lr, rlr = 0.1, 0.05
    a, data, pops = testing.build(
        "fedrep", "fast", ratings, tmp_path, *STORE, "algo.local_epochs=1", f"algo.local_steps_max={local_steps}",
        f"algo.global_steps_max={global_steps}", f"algo.client_optimizer.learning_rate={lr}",
        f"algo.reconstruction_optimizer.learning_rate={rlr}")
    A, B = 27, 22
    ex = {c: data.train.read(c) for c in (A, B)}
    ex = {c: (e["item"].astype(int), e["rating"].astype(np.float64)) for c, e in ex.items()}
    g0, l0 = a.task.initial_weights(data.info)
    I, u0 = g0["item_embedding"].astype(np.float64), l0["user_embedding"].astype(np.float64)
    heads = {A: u0, B: u0}
    for c in (A, B, A):
        _, heads[c] = _phase(I, heads[c], *ex[c], rlr, 1, local_steps)
        I, _ = _phase(I, heads[c], *ex[c], lr, 0, global_steps)
    state = a.initialize()
    for c in (A, B, A):
        state, _ = a.next(state, pops[0].select([c]), [data.train.ids[c]])
    np.testing.assert_allclose(a.global_weights(state).trainable[0], I, rtol=1e-5, atol=1e-6)
    for c in (A, B):
        np.testing.assert_allclose(a.client_store.get(data.train.ids[c])[0], heads[c], rtol=1e-5, atol=1e-6)
    assert np.abs(heads[A] - _phase(I, u0, *ex[A], rlr, 1, local_steps)[1]).max() > 1e-4  # the stored u mattered


def test_seen_users_lead_with_their_stored_heads(ratings, tmp_path):
    """Seen users (split_by=example): "stored" first, each user measured with its stored head
    (a never-sampled user: init), by hand: the RMSE of I[item] . u on its held-out ratings;
    "recon" fits a head from init on its training data instead."""
    a, data, pops = testing.build("fedrep", "fast", ratings, tmp_path, *STORE, "task.split_by=example",
                                  "algo.local_epochs=2")
    state = a.initialize()
    for idx in ROUNDS:
        state, _ = a.next(state, pops[0].select(idx), _ids(data, idx))
    recon_from = pops[0].select([data.train.index_of(c) for c in data.val.ids])
    ev = a.evaluate(state, pops[1].all(), data.val.ids, seen=True, recon_from=recon_from)
    assert list(ev) == ["stored", "recon"] and ev["stored"]["loss"] != ev["recon"]["loss"]
    I = np.asarray(a.global_weights(state).trainable[0], np.float64)
    u0 = np.asarray(a.task.initial_weights(data.info)[1]["user_embedding"], np.float64)
    visited = [c for c in data.val.ids if a.client_store.get(c) is not None]
    never = [c for c in data.val.ids if a.client_store.get(c) is None]
    for c in (visited[0], never[0]):
        one = a.evaluate(state, pops[1].select([data.val.index_of(c)]), [c], seen=True,
                         recon_from=pops[0].select([data.train.index_of(c)]))
        u = a.client_store.get(c)[0] if c in visited else u0
        e = data.val.read(data.val.index_of(c))
        want = np.sqrt(np.mean((e["rating"] - I[e["item"].astype(int)] @ u[0]) ** 2))
        assert one["stored"]["rmse"] == pytest.approx(want, rel=1e-5), c
        assert abs(one["recon"]["rmse"] - want) > 1e-4, c


@pytest.mark.parametrize("override,key,must", [
    ("algo.local_epochs=1.5", "algo.local_epochs", "must be an integer >= 1"),
    ("algo.local_epochs=0", "algo.local_epochs", "must be an integer >= 1"),
    ("algo.global_epochs=2.5", "algo.global_epochs", "must be an integer >= 1"),
    ("algo.local_steps_max=0", "algo.local_steps_max", "must be an integer >= 1 or null"),
    ("algo.global_steps_max=-1", "algo.global_steps_max", "must be an integer >= 1 or null"),
    ("algo.store=cloud", "algo.store", "is unknown; use one of memory, disk"),
    ("algo.client_weighting=items", "algo.client_weighting", "is unknown"),
    ("algo.reconstruction_optimizer.name=lbfgs", "algo.reconstruction_optimizer.name", "is unknown"),
])
def test_bad_values_are_refused_in_one_line(ratings, override, key, must):
    msg = testing.refused("fedrep", ratings, override)
    assert msg.startswith(f"{key}=") and must in msg, msg


def test_kill_and_resume_gives_identical_metrics_and_store(ratings, tmp_path, monkeypatch):
    """A crash mid round 3 of 4, resumed from the round-2 checkpoint: the same metrics.jsonl
    and the same stored heads, byte for byte, as the run that never stopped. (engine=tff keeps
    its heads in the same store as stateful FedAvg's, whose resume tests/test_stateful.py
    checks on both engines.)"""
    from fedrecon_bench.algorithms.fedrep.fast import FedRep

    args = ("+algo=fedrep", *testing.movielens_args(ratings), "rounds=4", "clients_per_round=6", "eval_every=2",
            "checkpoint_every=2", "logger=none", "algo.store=disk", "algo.local_epochs=2", "task.split_by=example")
    s = crash_then_resume(monkeypatch, FedRep, lambda: compose(*args), tmp_path / "full", tmp_path / "crashed",
                          crash_call=3)
    assert s["resumed_from_round"] == 2 and s["status"] == "completed"
    assert untimed_rows(tmp_path / "crashed") == untimed_rows(tmp_path / "full")
    full, resumed = (sorted((tmp_path / d / "client_store").glob("*.npz")) for d in ("full", "crashed"))
    assert len(full) >= 6 and [f.name for f in full] == [f.name for f in resumed]
    for f, g in zip(full, resumed):
        assert f.read_bytes() == g.read_bytes(), f.name


def _complete(run_dir, *, dp: bool, seen: bool) -> dict:
    """summary.json of a completed run, checked: the headline mode (stored for seen users,
    recon for unseen) with the per-client spread, the other mode, participation, the store."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed", s.get("error")
    head, other = ("stored", "recon") if seen else ("recon", "fresh")
    assert {"train", "val", f"val_{other}", "test", f"test_{other}"} <= s["final"].keys(), s["final"].keys()
    assert s["final"]["test"]["eval_mode"] == head and "loss_client_p50" in s["final"]["test"]
    assert {p.name[:4] for p in (run_dir / "per_client").glob("*.parquet")} == {"val_", "test"}
    files = list((run_dir / "client_store").glob("*.npz"))
    assert files and s["client_store"] == {"clients": len(files), "bytes": sum(f.stat().st_size for f in files)}
    assert set(s["participation"]) == {"mean_visits", "max_visits", "never_sampled"}
    assert ("privacy" in s and "dp_clip" in s["final"]["train"]) == dp
    return s


COMMON = ("rounds=2", "clients_per_round=3", "eval_every=1", "logger=none", "checkpoint_every=1",
          "algo.store=disk", "algo.local_epochs=2")


@pytest.mark.parametrize("task,extra", [
    ("movielens", ()),                                     # examples (dp=none's default), unseen users
    ("emnist", ("algo.client_weighting=uniform",)),
    ("nwp", ("algo.client_weighting=tokens",)),
])
def test_runs_end_to_end_on_each_task(request, ratings, tmp_path, task, extra):
    from fedrecon_bench import loop

    args = testing.movielens_args(ratings) if task == "movielens" else request.getfixturevalue(f"{task}_args")
    loop.run(compose("+algo=fedrep", *args, *COMMON, *extra), str(tmp_path / "run"))
    _complete(tmp_path / "run", dp=False, seen=False)


def test_cli_run_with_dp_and_seen_users(ratings, tmp_path):
    """The command line: seen users (their stored heads are the headline), DP with uniform
    weighting; the run contract's last line."""
    env = dict(os.environ, WANDB_MODE="offline", TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "+algo=fedrep", *testing.movielens_args(ratings),
                        *COMMON, "task.split_by=example", "dp=gaussian_fixed", "dp.clip=0.5",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == f"run_dir: {tmp_path / 'run'}", p.stderr
    s = _complete(tmp_path / "run", dp=True, seen=True)
    assert s["split_by"] == "example" and s["privacy"]["mechanism"] == "gaussian_fixed"
