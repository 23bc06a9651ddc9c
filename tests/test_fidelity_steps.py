"""The authors' split strategies, growing reconstruction epochs, client weighting,
jointly_train_variables and evaluate_reconstruction, against small hand-computed cases:
which batch goes where, how many steps run, which weights apply, which variables move."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from conftest import compose
from fedrecon_bench import splits
from fedrecon_bench.engines.fast.split import schedule, split_parts
from fedrecon_bench.engines.tff import split as tff_split
from test_fast_engine import nwp_args  # noqa: F401 (fixture)

# n batches, p -> (aggregated recon, aggregated post, skip recon, skip post): the authors' own
# worked cases (their federated_trainer_utils_test for n=3) and the edge cases n <= p.
TABLE = [
    (7, 2, [0, 1, 2, 3], [4, 5, 6], [0, 2, 4, 6], [1, 3, 5]),
    (7, 3, [0, 1, 2], [3, 4, 5, 6], [0, 3, 6], [1, 2, 4, 5]),
    (6, 2, [0, 1, 2, 3], [4, 5], [0, 2, 4], [1, 3, 5]),
    (4, 2, [0, 1, 2], [3], [0, 2], [1, 3]),
    (3, 2, [0, 1], [2], [0, 2], [1]),
    (3, 3, [0, 1], [2], [0], [1, 2]),
    (2, 2, [0, 1], [], [0], [1]),          # aggregated: nothing left to train or measure
    (2, 3, [0], [1], [0], [1]),
    (1, 2, [0], [], [0], []),
]


def _cfg(**kw):
    return OmegaConf.create({"mode": "disjoint", "proportion": 2, "recon_epochs": 1, "recon_epochs_constant": True,
                             "recon_steps_max": None, "post_recon_epochs": 1, "post_recon_steps_max": None, **kw})


def _tff(n, **kw):
    import tensorflow as tf

    recon, post = tff_split.build(_cfg(**kw), "split.train")(tf.data.Dataset.range(n))
    return [int(x) for x in recon], [int(x) for x in post]


def _fast(n, round_num=1, **kw):
    parts = split_parts(_cfg(**kw), round_num)
    return tuple(schedule(np.array([n]), *part)[0][0, :schedule(np.array([n]), *part)[1][0]].tolist()
                 for part in parts)


@pytest.mark.tff
@pytest.mark.parametrize("n,p,agg_r,agg_p,skip_r,skip_p", TABLE)
def test_split_strategies_put_each_batch_where_the_authors_do(n, p, agg_r, agg_p, skip_r, skip_p):
    for engine in (_tff, _fast):
        assert engine(n, mode="aggregated", proportion=p) == (agg_r, agg_p)
        assert engine(n, mode="skip", proportion=p) == (skip_r, skip_p)
    if p == 2:  # even/odd is skip with p = 2
        assert _tff(n) == _fast(n) == (skip_r, skip_p)


@pytest.mark.tff
def test_growing_reconstruction_epochs_run_min_round_max_epochs_then_the_cap():
    # 5 batches, disjoint: recon part [0, 2, 4]; max 3 epochs, at most 7 steps.
    kw = dict(recon_epochs=3, recon_epochs_constant=False, recon_steps_max=7)
    assert _fast(5, 1, **kw)[0] == [0, 2, 4]
    assert _fast(5, 2, **kw)[0] == [0, 2, 4, 0, 2, 4]
    assert _fast(5, 3, **kw)[0] == [0, 2, 4, 0, 2, 4, 0]  # 9 steps capped at 7
    assert _fast(5, 50, **kw)[0] == [0, 2, 4, 0, 2, 4, 0]
    assert _fast(5, splits.EVAL_ROUND, **kw)[0] == []      # the authors' evaluation: round 0
    assert _fast(5, 1, **kw)[1] == [1, 3]                  # the other part does not grow
    assert _fast(5, 2, **{**kw, "recon_epochs_constant": True})[0] == [0, 2, 4, 0, 2, 4, 0]
    assert _tff(5, recon_epochs=3, recon_epochs_constant=True)[0] == [0, 2, 4] * 3


def _movielens(path, tmp_path, algo, *extra):
    import tasks
    from fedrecon_bench import algorithms, engines

    cfg = compose(f"+algo={algo}", "engine=fast", "+task=movielens", f"task.ratings_file={path}",
                  "task.embedding_dim=2", "task.batch_size=3", *extra)
    task = tasks.build(cfg)
    data = task.load()
    a = algorithms.get(algo, "fast")(task, data.info, cfg, run_dir=str(tmp_path))
    return a, data, engines.get("fast").populations(task, data, a)[0]


def test_growing_epochs_schedule_min_round_max_steps_in_each_round(tiny_ratings, tmp_path):
    a, data, train = _movielens(tiny_ratings, tmp_path, "fedrecon", "split.train.recon_epochs=3",
                                "split.train.recon_epochs_constant=false")
    idx = np.arange(5)
    nb = train.num_batches[idx]
    state = a.initialize()
    for r in (1, 2, 3, 4):
        before = a.exec.steps["scheduled"]
        state, _ = a.next(state, train.select(idx))
        recon, post = -(-nb // 2), nb // 2  # even / odd batches of each client
        assert a.exec.steps["scheduled"] - before == int((min(r, 3) * recon + post).sum()), r


def test_client_weights_are_examples_tokens_or_one(nwp_args, tmp_path):  # noqa: F811
    """One round of two clients equals the hand-weighted mean of each client's own round
    (server SGD 1.0: the new weights are g - mean delta): weights = the examples or the
    non-pad target tokens of the post-reconstruction (odd) batches, or 1 each; with
    evaluate_reconstruction the reconstruction batches' tokens count too."""
    import tasks
    from fedrecon_bench import algorithms, engines

    def run(kind, idx, *extra):
        cfg = compose("+algo=fedrecon", "engine=fast", *nwp_args, f"algo.client_weighting={kind}", *extra)
        task = tasks.build(cfg)
        data = task.load()
        a = algorithms.get("fedrecon", "fast")(task, data.info, cfg, run_dir=str(tmp_path))
        train = engines.get("fast").populations(task, data, a)[0]
        pick = [int(i) for i in np.argsort(-train.num_batches, kind="stable")[:2]]  # clients with odd batches
        state, _ = a.next(a.initialize(), train.select(pick if idx is None else idx))
        return {k: np.asarray(v) for k, v in state.params.items()}, a.g0, data, pick

    _, g0, data, pick = run("examples", None)
    bs = 2  # nwp_args' task.batch_size
    for kind, extra, weight_of in [
        ("examples", (), lambda ex, odd: sum(len(b) for b in odd)),
        ("tokens", (), lambda ex, odd: sum(int((b != 0).sum()) for b in odd)),
        ("uniform", (), lambda ex, odd: 1),
        ("tokens", ("algo.evaluate_reconstruction=true",), lambda ex, odd: int((ex["y"] != 0).sum())),
    ]:
        both = run(kind, pick, *extra)[0]
        w, deltas = [], []
        for c in pick:
            alone = run(kind, [c], *extra)[0]
            deltas.append({k: np.asarray(g0[k]) - alone[k] for k in alone})
            ex = data.train.examples[c]
            odd = [ex["y"][i:i + bs] for i in range(0, len(ex["y"]), bs)][1::2]  # post-reconstruction batches
            w.append(weight_of(ex, odd))
        assert w[0] != w[1] or kind == "uniform"  # unequal weights, so a wrong one shows
        for k in both:
            want = np.asarray(g0[k]) - (w[0] * deltas[0][k] + w[1] * deltas[1][k]) / (w[0] + w[1])
            np.testing.assert_allclose(both[k], want, rtol=2e-5, atol=1e-6, err_msg=f"{kind} {extra} {k}")


def _mf_client(items, ratings, G, u, jointly: bool, recon_metrics: bool, bs=3, lr_r=0.1, lr_c=0.5):
    """One FedRecon client of the MF model by hand (float64): reconstruction of the user
    vector on the even batches, then SGD on the odd ones (the user vector too if jointly).
    Returns the new item table and the mean batch loss the client reports."""
    G, u, losses = G.astype(np.float64), u[0].astype(np.float64), []
    batches = [(items[i:i + bs], ratings[i:i + bs].astype(np.float64)) for i in range(0, len(items), bs)]
    for it, r in batches[0::2]:
        err = r - G[it] @ u
        if recon_metrics:
            losses.append(np.mean(err ** 2))
        u = u - lr_r * np.mean(-2 * err[:, None] * G[it], axis=0)
    for it, r in batches[1::2]:
        err = r - G[it] @ u
        losses.append(np.mean(err ** 2))
        g_items = np.zeros_like(G)
        np.add.at(g_items, it, -2 * err[:, None] * u / len(it))
        g_u = np.mean(-2 * err[:, None] * G[it], axis=0)
        G = G - lr_c * g_items
        if jointly:  # both updated from the same step's gradients
            u = u - lr_c * g_u
    return G, float(np.mean(losses))


@pytest.mark.parametrize("jointly,recon_metrics", [(False, False), (True, False), (False, True)])
def test_jointly_train_variables_and_evaluate_reconstruction_by_hand(tiny_ratings, tmp_path, jointly, recon_metrics):
    a, data, train = _movielens(tiny_ratings, tmp_path / str(jointly), "fedrecon",
                                f"algo.jointly_train_variables={str(jointly).lower()}",
                                f"algo.evaluate_reconstruction={str(recon_metrics).lower()}")
    c = int(np.argmax(train.num_batches))
    ex = data.train.examples[c]
    state, metrics = a.next(a.initialize(), train.select([c]))
    G, loss = _mf_client(ex["item"], ex["rating"], np.asarray(a.g0["item_embedding"]),
                         np.asarray(a.l0["user_embedding"]), jointly, recon_metrics)
    np.testing.assert_allclose(np.asarray(state.params["item_embedding"]), G, rtol=1e-4, atol=1e-6)
    assert metrics["loss"] == pytest.approx(loss, rel=1e-4)
    plain, _ = _mf_client(ex["item"], ex["rating"], np.asarray(a.g0["item_embedding"]),
                          np.asarray(a.l0["user_embedding"]), False, False)
    assert np.abs(G - plain).max() > 1e-4 if jointly else np.allclose(G, plain)  # only jointly moves g
