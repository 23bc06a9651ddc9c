"""Helpers for an algorithm's own tests (`algorithms/<name>/test_<name>.py`, collected with
tests/): a tiny MovieLens file, an algorithm built on it for an engine, and its rounds.
tests/test_fast_engine.py compares the engines with the same pieces."""
from __future__ import annotations

import pathlib

import numpy as np

from fedrecon_bench.compose import compose


def tiny_ratings(path) -> pathlib.Path:
    """40 users x 25 items, 12-25 ratings each, as a ratings CSV at `path` (written once)."""
    path = pathlib.Path(path)
    if not path.exists():
        rng = np.random.default_rng(0)
        lines = ["user_id,item_id,rating"]
        for u in range(1, 41):
            for i in rng.choice(25, size=rng.integers(12, 26), replace=False):
                lines.append(f"{u},{i + 1},{rng.integers(1, 6)}")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n")
    return path


def movielens_args(ratings) -> list[str]:
    """The tiny MovieLens task: the ratings file, 4-dimensional embeddings, batches of 3."""
    return ["+task=movielens", f"task.ratings_file={ratings}", "task.embedding_dim=4", "task.batch_size=3"]


def refused(algo: str, ratings, override: str) -> str:
    """The one-line error the config check gives `+algo=<algo>` with one bad override."""
    import pytest

    from fedrecon_bench import validate
    from fedrecon_bench.errors import UserError

    with pytest.raises(UserError) as e:
        validate.check_config(compose(f"+algo={algo}", *movielens_args(ratings), override))
    msg = str(e.value)
    assert "\n" not in msg, msg
    return msg


def engines(*names: str) -> list:
    """Engine parameters for a test: engine=tff's carries the `tff` mark (skipped where
    TensorFlow Federated is not installed, e.g. the `modern` environment)."""
    import pytest

    return [pytest.param(n, marks=pytest.mark.tff) if n == "tff" else n for n in names]


def new_jax() -> bool:
    """jax 0.5 or newer (the `modern` environment): another XLA, which may round a
    differently built program differently in the last bit."""
    import jax

    return tuple(int(p) for p in jax.__version__.split(".")[:2]) >= (0, 5)


def build(algo: str, engine: str, task_args, run_dir, *overrides):
    """(algorithm, data, (train, val, test) populations) of `+algo=<algo> engine=<engine>`
    with task_args (a ratings file: the tiny MovieLens task) and overrides."""
    import tasks
    from fedrecon_bench import algorithms, engines

    if not isinstance(task_args, (list, tuple)):
        task_args = movielens_args(task_args)
    cfg = compose(f"+algo={algo}", f"engine={engine}", *task_args, *overrides)
    task = tasks.get(cfg.task.name)(cfg.task, cfg.data_dir, 0)
    data = task.load()
    a = algorithms.get(algo, engine)(task, data.info, cfg, run_dir=str(run_dir))
    return a, data, engines.get(engine).populations(task, data, a)


def rounds(a, data, pops, client_rounds) -> tuple[list, list[dict]]:
    """Runs one round per list of training-client indices; returns (the global weights
    after the last round, each round's metrics)."""
    state, metrics = a.initialize(), []
    for idx in client_rounds:
        state, m = a.next(state, pops[0].select(idx), [data.train.ids[i] for i in idx])
        metrics.append(m)
    return [np.asarray(w) for w in a.global_weights(state).trainable], metrics
