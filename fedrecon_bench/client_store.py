"""Per-client local variables kept between rounds (algorithms whose SPEC has client_state).

Two backends with one interface: `memory` (a dict) and `disk` (one .npz per
client, written atomically, for populations that do not fit in memory).
`snapshot`/`restore` let checkpoints roll the store back exactly: the disk
backend snapshots with hard links, which is cheap and safe because every write
replaces a file rather than changing it in place.
"""
from __future__ import annotations

import os
import re
import shutil
import zipfile

import numpy as np


def _key(client_id) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", str(client_id))


class MemoryStore:
    def __init__(self):
        self._d: dict[str, list[np.ndarray]] = {}

    def get(self, client_id):
        v = self._d.get(_key(client_id))
        return None if v is None else [a.copy() for a in v]

    def put(self, client_id, arrays) -> None:
        self._d[_key(client_id)] = [np.array(a, copy=True) for a in arrays]

    def __len__(self):
        return len(self._d)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for v in self._d.values() for a in v))

    def snapshot(self, dest: str) -> None:
        os.makedirs(dest, exist_ok=True)
        np.savez(os.path.join(dest, "store.npz"),
                 **{f"{k}/{i}": a for k, v in self._d.items() for i, a in enumerate(v)})

    def restore(self, src: str) -> None:
        self._d = {}
        with np.load(os.path.join(src, "store.npz"), allow_pickle=False) as z:
            for name in sorted(z.files, key=lambda n: (n.rsplit("/", 1)[0], int(n.rsplit("/", 1)[1]))):
                k = name.rsplit("/", 1)[0]
                self._d.setdefault(k, []).append(z[name])


class DiskStore:
    def __init__(self, root: str):
        self.root = root
        os.makedirs(root, exist_ok=True)

    def _path(self, client_id) -> str:
        return os.path.join(self.root, _key(client_id) + ".npz")

    def get(self, client_id):
        p = self._path(client_id)
        if not os.path.exists(p):
            return None
        with np.load(p, allow_pickle=False) as z:
            return [z[f"{i}"] for i in range(len(z.files))]

    def put(self, client_id, arrays) -> None:
        p = self._path(client_id)
        tmp = p + ".tmp.npz"
        np.savez(tmp, **{f"{i}": np.asarray(a) for i, a in enumerate(arrays)})
        os.replace(tmp, p)

    def _files(self):
        return [f for f in os.listdir(self.root) if f.endswith(".npz") and not f.endswith(".tmp.npz")]

    def __len__(self):
        return len(self._files())

    @property
    def nbytes(self) -> int:
        return int(sum(os.path.getsize(os.path.join(self.root, f)) for f in self._files()))

    def snapshot(self, dest: str) -> None:
        shutil.rmtree(dest, ignore_errors=True)
        os.makedirs(dest)
        for f in self._files():
            os.link(os.path.join(self.root, f), os.path.join(dest, f))

    def restore(self, src: str) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
        os.makedirs(self.root)
        for f in os.listdir(src):
            os.link(os.path.join(src, f), os.path.join(self.root, f))


DISK_DIRNAME = "client_store"  # the disk backend's store, in the run dir


def check_snapshot(src: str) -> str | None:
    """Why a snapshot cannot be restored, or None: a memory store's file must read back
    whole (its CRC-32s); a disk store's snapshot is a directory of hard links."""
    if not os.path.isdir(src):
        return f"its client-store snapshot {os.path.basename(src)}/ is missing"
    path = os.path.join(src, "store.npz")
    if not os.path.exists(path):
        return None
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except Exception as e:  # torn or not a zip at all
        return f"{os.path.basename(src)}/store.npz: {type(e).__name__}: {e}"
    return f"{os.path.basename(src)}/store.npz: bad CRC-32 in {bad}" if bad else None


def make(backend: str, run_dir: str):
    if backend == "memory":
        return MemoryStore()
    if backend == "disk":
        return DiskStore(os.path.join(run_dir, DISK_DIRNAME))
    from fedrecon_bench.errors import UserError

    raise UserError(f"algo.store={backend!r} is unknown; use memory or disk")


def stacked(store, names, init: dict, client_ids, use_store: bool = True) -> dict:
    """The clients' local variables stacked along a leading client axis (engine=fast): each
    client's stored state, or `init` for a client without one (or when not use_store)."""
    first = [np.asarray(init[n]) for n in names]
    got = [(store.get(c) if use_store else None) or first for c in client_ids]
    return {n: np.stack([g[k] for g in got]) for k, n in enumerate(names)}


def put_stacked(store, names, client_ids, local: dict) -> None:
    """Stores each client's slice of stacked local variables (engine=fast)."""
    local = {n: np.asarray(v) for n, v in local.items()}
    for i, c in enumerate(client_ids):
        store.put(c, [local[n][i] for n in names])


def round_metrics(store) -> dict:
    """A stateful round's row values about its store."""
    return {"store_clients": len(store), "store_bytes": store.nbytes}
