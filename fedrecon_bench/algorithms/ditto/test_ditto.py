"""Ditto's own checks: its global model is FedAvg's round for round, personal models by hand
(sparse rows a client lacks included), lambda -> large keeps v at w, the evaluation modes,
the client store (resume, bounded memory), end-to-end runs on the three tasks, bad values
and engine=tff refused in one line."""
import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import psutil
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "tests"))  # the suite's tiny fixtures and run helpers
from conftest import crash_then_resume, untimed_rows  # noqa: E402
from test_fast_engine import emnist_args, nwp_args  # noqa: E402,F401  (fixtures)
from test_per_client import Collector, pooled_from_records  # noqa: E402

from fedrecon_bench import client_store as fast_store  # noqa: E402
from fedrecon_bench.algorithms import testing  # noqa: E402
from fedrecon_bench.compose import compose  # noqa: E402
from fedrecon_bench.errors import UserError  # noqa: E402

ROUNDS = [[0, 5, 9], [3, 5, 20], [5, 9]]  # training-client indices of each round (5 and 9 come back)
MEMORY = ("algo.store=memory",)


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    return testing.tiny_ratings(tmp_path_factory.mktemp("ditto") / "ratings.csv")


def _ids(data, idx):
    return [data.train.ids[i] for i in idx]


@pytest.mark.parametrize("extra", [(), ("dp=gaussian_fixed", "dp.noise_multiplier=0.5", "dp.clip=0.3")])
def test_global_model_is_fedavg_exactly(ratings, tmp_path, extra):
    """Same weights and training metrics as FedAvg after every round (Ditto adds only its
    store's size), with and without DP; the personal models did train meanwhile."""
    fedavg, data, pops_f = testing.build("fedavg", "fast", ratings, tmp_path / "fedavg", *extra)
    ditto, _, pops_d = testing.build("ditto", "fast", ratings, tmp_path / "ditto", *MEMORY, "algo.lam=0.5", *extra)
    sf, sd = fedavg.initialize(), ditto.initialize()
    for idx in ROUNDS:
        sf, mf = fedavg.next(sf, pops_f[0].select(idx), _ids(data, idx))
        sd, md = ditto.next(sd, pops_d[0].select(idx), _ids(data, idx))
        assert md == {**mf, "store_clients": md["store_clients"], "store_bytes": md["store_bytes"]}
        for a, b in zip(fedavg.global_weights(sf).trainable, ditto.global_weights(sd).trainable, strict=True):
            np.testing.assert_array_equal(a, b)
    assert md["store_clients"] == 5 and md["store_bytes"] == 5 * (25 * 4 + 4) * 4
    v = ditto.client_store.get(data.train.ids[5])
    assert np.abs(v[0] - np.asarray(sd.params["item_embedding"])).max() > 1e-3  # v is not w


def _steps(I, u, item, rating, lr, lam, anchor, steps, bs=3, momentum=0.0):
    """Steps on (item table I, user vector u) for the MSE of I[item] . u plus the pull
    lam (x - anchor) on every row, over the client's batches in order; sgd, or sgdm's
    acc <- momentum acc + g, x <- x - lr acc (from acc = 0)."""
    x, acc = [I.copy(), u.copy()], [np.zeros_like(I), np.zeros_like(u)]
    for s in range(steps):
        I, u = x
        j, r = item[s * bs:(s + 1) * bs], rating[s * bs:(s + 1) * bs]
        e = r - I[j] @ u[0]
        gI = np.zeros_like(I)
        np.add.at(gI, j, -2.0 / len(j) * e[:, None] * u[0][None, :])
        gu = (-2.0 / len(j) * e[:, None] * I[j]).sum(0, keepdims=True)
        g = [gI + lam * (I - anchor[0]), gu + lam * (u - anchor[1])]
        acc = [momentum * a + gi for a, gi in zip(acc, g)]
        x = [xi - lr * a for xi, a in zip(x, acc)]
    return x


@pytest.mark.parametrize("opt,lam", [(("sgd",), 0.5), (("sgd",), 30.0),  # eta_p lam = 1.5: (1 - 1.5)^3 < 0
                                     (("sgdm", "+algo.personal_optimizer.momentum=0.5"), 0.5)])
def test_one_client_rounds_by_hand(ratings, tmp_path, opt, lam):
    """One client a round: A, B, A. The global model: one SGD step each (server SGD 1.0: the
    client's model). v: three proximal steps towards the round's w, from w_0 at a first visit;
    A's second visit pulls rows it has no data for towards w_2, which B's round moved
    (plain SGD: the closed form; sgdm: every row steps)."""
    lr, plr, mom = 0.1, 0.05, 0.5 if opt[0] == "sgdm" else 0.0
    a, data, pops = testing.build(
        "ditto", "fast", ratings, tmp_path, *MEMORY, f"algo.lam={lam}", "algo.client_steps_max=1",
        f"algo.client_optimizer.learning_rate={lr}", f"algo.personal_optimizer.name={opt[0]}", *opt[1:],
        f"algo.personal_optimizer.learning_rate={plr}", "algo.personal_steps_max=3")
    A, B = 27, 22  # B's first batch has items 3 and 13, which A has no data for
    ex = {c: data.train.read(c) for c in (A, B)}
    ex = {c: (e["item"].astype(int), e["rating"].astype(np.float64)) for c, e in ex.items()}
    g0, l0 = a.task.initial_weights(data.info)
    w0 = [g0["item_embedding"].astype(np.float64), l0["user_embedding"].astype(np.float64)]
    assert not set(ex[B][0][:3]) <= set(ex[A][0])
    one = lambda w, c: _steps(*w, *ex[c], lr, 0.0, w, 1)
    three = lambda v, w, c: _steps(*v, *ex[c], plr, lam, w, 3, momentum=mom)
    w1 = one(w0, A)
    w2 = one(w1, B)
    want = {"w3": one(w2, A), B: three(w0, w1, B), A: three(three(w0, w0, A), w2, A)}
    state = a.initialize()
    for c in (A, B, A):
        state, _ = a.next(state, pops[0].select([c]), [data.train.ids[c]])
    got = {"w3": a.global_weights(state).trainable, **{c: a.client_store.get(data.train.ids[c]) for c in (A, B)}}
    for k in want:
        for x, y in zip(got[k], want[k], strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=str(k))
    far = np.setdiff1d(np.arange(25), ex[A][0])  # A's rows without data: only the pull moved them
    assert np.abs(w2[0][far] - w0[0][far]).max() > 1e-3
    if mom == 0:  # plain SGD's closed form on those rows: w_2 + (1 - eta_p lam)^3 (v - w_2), v = w_0 there
        np.testing.assert_allclose(got[A][0][far], w2[0][far] + (1 - plr * lam) ** 3 * (w0[0][far] - w2[0][far]),
                                   rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("lam,plr,within", [(1e6, 9e-7, True), (0.0, 0.1, False)])
def test_large_lambda_keeps_v_within_1e_3_of_w(ratings, tmp_path, lam, plr, within):
    """lam = 1e6 (eta_p lam = 0.9): each client's v ends within 1e-3 of the round's w, every
    variable and row; lam = 0: v drifts from w (the check can fail)."""
    a, data, pops = testing.build("ditto", "fast", ratings, tmp_path, *MEMORY, f"algo.lam={lam}",
                                  f"algo.personal_optimizer.learning_rate={plr}")
    state, worst = a.initialize(), 0.0
    for idx in ([0, 1, 2, 3], [2, 3, 4, 5], [0, 1, 5, 6]):
        w = a.global_weights(state).trainable
        state, _ = a.next(state, pops[0].select(idx), _ids(data, idx))
        for c in _ids(data, idx):
            worst = max(worst, *(np.abs(v - x).max() for v, x in zip(a.client_store.get(c), w, strict=True)))
    assert (worst < 1e-3) == within, worst


def test_unseen_users_personal_with_lam_zero_is_fedavg_finetune(ratings, tmp_path):
    """Unseen users: v <- w trained on the reconstruction part. lam = 0 is FedAvg's fine-tuning
    of every variable with the same optimizer, exactly; lam > 0 pulls it back towards w.
    "global" is FedAvg's global evaluation exactly."""
    tune = ("algo.eval=finetune", "algo.finetune.variables=all", "algo.finetune.optimizer.learning_rate=0.1")
    fedavg, data, pops = testing.build("fedavg", "fast", ratings, tmp_path / "fedavg", *tune)
    sf, _ = fedavg.next(fedavg.initialize(), pops[0].select(ROUNDS[0]), _ids(data, ROUNDS[0]))
    ref = fedavg.evaluate(sf, pops[1].all(), data.val.ids)
    got = {}
    for lam in (0.0, 1.0):
        d, _, pd = testing.build("ditto", "fast", ratings, tmp_path / f"d{lam}", *MEMORY, f"algo.lam={lam}")
        s, _ = d.next(d.initialize(), pd[0].select(ROUNDS[0]), _ids(data, ROUNDS[0]))
        got[lam] = d.evaluate(s, pd[1].all(), data.val.ids)
        assert got[lam]["global"] == ref["global"]
    assert got[0.0]["personal"] == ref["finetune"]
    assert abs(got[1.0]["personal"]["loss"] - ref["finetune"]["loss"]) > 1e-4
    assert abs(got[1.0]["personal"]["loss"] - ref["global"]["loss"]) > 1e-4


@pytest.mark.parametrize("init", ["initial", "global"])
def test_seen_users_measure_their_stored_model(ratings, tmp_path, monkeypatch, init):
    """Seen users (split_by=example): each user's "personal" record is the global evaluation of
    a model set to its stored v; a user never sampled has its first v (w_0, or with
    personal_init=global the current w). Chunked reading (one model at a time) sums the same."""
    from fedrecon_bench.algorithms.ditto import fast

    a, data, pops = testing.build("ditto", "fast", ratings, tmp_path, *MEMORY, "task.split_by=example",
                                  f"algo.personal_init={init}")
    state = a.initialize()
    for idx in ROUNDS:
        state, _ = a.next(state, pops[0].select(idx), _ids(data, idx))
    recon_from = pops[0].select([data.train.index_of(c) for c in data.val.ids])
    rec = Collector()
    ev = a.evaluate(state, pops[1].all(), data.val.ids, seen=True, recon_from=recon_from, records=rec)
    for mode in ("personal", "global"):
        pooled = pooled_from_records(a, rec.rows, mode, True)
        assert all(pooled[k] == pytest.approx(ev[mode][k], rel=1e-6) for k in pooled)
    visited = {str(data.train.ids[i]) for r in ROUNDS for i in r}
    assert visited & set(rec.rows["personal"]) and set(rec.rows["personal"]) - visited
    first = state if init == "global" else a.initialize()
    for c in data.val.ids:
        v = a.client_store.get(c)
        at = first if v is None else state._replace(params=dict(zip(a.names, v)))
        one = Collector()
        a.evaluate(at, pops[1].select([data.val.index_of(c)]), [c], seen=True,
                   recon_from=pops[0].select([data.train.index_of(c)]), records=one)
        want, got = one.rows["global"][str(c)], rec.rows["personal"][str(c)]
        assert got["num_examples"] == want["num_examples"]
        assert got["rmse"] == pytest.approx(want["rmse"], rel=1e-5), c
    monkeypatch.setattr(fast, "EVAL_BYTES", 1)
    again = a.evaluate(state, pops[1].all(), data.val.ids, seen=True, recon_from=recon_from)
    assert again["personal"] == pytest.approx(ev["personal"], rel=1e-6)


@pytest.mark.parametrize("override,key,must", [
    ("algo.lam=-0.1", "algo.lam", "must be a number >= 0"),
    ("algo.personal_epochs=1.5", "algo.personal_epochs", "must be an integer >= 1"),
    ("algo.personal_epochs=0", "algo.personal_epochs", "must be an integer >= 1"),
    ("algo.client_epochs=2.5", "algo.client_epochs", "must be an integer >= 1"),
    ("algo.personal_steps_max=0", "algo.personal_steps_max", "must be an integer >= 1 or null"),
    ("algo.personal_init=w0", "algo.personal_init", "is unknown; use one of initial, global"),
    ("algo.store=cloud", "algo.store", "is unknown; use one of memory, disk"),
    ("algo.personal_optimizer.name=lbfgs", "algo.personal_optimizer.name", "is unknown"),
    ("algo.personal_optimizer.learning_rate=0", "algo.personal_optimizer.learning_rate", "must be a number > 0"),
])
def test_bad_values_are_refused_in_one_line(ratings, override, key, must):
    msg = testing.refused("ditto", ratings, override)
    assert msg.startswith(f"{key}=") and must in msg, msg


def test_bad_personal_optimizer_option_is_refused_before_training(ratings, tmp_path):
    """The personal optimizer's other options are checked as the algorithm is built."""
    with pytest.raises(UserError, match=r"^algo\.personal_optimizer\.momentum=2 must be a number in \[0, 1\)$"):
        testing.build("ditto", "fast", ratings, tmp_path, "algo.personal_optimizer.name=sgdm",
                      "+algo.personal_optimizer.momentum=2")


def test_engine_tff_is_refused_in_one_line(ratings, tmp_path):
    """No TFF process for Ditto: algorithms.get names the algorithm and the engine that runs
    it; the CLI exits 2 with that one line before anything loads."""
    from fedrecon_bench import algorithms

    with pytest.raises(UserError, match=r"^\+algo=ditto does not run on engine=tff: TFF has no Ditto process.*"
                                        r"; use engine=fast$"):
        algorithms.get("ditto", "tff")
    env = dict(os.environ, WANDB_MODE="offline", TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "+algo=ditto", "engine=tff",
                        *testing.movielens_args(ratings), f"hydra.run.dir={tmp_path / 'run'}", "logger=none"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    lines = [l for l in p.stderr.splitlines() if l.strip()]
    assert p.returncode == 2 and lines[-1].startswith("error: +algo=ditto does not run on engine=tff"), p.stderr
    assert not any("Traceback" in l for l in lines) and not (tmp_path / "run").exists()


def test_kill_and_resume_gives_identical_metrics_and_store(ratings, tmp_path, monkeypatch):
    from fedrecon_bench.algorithms.ditto.fast import Ditto

    args = ("+algo=ditto", *testing.movielens_args(ratings), "rounds=6", "clients_per_round=8", "eval_every=3",
            "checkpoint_every=2", "logger=none", "algo.personal_init=global", "task.split_by=example")
    s = crash_then_resume(monkeypatch, Ditto, lambda: compose(*args), tmp_path / "full", tmp_path / "crashed",
                          crash_call=5)  # after the round-4 checkpoint, mid round 5
    assert s["resumed_from_round"] == 4 and s["status"] == "completed"
    assert untimed_rows(tmp_path / "crashed") == untimed_rows(tmp_path / "full")
    full, resumed = (sorted((tmp_path / d / "client_store").glob("*.npz")) for d in ("full", "crashed"))
    assert len(full) >= 8 and [f.name for f in full] == [f.name for f in resumed]
    for f, g in zip(full, resumed):
        assert f.read_bytes() == g.read_bytes(), f.name


def _growth(ratings, tmp_path, store: str) -> tuple[int, int]:
    """(resident memory growth while 28 more clients are stored, in bytes; the store's size).
    Each client keeps a 2.6 MB personal model (embedding_dim=25,600); three warm-up rounds
    revisit clients 0-3, then each round stores 4 new clients."""
    a, data, pops = testing.build("ditto", "fast", ratings, tmp_path, f"algo.store={store}",
                                  "task.embedding_dim=25600", "fast.clients=sequential")
    assert len(data.train) == 32
    state, proc, rss = a.initialize(), psutil.Process(), []
    for idx in [[0, 1, 2, 3]] * 3 + [list(range(i, i + 4)) for i in range(4, 32, 4)]:
        state, _ = a.next(state, pops[0].select(idx), _ids(data, idx))
        rss.append(proc.memory_info().rss)
    return max(rss[3:]) - rss[2], a.client_store.nbytes


@pytest.mark.parametrize("mode", ["vmap", "host"])
def test_a_round_reads_and_writes_personal_models_a_group_at_a_time(ratings, tmp_path, monkeypatch, mode):
    """The round's personal pass holds one group's models (fast.max_group clients; host: one), not
    every sampled client's: Ditto's peak memory does not grow with clients_per_round."""
    from fedrecon_bench.algorithms.ditto.fast import Ditto

    read, written = [], []
    personal, put = Ditto.personal, fast_store.put_stacked
    monkeypatch.setattr(Ditto, "personal", lambda self, w, ids: read.append(list(ids)) or personal(self, w, ids))
    monkeypatch.setattr(fast_store, "put_stacked",
                        lambda st, names, ids, v: written.append(list(ids)) or put(st, names, ids, v))
    a, data, pops = testing.build("ditto", "fast", ratings, tmp_path, *MEMORY, f"fast.clients={mode}",
                                  "fast.max_group=2")
    testing.rounds(a, data, pops, [list(range(7))])
    most = 1 if mode == "host" else 2
    assert max(map(len, read)) <= most and max(map(len, written)) <= most
    assert sorted(sum(read, [])) == sorted(sum(written, [])) == sorted(_ids(data, range(7)))
    assert len(a.client_store) == 7


@pytest.mark.xfail(testing.new_jax(), strict=False, reason=(
    "on jax 0.10's CPU runtime resident memory grew 37 MB over these rounds with the disk store "
    "(CI's modern environment, under pytest-xdist); flat on jax 0.4.31 (the default environment)"))
def test_disk_store_keeps_memory_flat_as_clients_are_stored(ratings, tmp_path):
    """With algo.store=disk the models stay on disk (one .npz a client): resident memory does
    not grow with the clients stored (73 MB of models more); the memory store grows by them."""
    disk, stored = _growth(ratings, tmp_path / "disk", "disk")
    assert len(list((tmp_path / "disk" / "client_store").glob("*.npz"))) == 32
    assert stored > 32 * 26 * 25600 * 4  # 32 whole models (item table and user vector) on disk
    memory, _ = _growth(ratings, tmp_path / "memory", "memory")
    assert disk < 0.15 * stored < 0.6 * stored < memory, (disk, memory, stored)


def _complete(run_dir, *, dp: bool) -> dict:
    """summary.json of a completed Ditto run, checked: both evaluation modes (personal the
    headline) with the per-client spread, participation, and the store's size as on disk."""
    s = json.loads((run_dir / "summary.json").read_text())
    assert s["status"] == "completed", s.get("error")
    assert {"train", "val", "val_global", "test", "test_global"} <= s["final"].keys()
    assert s["final"]["test"]["eval_mode"] == "personal" and "loss_client_p50" in s["final"]["test"]
    assert {p.name[:4] for p in (run_dir / "per_client").glob("*.parquet")} == {"val_", "test"}
    files = list((run_dir / "client_store").glob("*.npz"))
    assert files and s["client_store"] == {"clients": len(files), "bytes": sum(f.stat().st_size for f in files)}
    assert set(s["participation"]) == {"mean_visits", "max_visits", "never_sampled"}
    assert ("privacy" in s and "dp_clip" in s["final"]["train"]) == dp
    return s


COMMON = ("rounds=2", "clients_per_round=3", "eval_every=1", "logger=none", "checkpoint_every=1")


@pytest.mark.parametrize("task,extra", [
    ("movielens", ()),                                     # examples (dp=none's default), unseen users
    ("emnist", ("algo.client_weighting=uniform",)),
    ("nwp", ("algo.client_weighting=tokens",)),
])
def test_runs_end_to_end_on_each_task(request, ratings, tmp_path, task, extra):
    from fedrecon_bench import loop

    args = testing.movielens_args(ratings) if task == "movielens" else request.getfixturevalue(f"{task}_args")
    loop.run(compose("+algo=ditto", *args, *COMMON, *extra), str(tmp_path / "run"))
    _complete(tmp_path / "run", dp="dp=gaussian_fixed" in extra)


def test_cli_run_with_dp_and_seen_users(ratings, tmp_path):
    """The command line: seen users (their stored models are the headline), DP with uniform
    weighting; the run contract's last line."""
    env = dict(os.environ, WANDB_MODE="offline", TF_CPP_MIN_LOG_LEVEL="2")
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "+algo=ditto", *testing.movielens_args(ratings),
                        *COMMON, "task.split_by=example", "dp=gaussian_fixed", "dp.clip=0.5",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=600)
    assert p.returncode == 0 and p.stdout.strip().splitlines()[-1] == f"run_dir: {tmp_path / 'run'}", p.stderr
    s = _complete(tmp_path / "run", dp=True)
    assert s["split_by"] == "example" and s["privacy"]["mechanism"] == "gaussian_fixed"
