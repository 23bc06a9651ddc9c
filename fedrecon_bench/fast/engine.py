"""What every fast-engine algorithm shares: the task's JAX model and initial weights,
optimizers and schedules from the same config as engine=tff, sparse-table views,
the reconstruction evaluation, and evaluation in fixed-size chunks of clients.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench import splits
from fedrecon_bench.fast import client as fc
from fedrecon_bench.fast import optim
from fedrecon_bench.fast.data import split_parts


class FastAlgorithm:
    engine = "fast"

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        self.task, self.info, self.cfg, a = task, info, cfg, cfg.algo
        splits.check(cfg.split.train, "split.train", evaluation=False)
        splits.check(cfg.split.eval, "split.eval", evaluation=True)
        self.m = task.fast_model(info)
        self.client = fc.Client(self.m)
        parts = task.keras_parts(info)
        g0, l0 = self.m.from_keras(parts)  # the same initial values as engine=tff
        named = dict(zip([id(w) for l in (*parts.global_layers, *parts.local_layers)
                          for w in l.trainable_weights], (*self.m.global_names, *self.m.local_names)))
        self.model_order = [named[id(w)] for w in parts.model.trainable_weights]
        self.g0 = {k: jnp.asarray(v) for k, v in g0.items()}
        self.l0 = {k: jnp.asarray(v) for k, v in l0.items()}
        opt = lambda key: optim.build(a[key], f"algo.{key}") if key in a else None
        self.server_opt, self.client_opt = opt("server_optimizer"), opt("client_optimizer")
        self.recon_opt = opt("reconstruction_optimizer")
        self.train_parts, self.eval_parts = split_parts(cfg.split.train), split_parts(cfg.split.eval)
        self.key = jax.random.PRNGKey(cfg.seed)  # dropout only; sampling and init are the loop's and Keras'
        self.chunk = int(getattr(self.m, "eval_chunk", 1024))
        self._measure = jax.jit(self._measure_fn)

    # --- helpers ---------------------------------------------------------------
    def views(self, params: dict, rows: dict) -> dict:
        """A client's view of the parameters: only its rows of each sparse table."""
        return {n: fc.view(p, rows[self.m.sparse[n]]) if n in self.m.sparse else p
                for n, p in params.items()}

    def map_clients(self, fn, in_axes, *args):
        """fn over the clients of a round: vmap (all at once), or one after another
        (lax.map) for models whose per-client weights make batched kernels slow on CPU
        (a convolution with a different kernel per client: `FastModel.vmap_clients`)."""
        if getattr(self.m, "vmap_clients", True):
            return jax.vmap(fn, in_axes=in_axes)(*args)
        per_client = tuple(a for a, ax in zip(args, in_axes) if ax is not None)

        def one(xs):
            it = iter(xs)
            return fn(*[next(it) if ax is not None else a for a, ax in zip(args, in_axes)])

        return jax.lax.map(one, per_client)

    def round_keys(self, state, n: int):
        return jax.random.split(jax.random.fold_in(self.key, state["round"]), n)

    def server_step(self, state, params: dict, deltas, weights, rows):
        """g <- ServerOpt(g, weighted mean of the updates); returns the new state."""
        mean = fc.aggregate(params, deltas, weights, rows, self.m.sparse)
        opt, new = self.server_opt.next(state["opt"], params, mean)
        return {**state, "global": new, "opt": opt, "round": state["round"] + 1}

    def initialize(self):
        return {"global": dict(self.g0), "opt": self.server_opt.init(self.g0),
                "round": jnp.zeros((), jnp.int32)}

    def global_weights(self, state):
        return self.weights_in_order(state["global"], self.m.global_names)

    @staticmethod
    def weights_in_order(params: dict, names):
        """As engine=tff's `global_weights`: a ModelWeights with numpy arrays."""
        import tensorflow_federated as tff

        return tff.learning.models.ModelWeights(
            trainable=[np.asarray(params[n]) for n in names], non_trainable=[])

    # --- evaluation ------------------------------------------------------------
    def eval_schedules(self, clients, seen: bool, recon_from=None):
        """(recon data, recon schedule, measured data, measured schedule) of eval clients.

        Unseen users: reconstruct on the even batches, measure on the odd ones
        (split/eval). Seen users: reconstruct on the user's training data (all of
        its batches, split/eval's epochs and step cap), measure on all held-out data."""
        (rp, re, rs), _ = self.eval_parts
        if not seen:
            return clients.data, clients.schedule(rp, re, rs), clients.data, clients.schedule("odd")
        return (recon_from.data, recon_from.schedule("all", re, rs), clients.data,
                clients.schedule("all"))

    def _measure_fn(self, params, local, data, measured, live):
        tally = jax.vmap(lambda l, d, s: self.client.measure({**params, **l}, d, *s, local=False))(
            local, data, measured)
        return fc.summed(tally, live)

    def measure(self, params: dict, data: dict, measured, local: dict | None = None):
        """Summed metric states of each client's model as is (training=False): the shared
        `params` plus the client's own `local` variables (stacked per client), if any."""
        return self.chunked(lambda *a: self._measure(params, *a), len(measured[0]),
                            local or {}, data, measured)

    def chunked(self, fn, n: int, *arrays):
        """Sums fn's tallies over clients, `self.chunk` clients per call (fixed shapes:
        the last chunk repeats client 0 with weight 0), so memory stays bounded."""
        total = None
        size = min(self.chunk, n)
        for start in range(0, n, size):
            idx = np.arange(start, start + size)
            live = (idx < n).astype(np.float32)
            idx = np.where(idx < n, idx, 0)
            part = fn(*[jax.tree_util.tree_map(lambda a: a[idx], x) for x in arrays], live)
            total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
        return total
