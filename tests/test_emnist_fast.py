"""EMNIST's fast model (JAX) against its Keras model: same weights, same numbers.

Equality runs with task.dropout=false, since the two frameworks draw different
dropout masks; the dropout tests check that the switch works in both engines."""
import jax
import numpy as np
import pytest

pytestmark = pytest.mark.tff  # every test compares with Keras
tf = pytest.importorskip("tensorflow", reason="compares with Keras: needs TensorFlow (not in the `modern` environment)")

from conftest import compose
import tasks.emnist as em

BS, N = 10, 7  # 7 real examples padded to a batch of 10
CLOSE = dict(rtol=1e-5, atol=1e-6)


def make(*overrides):
    cfg = compose("+task=emnist", "+algo=fedrecon", f"task.batch_size={BS}", *overrides)
    task = em.EMNIST(cfg.task, "unused", cfg.seed)
    return task, task.keras_parts({}), task.fast_model({})


def images(rng, n):
    return {"x": rng.integers(0, 256, (n, 784)).astype(np.uint8),
            "y": rng.integers(0, em.NUM_CLASSES, n).astype(np.uint8)}


def padded(fm, real, pad):
    """One engine batch: the real examples, then `pad` (not zeros: the mask must do the work)."""
    a, b = fm.inputs(real), fm.inputs(pad)
    batch = {k: np.concatenate([a[k], b[k]]) for k in a}
    batch["mask"] = np.array([1.0] * len(a["y"]) + [0.0] * len(b["y"]), np.float32)
    return batch


@pytest.mark.parametrize("user_embedding,conv", [(True, "lax"), (False, "lax"), (True, "patches")])
def test_fast_model_matches_keras(user_embedding, conv):
    task, parts, fm = make("task.dropout=false", f"task.user_embedding={str(user_embedding).lower()}",
                           f"task.conv={conv}")
    assert fm.local_names == (("user_embedding",) if user_embedding else ())
    rng = np.random.default_rng(0)
    if user_embedding:  # not the zero start, so the concatenated features count
        parts.local_layers[0].set_weights([rng.normal(size=(1, 16)).astype(np.float32)])
    real, pad = images(rng, N), images(rng, BS - N)
    # Labels: 4 of the 7 real examples right under the current weights; all padding right,
    # so counting padding would show in the accuracy.
    guess = lambda ex: parts.model(fm.inputs(ex)["x"], training=False).numpy().argmax(1)
    real["y"] = np.where(np.arange(N) < 4, guess(real), (guess(real) + 1) % em.NUM_CLASSES).astype(np.uint8)
    pad["y"] = guess(pad).astype(np.uint8)

    # Keras, on the real examples only, fed by the task's own tf.data pipeline.
    (b,) = list(task.client_dataset(real))
    weights = [w for l in parts.global_layers + parts.local_layers for w in l.trainable_weights]
    with tf.GradientTape() as tape:
        k_logits = parts.model(b["x"], training=True)  # no dropout: same as training=False
        k_loss = task.loss_fn()()(b["y"], k_logits)
    k_grads = [g.numpy() for g in tape.gradient(k_loss, weights)]
    acc = task.metrics_fn()()[0]
    acc.update_state(b["y"], k_logits)

    g, loc = fm.from_keras(parts)
    batch = padded(fm, real, pad)

    def loss(g, loc):
        return fm.loss(batch, fm.predict({**g, **loc}, batch, True, jax.random.PRNGKey(0)))

    f_loss, (f_g, f_loc) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(g, loc)
    logits = fm.predict({**g, **loc}, batch, train=False)
    np.testing.assert_allclose(logits[:N], parts.model(b["x"], training=False).numpy(), **CLOSE)
    np.testing.assert_allclose(f_loss, k_loss.numpy(), **CLOSE)
    names = fm.global_names + fm.local_names
    assert len(names) == len(k_grads) == 8 + user_embedding
    for name, kg in zip(names, k_grads):
        fg = {**f_g, **f_loc}[name]
        assert fg.shape == kg.shape, name
        np.testing.assert_allclose(fg, kg, **CLOSE, err_msg=name)
    stats = fm.stats(batch, logits)
    assert (float(stats["hits"]), float(stats["count"])) == (4.0, float(N))
    assert fm.metrics(stats) == pytest.approx({"accuracy": float(acc.result().numpy())}, abs=1e-7)
    assert fm.metrics(stats)["accuracy"] == pytest.approx(4 / 7)


def test_all_padding_batch_gives_zero_not_nan():
    _, parts, fm = make("task.dropout=false")
    g, loc = fm.from_keras(parts)
    batch = padded(fm, images(np.random.default_rng(1), 0), images(np.random.default_rng(2), BS))
    loss, grads = jax.value_and_grad(
        lambda g: fm.loss(batch, fm.predict({**g, **loc}, batch, train=False)))(g)
    assert float(loss) == 0.0 and all(not np.any(v) for v in grads.values())
    assert fm.metrics(fm.stats(batch, fm.predict({**g, **loc}, batch))) == {"accuracy": 0.0}


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_inputs_match_client_dataset(dtype):
    task, _, fm = make()
    ex = images(np.random.default_rng(3), N)
    if dtype == np.float32:  # a source whose pixels are not k/255: already floats in 0..1
        ex["x"] = np.random.default_rng(4).random((N, 784)).astype(np.float32)
    (b,) = list(task.client_dataset(ex))
    got = fm.inputs(ex)
    np.testing.assert_array_equal(got["x"], b["x"].numpy())
    np.testing.assert_array_equal(got["y"], b["y"].numpy()[:, 0])
    assert got["x"].dtype == np.float32 and got["y"].dtype == np.int32


def test_dropout_switch_in_keras():
    x = make()[2].inputs(images(np.random.default_rng(5), N))["x"]
    on, off = make()[1].model, make("task.dropout=false")[1].model
    # Default unchanged: the two Dropout layers, and the same seeded weights either way.
    assert [l.rate for l in on.layers if isinstance(l, tf.keras.layers.Dropout)] == [0.25, 0.5]
    assert not any(isinstance(l, tf.keras.layers.Dropout) for l in off.layers)
    for a, b in zip(on.get_weights(), off.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(off(x, training=True).numpy(), off(x, training=False).numpy())
    assert not np.allclose(on(x, training=True).numpy(), on(x, training=False).numpy())


def test_dropout_switch_in_fast_model():
    _, parts, on = make()
    off = make("task.dropout=false")[2]
    params = {**dict(zip(on.global_names, [w.numpy() for l in parts.global_layers for w in l.trainable_weights])),
              "user_embedding": np.zeros((1, 16), np.float32)}
    batch = on.inputs(images(np.random.default_rng(6), N))
    key = jax.random.PRNGKey(1)
    eval_out = on.predict(params, batch, train=False)
    train_out = on.predict(params, batch, train=True, rng=key)
    assert not np.allclose(train_out, eval_out)
    np.testing.assert_array_equal(train_out, on.predict(params, batch, train=True, rng=key))  # seeded
    assert not np.allclose(train_out, on.predict(params, batch, train=True, rng=jax.random.PRNGKey(2)))
    np.testing.assert_array_equal(off.predict(params, batch, train=True, rng=key), eval_out)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        on.predict(params, batch, train=True)


@pytest.mark.parametrize("rate", [0.25, 0.5])
def test_dropout_is_inverted_like_keras(rate):
    out = np.asarray(em._dropout(np.ones((200, 500), np.float32), rate, jax.random.PRNGKey(0)))
    assert abs(np.mean(out == 0) - rate) < 0.01
    np.testing.assert_allclose(out[out != 0], 1 / (1 - rate), rtol=1e-6)  # kept values scaled up
