"""MovieLens model: metrics by hand, the global/local partition, L2 and biases."""
import numpy as np
import pytest
from omegaconf import OmegaConf

from tasks.movielens import MovieLens

pytestmark = pytest.mark.tff  # the Keras model and metrics (engine=tff)
pytest.importorskip("tensorflow", reason="the Keras model: needs TensorFlow (not in the `modern` environment)")
from tasks.movielens.keras_model import PenalizedMSE, RatingAccuracy, RMSE  # noqa: E402

Y = np.array([[4.0], [3.0], [5.0], [1.0]], np.float32)
P = np.array([[4.4], [2.0], [5.6], [1.5]], np.float32)  # errors 0.4, -1.0, 0.6, 0.5


def test_metrics_match_hand_computed_values():
    acc, rmse = RatingAccuracy(), RMSE()
    acc.update_state(Y, P)
    rmse.update_state(Y, P)
    assert float(acc.result()) == pytest.approx(0.5)  # |err| <= 0.5: 0.4 and 0.5
    assert float(rmse.result()) == pytest.approx(np.sqrt((0.16 + 1 + 0.36 + 0.25) / 4), rel=1e-6)
    assert float(PenalizedMSE()(Y, P)) == pytest.approx((0.16 + 1 + 0.36 + 0.25) / 4, rel=1e-6)


def test_penalty_column_adds_to_loss_but_not_to_metrics():
    with_pen = np.concatenate([P, np.full_like(P, 0.25)], axis=1)
    assert float(PenalizedMSE()(Y, with_pen)) == pytest.approx((1.77 / 4) + 0.25, rel=1e-6)
    acc = RatingAccuracy()
    acc.update_state(Y, with_pen)
    assert float(acc.result()) == pytest.approx(0.5)


def _task(**kw):
    cfg = OmegaConf.create({"batch_size": 2, "embedding_dim": 4, "biases": False, "l2": 0.0, **kw})
    return MovieLens(cfg, data_dir="unused", seed=0)


def test_partition_item_embedding_global_user_embedding_local():
    parts = _task().keras_parts({"num_items": 7})
    g = [w.shape.as_list() for l in parts.global_layers for w in l.weights]
    loc = [w.shape.as_list() for l in parts.local_layers for w in l.weights]
    assert g == [[7, 4]] and loc == [[1, 4]]


def test_biases_option_adds_global_item_bias_and_local_user_bias():
    parts = _task(biases=True).keras_parts({"num_items": 7})
    g = sorted(w.shape.as_list() for l in parts.global_layers for w in l.weights)
    loc = sorted(w.shape.as_list() for l in parts.local_layers for w in l.weights)
    assert g == [[7, 1], [7, 4]] and loc == [[1, 1], [1, 4]]


def test_prediction_is_dot_of_user_and_item_vectors_plus_biases():
    parts = _task(biases=True, l2=0.5).keras_parts({"num_items": 3})
    item_emb, item_bias = parts.global_layers
    user_emb, user_bias = parts.local_layers
    item_emb.set_weights([np.arange(12, dtype=np.float32).reshape(3, 4) / 10])
    item_bias.set_weights([np.array([[1.0], [2.0], [3.0]], np.float32)])
    user_emb.set_weights([np.array([[1.0, 0.0, -1.0, 2.0]], np.float32)])
    user_bias.set_weights([np.array([[0.5]], np.float32)])
    out = parts.model(np.array([[0], [2]], np.int64)).numpy()
    v = np.arange(12, dtype=np.float32).reshape(3, 4) / 10
    u = np.array([1.0, 0.0, -1.0, 2.0], np.float32)
    expected_pred = [v[0] @ u + 1.0 + 0.5, v[2] @ u + 3.0 + 0.5]
    np.testing.assert_allclose(out[:, 0], expected_pred, rtol=1e-6)
    pen = [0.5 * (u @ u + v[i] @ v[i] + b ** 2 + 0.25) for i, b in ((0, 1.0), (2, 3.0))]
    np.testing.assert_allclose(out[:, 1], pen, rtol=1e-6)


def test_init_is_seeded():
    a = _task().keras_parts({"num_items": 5}).model.get_weights()
    b = _task().keras_parts({"num_items": 5}).model.get_weights()
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
