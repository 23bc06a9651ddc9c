"""The JAX next-word-prediction model (tasks/nwp.py `NwpFast`) against the Keras
one it mirrors: same weights (`from_keras`), same padded batch -> same logits,
loss, gradients for every global and local parameter, and metrics, for every
local_oov / local_oov_output combination."""
import itertools

import jax
import numpy as np
import pytest

pytestmark = pytest.mark.tff  # every test compares with Keras
tf = pytest.importorskip("tensorflow", reason="compares with Keras: needs TensorFlow (not in the `modern` environment)")

from conftest import compose
from tasks import nwp

V, K, T, REAL, BS = 30, 4, 6, 5, 8  # ids: pad 0 | words 1..30 | OOV 31..34 | BOS 35 | EOS 36
TOL = dict(rtol=1e-5, atol=1e-6)
COMBOS = list(itertools.product([True, False], [True, False]))  # (local_oov, local_oov_output)


@pytest.fixture(scope="module")
def base_cfg():
    return compose("+task=nwp", "+algo=fedrecon", f"task.vocab_size={V}", f"task.num_oov_buckets={K}",
                   f"task.seq_len={T}", f"task.batch_size={BS}", "task.embedding_dim=8",
                   "task.lstm_units=16", "task.projection_dim=8")


def _setup(cfg, local_oov, local_oov_output, seed=0):
    """Task, Keras parts with every weight random (zero biases would hide a mix-up), fast model."""
    c = cfg.task.copy()
    c.local_oov, c.local_oov_output = local_oov, local_oov_output
    task = nwp.NWP(c, data_dir="unused", seed=cfg.seed)
    parts = task.keras_parts({})
    rng = np.random.default_rng(seed)
    for w in parts.model.trainable_weights:
        w.assign(rng.normal(0.0, 0.5, w.shape).astype(np.float32))
    return task, parts, task.fast_model({})


def _batch(parts, seed=0):
    """REAL right-padded sequences of words, OOV, BOS/EOS and pad ids, then BS - REAL
    padding sequences full of junk ids (the mask alone must make them count for
    nothing). About half the labels are set to the Keras argmax, so there are hits."""
    rng = np.random.default_rng(seed)
    x = rng.integers(1, V + K + 3, (BS, T))
    y = rng.integers(1, V + K + 3, (BS, T))
    special = rng.choice([V + 1, V + K, V + K + 2], (REAL, T))  # 30% of labels: OOV ids, EOS
    y[:REAL] = np.where(rng.random((REAL, T)) < 0.3, special, y[:REAL])
    lengths = [T, T, 4, 2, 1]
    for r, n in enumerate(lengths):
        x[r, n:] = y[r, n:] = 0
    pred = np.argmax(parts.model(x[:REAL], training=False).numpy(), axis=-1)
    take = rng.random((REAL, T)) < 0.5
    y[:REAL] = np.where(take & (y[:REAL] != 0), pred, y[:REAL])
    mask = np.array([1.0] * REAL + [0.0] * (BS - REAL), np.float32)
    return {"x": x, "y": y}, mask


def _keras(task, parts, ex):
    """Keras logits, loss, gradients (by global then local weight order) and metrics."""
    x, y = tf.constant(ex["x"]), tf.constant(ex["y"])
    weights = [w for l in parts.global_layers + parts.local_layers for w in l.trainable_weights]
    with tf.GradientTape() as tape:
        logits = parts.model(x, training=False)
        loss = task.loss_fn()()(y, logits)
    grads = [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, weights)]
    metrics = {}
    for m in task.metrics_fn()():
        m.update_state(y, logits)
        metrics[m.name] = m.result().numpy()
    return logits.numpy(), float(loss), grads, metrics


def _fast(fm, params, examples, mask):
    batch = {**fm.inputs(examples), "mask": mask}
    loss_of = jax.jit(lambda g, l: fm.loss(batch, fm.predict({**g, **l}, batch, False, None)))
    logits = jax.jit(lambda p: fm.predict(p, batch, False, None))({**params[0], **params[1]})
    loss, grads = jax.value_and_grad(loss_of, argnums=(0, 1))(*params)
    stats = jax.jit(fm.stats)(batch, logits)
    return np.asarray(logits), float(loss), {**grads[0], **grads[1]}, fm.metrics(stats)


@pytest.mark.parametrize("local_oov,local_oov_output", COMBOS)
def test_names_follow_the_keras_weight_order(base_cfg, local_oov, local_oov_output):
    _, parts, fm = _setup(base_cfg, local_oov, local_oov_output)
    for names, layers in ((fm.global_names, parts.global_layers), (fm.local_names, parts.local_layers)):
        keras = [w.name for l in layers for w in l.trainable_weights]  # e.g. lstm/lstm_cell/kernel:0
        assert len(names) == len(keras)
        for ours, theirs in zip(names, keras):
            layer, _, var = ours.partition("/")
            assert theirs.startswith(layer + "/") and theirs.endswith(f"/{var or 'embeddings'}:0"), (ours, theirs)
    assert bool(fm.local_names) == local_oov
    assert ("logits_oov_local/kernel" in fm.global_names + fm.local_names) == local_oov_output


@pytest.mark.parametrize("local_oov,local_oov_output,unroll", [(*c, 1) for c in COMBOS] + [(True, False, T)])
def test_logits_loss_gradients_and_metrics_match_keras(base_cfg, local_oov, local_oov_output, unroll):
    task, parts, fm = _setup(base_cfg, local_oov, local_oov_output)
    fm.unroll = unroll  # task.lstm_unroll: the LSTM's time loop unrolled (T = fully)
    ex, mask = _batch(parts)
    real = {k: v[:REAL] for k, v in ex.items()}
    k_logits, k_loss, k_grads, k_metrics = _keras(task, parts, real)
    params = fm.from_keras(parts)
    logits, loss, grads, metrics = _fast(fm, params, ex, mask)

    np.testing.assert_allclose(logits[:REAL], k_logits, **TOL)
    np.testing.assert_allclose(loss, k_loss, **TOL)
    names = fm.global_names + fm.local_names
    assert len(k_grads) == len(names)
    for name, kg in zip(names, k_grads):
        assert np.any(kg != 0), name  # every parameter is exercised by the batch
        np.testing.assert_allclose(grads[name], kg, err_msg=name, **TOL)
    assert set(metrics) == {"accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos", "num_tokens"}
    for name, value in k_metrics.items():
        np.testing.assert_allclose(metrics[name], value, err_msg=name, **TOL)
    assert 0 < metrics["accuracy"] < 1  # hits and misses (a random model's argmax is
    # mostly one id, so test_metrics_match_keras_on_every_label_kind covers the variants)
    assert metrics["num_tokens"] == int(np.sum(real["y"] != 0)) and isinstance(metrics["num_tokens"], int)


def test_metrics_match_keras_on_every_label_kind(base_cfg):
    """Given logits: hits and misses on word, OOV and EOS labels, so the three
    accuracy variants differ; the padding rows are all hits, and must not count."""
    task, _, fm = _setup(base_cfg, True, False)
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(BS, T, V + K + 3)).astype(np.float32)
    y = rng.choice([1, 2, V, V + 1, V + K, V + K + 2], (BS, T))
    y[2, 3:] = y[4, 1:] = 0
    hit = (rng.random((BS, T)) < 0.5) | (np.arange(BS) >= REAL)[:, None]
    np.put_along_axis(logits, y[..., None], np.where(hit, 10.0, -10.0)[..., None], axis=-1)
    mask = np.array([1.0] * REAL + [0.0] * (BS - REAL), np.float32)
    metrics = fm.metrics(fm.stats({"y": y, "mask": mask}, logits))
    for m in task.metrics_fn()():
        m.update_state(y[:REAL], logits[:REAL])
        np.testing.assert_allclose(metrics[m.name], m.result().numpy(), err_msg=m.name, **TOL)
    accs = [metrics[n] for n in ("accuracy", "accuracy_no_oov", "accuracy_no_oov_no_eos")]
    assert all(0 < a < 1 for a in accs) and len(set(accs)) == 3, accs


def test_all_padding_batch_gives_zero_loss_gradients_and_counts(base_cfg):
    _, parts, fm = _setup(base_cfg, True, True)
    ex, _ = _batch(parts)
    mask = np.zeros(BS, np.float32)
    _, loss, grads, metrics = _fast(fm, fm.from_keras(parts), ex, mask)
    assert loss == 0.0
    assert all(np.all(np.asarray(g) == 0) for g in grads.values())
    assert metrics == {"accuracy": 0.0, "accuracy_no_oov": 0.0, "accuracy_no_oov_no_eos": 0.0,
                       "num_tokens": 0}


def test_stats_add_up_across_batches(base_cfg):
    task, parts, fm = _setup(base_cfg, True, False)
    ex, mask = _batch(parts)
    batch = {**fm.inputs(ex), "mask": mask}
    g, loc = fm.from_keras(parts)
    logits = fm.predict({**g, **loc}, batch)
    halves = [np.arange(BS) < 3, np.arange(BS) >= 3]  # split the real rows over two "batches"
    parts_stats = [fm.stats({**batch, "mask": mask * h}, logits) for h in halves]
    summed = jax.tree_util.tree_map(lambda a, b: a + b, *parts_stats)
    assert fm.metrics(summed) == fm.metrics(fm.stats(batch, logits))
