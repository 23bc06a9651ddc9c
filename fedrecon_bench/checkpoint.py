"""Checkpoints: everything needed to continue a run, in one file written atomically.

A checkpoint is `<run_dir>/checkpoints/round_<r>.npz` holding the server state's
leaves (`tf.nest` order for TFF's states; engine=fast's typed states and dict states
flatten with JAX, without importing TensorFlow), the client-sampling RNG state, the number of
`metrics.jsonl` lines written so far, the wandb run id and elapsed time, the config and
population it was made under (rundir.py compares them on resume), as
plain arrays plus one JSON string (no pickle). It is written to a temporary
name and renamed, so a kill at any moment leaves either the old or the new
checkpoint, never a torn one. The newest KEEP are kept, with their client-store
snapshots, and each is read in full (the zip's CRC-32s) before use, so a checkpoint
damaged later (a full disk, a bad copy) falls back to the one before. Data
preparation and model init are functions of the seed, so they are recomputed
rather than stored.
"""
from __future__ import annotations

import dataclasses
import glob
import io
import json
import os
import shutil
import zipfile

import numpy as np

from fedrecon_bench import client_store

DIRNAME = "checkpoints"
KEEP = 2  # the newest and the one before it, for when the newest cannot be read


def _flatten(state):
    """(leaves, rebuild) of a server state."""
    if isinstance(state, (dict, tuple)):  # engine=fast's ServerState, or a dict of arrays
        import jax

        leaves, tree = jax.tree_util.tree_flatten(state)
        return leaves, lambda xs: jax.tree_util.tree_unflatten(tree, xs)
    import tensorflow as tf

    return tf.nest.flatten(state), lambda xs: tf.nest.pack_sequence_as(state, xs)


def files(run_dir: str) -> list[str]:
    """The run dir's checkpoints, oldest first."""
    return sorted(glob.glob(os.path.join(run_dir, DIRNAME, "round_*.npz")))


def _round_of(path: str) -> int:
    return int(os.path.basename(path).split("_")[1].split(".")[0])


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
    kept = {_round_of(p) for p in files(run_dir)[-KEEP:]}
    discard(run_dir, keep=kept.__contains__)
    return path


def discard(run_dir: str, keep=lambda round_: False) -> None:
    """Removes the checkpoints and client-store snapshots of the rounds `keep` rejects."""
    d = os.path.join(run_dir, DIRNAME)
    for p in glob.glob(os.path.join(d, "round_*.npz")) + glob.glob(os.path.join(d, "store_*")):
        if keep(_round_of(p)):
            continue
        if os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)
        else:
            os.remove(p)


def store_dir(run_dir: str, round_: int) -> str:
    """Where a stateful algorithm's client store is snapshotted for `round_`."""
    return os.path.join(run_dir, DIRNAME, f"store_{round_:06d}")


class Unreadable(Exception):
    """A checkpoint that cannot be used; the message says why."""


@dataclasses.dataclass
class Saved:
    """A checkpoint read in full: its meta and the state's leaves as saved."""

    path: str
    meta: dict
    leaves: list

    @property
    def round(self) -> int:
        return int(self.meta["round"])


def read(run_dir: str, path: str) -> Saved:
    """Reads a checkpoint whole, or raises Unreadable: every member against its CRC-32
    (zipfile checks it on a full read), and its client-store snapshot if it has one."""
    try:
        with zipfile.ZipFile(path) as z:
            arrays = {n[:-4]: np.lib.format.read_array(io.BytesIO(z.read(n)), allow_pickle=False)
                      for n in z.namelist()}
        meta = json.loads(str(arrays["meta"]))
        leaves = [arrays[f"s{i:05d}"] for i in range(meta["num_leaves"])]
    except Exception as e:  # any failure to read it whole makes it unusable
        raise Unreadable(f"{type(e).__name__}: {e}") from None
    if meta.get("store"):
        why = client_store.check_snapshot(store_dir(run_dir, meta["round"]))
        if why:
            raise Unreadable(why)
    return Saved(path, meta, leaves)


def newest_valid(run_dir: str) -> tuple[Saved | None, list[tuple[str, str]]]:
    """The newest checkpoint that reads back whole, and (path, why) for each newer one
    that does not."""
    bad = []
    for path in reversed(files(run_dir)):
        try:
            return read(run_dir, path), bad
        except Unreadable as e:
            bad.append((path, str(e)))
    return None, bad


def restore(saved: Saved, template_state):
    """The state a checkpoint holds. Leaves take the template's dtypes, so the restored
    state has exactly the types TFF expects."""
    template, rebuild = _flatten(template_state)
    if len(saved.leaves) != len(template):
        raise ValueError(f"{saved.path}: checkpoint has {len(saved.leaves)} state leaves, the model "
                         f"{len(template)}; it belongs to a different config")
    leaves = [np.asarray(s, dtype=np.asarray(t).dtype).reshape(np.shape(t))
              for s, t in zip(saved.leaves, template)]
    return rebuild(leaves)


def load_latest(run_dir: str, template_state):
    """(state, meta) of the newest readable checkpoint, or None."""
    saved, _ = newest_valid(run_dir)
    return None if saved is None else (restore(saved, template_state), saved.meta)


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
