"""The K model sets in one dict, as the server state holds them (engine=fast), and the
per-set mean.

A dense variable of shape S is one array [K, *S]. A sparse table [V, ...] (the model's
`sparse`: a client holds a view of its rows) is one table [K * V, ...], set k's rows at
k V .. k V + V - 1. So a client's update stays a view of its own rows, shifted into its set's
block, and the executor scatters it there as it scatters FedAvg's: sending the K-set vector
costs no more than sending one set. A dense variable's update is masked to [K, *S] (zeros
outside the client's set), which sums exactly as FedAvg's when K = 1.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.data import PAD_ROW


class Sets:
    def __init__(self, model, k: int, template: dict):
        """template: one set (name -> array), for the sparse tables' row counts."""
        self.k, self.sparse = int(k), dict(model.sparse)
        self.rows_of = {n: int(np.shape(template[n])[0]) for n in self.sparse}

    # --- layout ----------------------------------------------------------------
    def pack(self, sets: list[dict]) -> dict:
        """K sets (each name -> array) as the server state's dict."""
        return {n: (jnp.concatenate if n in self.sparse else jnp.stack)([jnp.asarray(s[n]) for s in sets])
                for n in sets[0]}

    def stacked(self, packed: dict) -> dict:
        """name -> [K, ...] (a sparse table's blocks as its leading axis)."""
        return {n: p.reshape((self.k, -1) + p.shape[1:]) if n in self.sparse else p for n, p in packed.items()}

    def packed(self, stacked: dict) -> dict:
        return {n: p.reshape((-1,) + p.shape[2:]) if n in self.sparse else p for n, p in stacked.items()}

    def unpack(self, packed: dict) -> list[dict]:
        """The K sets, numpy, each name -> array."""
        st = {n: np.asarray(p) for n, p in self.stacked(packed).items()}
        return [{n: p[k] for n, p in st.items()} for k in range(self.k)]

    # --- a client's set --------------------------------------------------------
    def rows(self, rows: dict, k) -> dict:
        """Per sparse table, the client's rows (its view's, `rows` by field) in set k's block;
        padding stays padding (gathers read 0, scatters drop it)."""
        return {n: jnp.where(rows[f] == PAD_ROW, rows[f], rows[f] + k * self.rows_of[n])
                for n, f in self.sparse.items()}

    def view(self, packed: dict, rows: dict, k) -> dict:
        """The client's view of set k: its rows of each sparse table, the dense variables whole."""
        at = self.rows(rows, k)
        return {n: fc.view(p, at[n]) if n in self.sparse else p[k] for n, p in packed.items()}

    def losses(self, packed: dict, rows: dict, loss_of, host: bool):
        """[K]: loss_of(view of set k) for every set; one measuring pass each (a Python loop
        where clients run step by step on the host, else one compiled loop over the sets)."""
        one = lambda k: loss_of(self.view(packed, rows, k))
        if host:
            return jnp.stack([one(k) for k in range(self.k)])
        return jax.lax.map(one, jnp.arange(self.k, dtype=jnp.int32))

    @staticmethod
    def choose(losses):
        """The set with the lowest loss (non-finite losses lose; ties: the lowest index)."""
        return jnp.argmin(jnp.where(jnp.isfinite(losses), losses, jnp.inf)).astype(jnp.int32)

    def spread(self, delta: dict, k) -> dict:
        """A client's update of set k as the K-set vector: a sparse table's rows as they are
        (their indices, rows(), say the block), a dense variable in slot k, zeros elsewhere."""
        onehot = (jnp.arange(self.k) == k).astype(jnp.float32)
        return {n: d if n in self.sparse else onehot.reshape((self.k,) + (1,) * d.ndim) * d[None]
                for n, d in delta.items()}

    # --- the server ------------------------------------------------------------
    def mean(self, total: dict, weight) -> dict:
        """Each set's weighted mean of its clients' updates (stacked), from the summed K-set
        vectors and each set's summed weight [K]: 0 for a set with no weight."""
        return {n: fc.mean({n: s}, weight.reshape((self.k,) + (1,) * (s.ndim - 1)))[n]
                for n, s in self.stacked(total).items()}
