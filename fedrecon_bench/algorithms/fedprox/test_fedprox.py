"""FedProx's own checks: mu = 0 is FedAvg's round exactly, a one-client case by hand, and bad
values refused (engine equality: tests/test_fast_engine.py's registry)."""
import numpy as np
import pytest

from fedrecon_bench.algorithms import testing
from fedrecon_bench.compose import compose

ROUNDS = [[0, 5, 9], [3, 5, 20]]  # training-client indices of each round


@pytest.fixture(scope="module")
def ratings(tmp_path_factory):
    return testing.tiny_ratings(tmp_path_factory.mktemp("fedprox") / "ratings.csv")


@pytest.mark.parametrize("engine", testing.engines("fast", "tff"))
def test_mu_zero_is_fedavg_exactly(ratings, tmp_path, engine):
    got = {a: testing.rounds(*testing.build(a, engine, ratings, tmp_path / a, *extra), ROUNDS)
           for a, extra in (("fedavg", ()), ("fedprox", ("algo.mu=0",)))}
    (w_avg, m_avg), (w_prox, m_prox) = got["fedavg"], got["fedprox"]
    for a, b in zip(w_avg, w_prox):
        np.testing.assert_array_equal(a, b)
    assert m_avg == m_prox


def _by_hand(item, rating, I, u, lr: float, mu: float, bs: int, steps: int):
    """Plain SGD on (item table I, user vector u) for the MSE of I[item] . u, with the
    proximal gradient mu (w - w0); one client and server SGD 1.0, so the new global model
    is the client's."""
    I0, u0 = I.copy(), u.copy()
    for s in range(steps):
        j, r = item[s * bs:(s + 1) * bs], rating[s * bs:(s + 1) * bs]
        e = r - I[j] @ u[0]
        gI = np.zeros_like(I)
        np.add.at(gI, j, -2.0 / len(j) * e[:, None] * u[0][None, :])
        gu = (-2.0 / len(j) * e[:, None] * I[j]).sum(0, keepdims=True)
        I, u = I - lr * (gI + mu * (I - I0)), u - lr * (gu + mu * (u - u0))
    return I, u


@pytest.mark.parametrize("engine", testing.engines("fast", "tff"))
def test_one_client_two_steps_by_hand(ratings, tmp_path, engine):
    """Step 1 starts at w_t, where the proximal term is 0; step 2 moves by the loss gradient
    plus mu (w_1 - w_t), on every row the client has changed."""
    mu, lr = 0.5, 0.1
    a, data, pops = testing.build("fedprox", engine, ratings, tmp_path, f"algo.mu={mu}", "clients_per_round=1",
                                  f"algo.client_optimizer.learning_rate={lr}", "algo.client_steps_max=2")
    ex = data.train.read(4)
    g0, l0 = a.task.initial_weights(data.info)
    start = (ex["item"].astype(int), ex["rating"].astype(np.float64), g0["item_embedding"].astype(np.float64),
             l0["user_embedding"].astype(np.float64))
    I, u = _by_hand(*start, lr, mu, bs=3, steps=2)
    weights, _ = testing.rounds(a, data, pops, [[4]])
    got = dict(zip(a.global_weights(a.initialize()).names, weights))
    np.testing.assert_allclose(got["item_embedding"], I, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got["user_embedding"], u, rtol=1e-5, atol=1e-6)
    plain, _ = _by_hand(*start, lr, 0.0, bs=3, steps=2)
    assert np.abs(plain - I).max() > 1e-4  # the proximal term moved the second step


@pytest.mark.parametrize("value", ["-0.1", "abc"])
def test_bad_mu_is_refused_in_one_line(ratings, value):
    msg = testing.refused("fedprox", ratings, f"algo.mu={value}")
    assert msg.startswith("algo.mu=") and "must be a number >= 0" in msg


@pytest.mark.tff
def test_tffs_own_fedprox_adds_the_term_with_the_opposite_sign(ratings, tmp_path):
    """Why tff.py composes FedAvg with a proximal client optimizer: TFF 0.87's
    build_weighted_fed_prox adds mu (w_t - w) to the gradient, so its two steps equal the
    hand computation with -mu, not mu. If a TFF release fixes it, this test says so."""
    import tasks
    import tensorflow_federated as tff

    from fedrecon_bench import engines
    from fedrecon_bench.algorithms.fedprox.tff import FedProx

    class TffOwn(FedProx):
        def build(self, model_fn, **opts):
            return tff.learning.algorithms.build_weighted_fed_prox(
                model_fn, proximal_strength=float(self.cfg.algo.mu), client_weighting=self.client_weighting(), **opts)

    mu, lr = 0.5, 0.1
    cfg = compose("+algo=fedprox", "engine=tff", *testing.movielens_args(ratings), f"algo.mu={mu}",
                  "clients_per_round=1", f"algo.client_optimizer.learning_rate={lr}", "algo.client_steps_max=2")
    task = tasks.build(cfg)
    data = task.load()
    a = TffOwn(task, data.info, cfg, run_dir=str(tmp_path))
    weights, _ = testing.rounds(a, data, engines.get("tff").populations(task, data, a), [[4]])
    got = dict(zip(a.names, weights))
    ex = data.train.read(4)
    g0, l0 = task.initial_weights(data.info)
    start = (ex["item"].astype(int), ex["rating"].astype(np.float64), g0["item_embedding"].astype(np.float64),
             l0["user_embedding"].astype(np.float64))
    np.testing.assert_allclose(got["item_embedding"], _by_hand(*start, lr, -mu, bs=3, steps=2)[0], rtol=1e-5, atol=1e-6)
    assert np.abs(got["item_embedding"] - _by_hand(*start, lr, mu, bs=3, steps=2)[0]).max() > 1e-4
