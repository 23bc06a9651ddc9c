"""The authors' MovieLens preparation, evaluation sampling, optimizer options and the
one-line refusals of the paper-fidelity keys, on small hand-made cases."""
import json

import numpy as np
import pytest

from conftest import compose
from fedrecon_bench.errors import UserError


@pytest.fixture
def dat(tmp_path):
    """ratings.dat: user 10 has 10 ratings (file order: items 1..10, timestamps with a tie),
    user 20 has 7, user 30 has 3; ratings 1..5 repeating."""
    ts = {10: [5, 3, 3, 9, 1, 7, 8, 2, 6, 4], 20: [70, 10, 60, 20, 50, 30, 40], 30: [3, 2, 1]}
    lines = []
    for u, stamps in ts.items():
        for k, t in enumerate(stamps):
            lines.append(f"{u}::{k + 1}::{k % 5 + 1}::{t}")
    path = tmp_path / "ratings.dat"
    path.write_text("\n".join(lines) + "\n")
    return path, ts


def _load(path, *overrides, split_seed=7):
    import tasks

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={path}", "task.preparation=authors",
                  f"split_seed={split_seed}", *overrides)
    return tasks.build(cfg).load()


def test_authors_seen_user_split_ranks_by_time_then_shuffles_and_caps_each_part(dat):
    path, ts = dat
    d = _load(path, "task.split_by=example", "task.max_examples_per_user=4")
    by_user = lambda pop: dict(zip(pop.ids, pop.examples))
    tr, va, te = by_user(d.train), by_user(d.val), by_user(d.test)
    # user 10: time order (ties in file order: items 2 before 3) = items 5,8,2,3,10,1,9,6,7,4;
    # rank/10 <= 0.8: the first 8; <= 0.9: item 7; then item 4.
    order = [5, 8, 2, 3, 10, 1, 9, 6]
    perm = np.random.RandomState(7).permutation(8)[:4]  # their seeded shuffle, then the cap of 4
    assert (tr[10]["item"] + 1).tolist() == [order[i] for i in perm]
    assert (va[10]["item"] + 1).tolist() == [7] and (te[10]["item"] + 1).tolist() == [4]
    # user 20 (7 ratings; time order items 2,4,6,7,5,3,1): k/7 <= 0.8 -> 5 (capped at 4), <= 0.9 -> 6;
    # user 30 (3; time order 3,2,1): 2/3 <= 0.8 train, 3/3 test, no val
    assert sorted(tr[20]["item"] + 1) == sorted([2, 4, 6, 7, 5][i] for i in np.random.RandomState(7).permutation(5)[:4])
    assert (va[20]["item"] + 1).tolist() == [3] and (te[20]["item"] + 1).tolist() == [1]
    assert sorted(tr[30]["item"] + 1) == [2, 3] and 30 not in va and (te[30]["item"] + 1).tolist() == [1]
    assert tr[10]["rating"].tolist() == [[5, 3, 2, 3, 5, 1, 4, 1][i] for i in perm]  # ratings travel along


def test_authors_unseen_users_shuffle_each_user_then_the_user_list(dat):
    path, _ = dat
    d = _load(path, "task.train_fraction=0.34", "task.val_fraction=0.33", "task.max_examples_per_user=5")
    users = np.array([10, 20, 30])[np.random.RandomState(7).permutation(3)]  # their list shuffle
    assert (d.train.ids, d.val.ids, d.test.ids) == ([users[0]], [users[1]], [users[2]])
    ex = dict(zip(d.train.ids + d.val.ids + d.test.ids, d.train.examples + d.val.examples + d.test.examples))
    perm = np.random.RandomState(7).permutation(10)[:5]  # file order 1..10, shuffled, capped
    assert (ex[10]["item"] + 1).tolist() == (perm + 1).tolist()


def test_normalize_ratings_maps_1_to_5_onto_minus_1_to_1(dat):
    path, _ = dat
    d = _load(path, "task.normalize_ratings=true", "task.split_by=example")
    values = np.concatenate([e["rating"] for p in (d.train, d.val, d.test) for e in p.examples])
    assert set(values.tolist()) == {-1.0, -0.5, 0.0, 0.5, 1.0}


def test_seen_split_without_timestamps_is_refused(tiny_ratings):
    with pytest.raises(UserError, match="timestamp"):
        _load(tiny_ratings, "task.split_by=example")


# --------------------------------------------------------------------------
# Evaluation sampling
# --------------------------------------------------------------------------
def test_eval_sample_val_per_round_test_once_seeded_by_the_split_seed():
    from fedrecon_bench.loop import eval_sample

    cfg = compose("+task=movielens", "+algo=fedrecon", "eval_clients=5")
    v1, v2 = eval_sample(cfg, 20, "val", 10, 42), eval_sample(cfg, 20, "val", 20, 42)
    assert len(v1) == len(set(v1.tolist())) == 5 and v1.max() < 20
    assert v1.tolist() != v2.tolist()  # a new sample at each evaluation
    assert v1.tolist() == eval_sample(cfg, 20, "val", 10, 42).tolist()  # reproducible (resume)
    assert eval_sample(cfg, 20, "test", 30, 42).tolist() == eval_sample(cfg, 20, "test", 99, 42).tolist()
    assert eval_sample(compose("+task=movielens", "+algo=fedrecon"), 20, "val", 10, 42) is None  # all


def test_a_run_evaluates_the_sampled_clients(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}", "rounds=4",
                  "eval_every=2", "clients_per_round=5", "eval_clients=3", "logger=none", "checkpoint_every=0",
                  "task.embedding_dim=2")
    s = loop.run(cfg, str(tmp_path))
    rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
    assert s["status"] == "completed"
    assert [r["clients"] for r in rows if r["split"] in ("val", "test")] == [3, 3, 3]
    with pytest.raises(UserError, match="eval_clients=9 is larger than the 4 val clients"):
        loop.run(compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                         "eval_clients=9", "clients_per_round=5", "logger=none"), str(tmp_path / "b"))
    assert not (tmp_path / "b" / "metrics.jsonl").exists()


# --------------------------------------------------------------------------
# Optimizers: one step by hand, both engines
# --------------------------------------------------------------------------
def _steps(opt_cfg, grads, w0=1.0):
    import tensorflow as tf
    from omegaconf import OmegaConf

    from fedrecon_bench.engines.fast import optim
    from fedrecon_bench.engines.tff import optim as tff_optim

    o = OmegaConf.create(opt_cfg)
    fast, tff_opt = optim.build(o, "k"), tff_optim.build(o, "k")
    fs, fw = fast.init({"w": np.float32(w0)}), {"w": np.float32(w0)}
    ts, tw = tff_opt.initialize((tf.TensorSpec((), tf.float32),)), (tf.constant(w0),)
    out = []
    for g in grads:
        fs, fw = fast.next(fs, fw, {"w": np.float32(g)})
        ts, tw = tff_opt.next(ts, tw, (tf.constant(g, tf.float32),))
        out.append((float(fw["w"]), float(tw[0])))
    return out


@pytest.mark.tff
def test_nesterov_momentum_steps_as_keras_sgd_nesterov():
    out = _steps({"name": "sgdm", "learning_rate": 0.1, "momentum": 0.9, "nesterov": True}, [1.0, 2.0])
    # acc1 = 1, w1 = 1 - 0.1 (1 + 0.9) = 0.81; acc2 = 0.9 + 2 = 2.9, w2 = 0.81 - 0.1 (2 + 2.61) = 0.349
    for (fast, tff), want in zip(out, (0.81, 0.349)):
        assert fast == pytest.approx(want, rel=1e-6) and tff == pytest.approx(want, rel=1e-6)


@pytest.mark.tff
def test_yogi_with_the_authors_accumulator_and_initial_step():
    cfg = {"name": "yogi", "learning_rate": 0.1, "beta_2": 0.99, "epsilon": 1e-3,
           "initial_accumulator_value": 0.0, "initial_step": 1}
    (fast, tff), = _steps(cfg, [0.5])
    # t = 2: lr_t = 0.1 sqrt(1 - 0.99^2) / (1 - 0.9^2); m = 0.05; v = 0.01 * 0.25
    lr_t = 0.1 * np.sqrt(1 - 0.99 ** 2) / (1 - 0.9 ** 2)
    want = 1.0 - lr_t * 0.05 / (np.sqrt(0.0025) + 1e-3)
    assert fast == pytest.approx(want, rel=1e-5) and tff == pytest.approx(want, rel=1e-5)


# --------------------------------------------------------------------------
# One-line refusals
# --------------------------------------------------------------------------
@pytest.mark.parametrize("overrides,pattern", [
    (("task.spreadout_lambda=0.1",), "task.spreadout_lambda=0.1: the authors' spreadout regularizer never"),
    (("task.train_fraction=0.9", "task.val_fraction=0.2"), "task.train_fraction=0.9"),
    (("task.preparation=theirs",), "task.preparation='theirs' is unknown"),
    (("task.global_bias=true",), "task.global_bias=true adds to the biases"),
])
def test_bad_movielens_options_are_refused(tiny_ratings, overrides, pattern):
    with pytest.raises(UserError, match=pattern) as e:
        _load(tiny_ratings, *overrides)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("overrides,pattern", [
    (("algo.client_weighting=tokens",), "algo.client_weighting=tokens: task 'movielens' has no num_tokens"),
    (("algo.client_weighting=size",), "algo.client_weighting='size' is unknown"),
    (("eval_clients=0",), "eval_clients=0 must be all or an integer"),
    (("split_seed=abc",), "split_seed='abc' must be an integer"),
    (("split.train.mode=skip", "split.train.proportion=1"), "split.train.proportion=1 must be"),
    (("split.eval.mode=reuse",), "split.eval.mode='reuse'"),
    (("+algo.server_optimizer.nesterov=true",), "algo.server_optimizer.nesterov applies to sgdm"),
    (("+algo.server_optimizer.initial_step=-1", "algo.server_optimizer.name=adam"),
     "algo.server_optimizer.initial_step=-1 must be an integer >= 0"),
])
def test_bad_fidelity_keys_are_refused_in_one_line(overrides, pattern):
    from fedrecon_bench import validate

    with pytest.raises(UserError, match=pattern) as e:
        validate.check_config(compose("+task=movielens", "+algo=fedrecon", *overrides))
    assert "\n" not in str(e.value)


def test_stateful_fedavg_refuses_token_weighting():
    from fedrecon_bench import validate

    cfg = compose("+task=nwp", "+algo=stateful_fedavg", "algo.client_weighting=tokens")
    with pytest.raises(UserError, match="stateful_fedavg cannot weight clients that way.*fedavg.*fedrecon"):
        validate.check_config(cfg)
    validate.check_config(compose("+task=nwp", "+algo=stateful_fedavg", "algo.client_weighting=uniform"))
