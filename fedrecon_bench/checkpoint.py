"""Checkpoints: everything needed to continue a run, in one file written atomically.

A checkpoint is `<run_dir>/checkpoints/round_<r>.npz` holding the server state's
leaves (`tf.nest` order for TFF's states; engine=fast's typed states and dict states
flatten with JAX, without importing TensorFlow), the client-sampling RNG state, the number of
`metrics.jsonl` lines written so far, the wandb run id and elapsed time, as
plain arrays plus one JSON string (no pickle). It is written to a temporary
name and renamed, so a kill at any moment leaves either the old or the new
checkpoint, never a torn one. Data preparation and model init are functions of
the seed, so they are recomputed rather than stored.
"""
from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np

DIRNAME = "checkpoints"


def _flatten(state):
    """(leaves, rebuild) of a server state."""
    if isinstance(state, (dict, tuple)):  # engine=fast's ServerState, or a dict of arrays
        import jax

        leaves, tree = jax.tree_util.tree_flatten(state)
        return leaves, lambda xs: jax.tree_util.tree_unflatten(tree, xs)
    import tensorflow as tf

    return tf.nest.flatten(state), lambda xs: tf.nest.pack_sequence_as(state, xs)


def _files(run_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(run_dir, DIRNAME, "round_*.npz")))


def save(run_dir: str, round_: int, state, meta: dict) -> str:
    d = os.path.join(run_dir, DIRNAME)
    os.makedirs(d, exist_ok=True)
    arrays = {f"s{i:05d}": np.asarray(x) for i, x in enumerate(_flatten(state)[0])}
    arrays["meta"] = np.array(json.dumps({**meta, "round": round_, "num_leaves": len(arrays)}))
    path = os.path.join(d, f"round_{round_:06d}.npz")
    tmp = os.path.join(d, f".round_{round_:06d}.tmp.npz")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in _files(run_dir):  # keep only the newest
        if old != path:
            os.remove(old)
    for old in glob.glob(os.path.join(d, "store_*")):
        if old != store_dir(run_dir, round_):
            shutil.rmtree(old, ignore_errors=True)
    return path


def store_dir(run_dir: str, round_: int) -> str:
    """Where a stateful algorithm's client store is snapshotted for `round_`."""
    return os.path.join(run_dir, DIRNAME, f"store_{round_:06d}")


def load_latest(run_dir: str, template_state):
    """(state, meta) of the newest checkpoint, or None. Leaves take the template's
    dtypes, so the restored state has exactly the types TFF expects."""
    files = _files(run_dir)
    if not files:
        return None
    with np.load(files[-1], allow_pickle=False) as z:
        meta = json.loads(str(z["meta"]))
        saved = [z[f"s{i:05d}"] for i in range(meta["num_leaves"])]
    template, rebuild = _flatten(template_state)
    if len(saved) != len(template):
        raise ValueError(f"{files[-1]}: checkpoint has {len(saved)} state leaves, the model "
                         f"{len(template)}; it belongs to a different config")
    leaves = [np.asarray(s, dtype=np.asarray(t).dtype).reshape(np.shape(t))
              for s, t in zip(saved, template)]
    return rebuild(leaves), meta


def truncate_lines(path: str, keep: int) -> None:
    """Drops metrics rows written after the checkpoint (they will be redone)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()[:keep]
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(lines)
    os.replace(tmp, path)
