"""Initial weights are defined once, in JAX (each task's `FastModel.init`), with the
distributions Keras' initializers have; engine=tff's Keras model is built from them;
and an engine=fast run never imports TensorFlow or TFF."""
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT, compose
from tasks import init


def test_initializers_have_keras_distributions():
    u = init.uniform(0, 1, (200, 50))
    assert u.dtype == np.float32 and -0.05 <= u.min() < -0.045 and 0.045 < u.max() <= 0.05
    g = init.glorot(0, 2, (3, 3, 32, 64))  # conv fans: 9 * 32 in, 9 * 64 out
    limit = np.sqrt(6.0 / (9 * 32 + 9 * 64))
    assert np.abs(g).max() <= limit and np.abs(g).max() > 0.95 * limit
    assert abs(g.std() - limit / np.sqrt(3)) < 0.02 * limit  # uniform(-a, a) has std a / sqrt(3)
    q = init.orthogonal(0, 3, (16, 64))  # LSTM recurrent kernel (units, 4 units): orthogonal rows
    np.testing.assert_allclose(q @ q.T, np.eye(16), atol=1e-5)
    b = init.lstm_bias(4)
    assert b.tolist() == [0] * 4 + [1] * 4 + [0] * 8  # Keras unit_forget_bias
    assert not np.array_equal(init.uniform(0, 1, (5,)), init.uniform(1, 1, (5,)))  # the seed counts
    np.testing.assert_array_equal(init.uniform(0, 1, (5,)), init.uniform(0, 1, (5,)))


def _task(*overrides, info):
    import tasks

    cfg = compose("+algo=fedrecon", *overrides)
    return tasks.get(cfg.task.name)(cfg.task, "unused", 3), info


TASKS = [
    (["+task=movielens", "task.embedding_dim=4"], {"num_items": 7}),
    (["+task=movielens", "task.embedding_dim=4", "task.biases=true"], {"num_items": 7}),
    (["+task=emnist"], {}),
    (["+task=emnist", "task.user_embedding=false"], {}),
    (["+task=nwp", "task.vocab_size=20", "task.num_oov_buckets=3", "task.embedding_dim=4",
      "task.lstm_units=5", "task.projection_dim=3"], {}),
    (["+task=nwp", "task.vocab_size=20", "task.num_oov_buckets=3", "task.embedding_dim=4",
      "task.lstm_units=5", "task.projection_dim=3", "task.local_oov_output=true"], {}),
    (["+task=nwp", "task.vocab_size=20", "task.num_oov_buckets=3", "task.embedding_dim=4",
      "task.lstm_units=5", "task.projection_dim=3", "task.local_oov=false"], {}),
]


@pytest.mark.tff
@pytest.mark.parametrize("overrides,info", TASKS)
def test_keras_model_starts_from_the_jax_initial_weights(overrides, info):
    task, info = _task(*overrides, info=info)
    fm = task.fast_model(info)
    g0, l0 = task.initial_weights(info)
    assert list(g0) == list(fm.global_names) and list(l0) == list(fm.local_names)
    parts = task.keras_parts(info)
    kg, kl = fm.from_keras(parts)  # Keras values in the JAX names' order
    for mine, keras in ((g0, kg), (l0, kl)):
        for name in mine:
            np.testing.assert_array_equal(mine[name], keras[name], err_msg=name)
    # FedAvg reports weights in the Keras model's own order; the fast model knows it without Keras.
    by_id = {id(w): n for l, names in ((parts.global_layers, fm.global_names), (parts.local_layers, fm.local_names))
             for n, w in zip(names, [w for layer in l for w in layer.trainable_weights])}
    assert [by_id[id(w)] for w in parts.model.trainable_weights] == list(fm.model_order)


def test_an_engine_fast_run_imports_neither_tensorflow_nor_tff(tiny_ratings, tmp_path):
    env = {**os.environ, "FEDRECON_BENCH_DEBUG_MODULES": "1", "WANDB_MODE": "offline"}
    proc = subprocess.run(
        [sys.executable, "-m", "fedrecon_bench", "+task=movielens", "+algo=fedrecon", "engine=fast",
         f"task.ratings_file={tiny_ratings}", "task.batch_size=3", "clients_per_round=5", "rounds=3",
         "eval_every=2", "checkpoint_every=2", f"hydra.run.dir={tmp_path / 'run'}",
         f"fast.compilation_cache={tmp_path / 'jax_cache'}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == f"run_dir: {tmp_path / 'run'}"
    line = next(l for l in proc.stderr.splitlines() if l.startswith("loaded modules: "))
    loaded = set(line.split(": ", 1)[1].split())
    assert {"jax", "fedrecon_bench", "tasks", "wandb"} <= loaded  # the check sees the run's imports
    assert not loaded & {"tensorflow", "tensorflow_federated", "keras", "tf_keras"}, loaded
    assert (tmp_path / "run" / "wandb").is_dir() and (tmp_path / "run" / "summary.json").is_file()


def test_importing_the_package_and_composing_stay_light():
    code = ("import sys; import fedrecon_bench.app, fedrecon_bench.loop, tasks.movielens, tasks.emnist, "
            "tasks.nwp, fedrecon_bench.algorithms.fedrecon.fast; "
            "print(sorted(m for m in ('tensorflow', 'tensorflow_federated') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
