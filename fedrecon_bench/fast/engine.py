"""What every fast-engine algorithm shares: the task's JAX model and initial weights,
optimizers and schedules from the same config as engine=tff, sparse-table views,
how clients run (fast/execute.py), client weighting, the server step (under DP,
fast/dp.py's aggregation) and plain measurement.
"""
from __future__ import annotations

import collections
import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench import privacy, splits, weighting
from fedrecon_bench.fast import client as fc
from fedrecon_bench.fast import dp, optim
from fedrecon_bench.errors import UserError
from fedrecon_bench.fast.data import EvalSet, split_parts
from fedrecon_bench.fast.execute import AXIS, MODES, Executor


Weights = collections.namedtuple("Weights", "trainable non_trainable")


def use_compilation_cache(cfg) -> str | None:
    """fast.compilation_cache: JAX's persistent cache of compiled rounds, so a repeated run
    (a sweep's next seed) loads them instead of compiling; null turns it off."""
    d = (cfg.get("fast") or {}).get("compilation_cache")
    if not d:
        return None
    d = os.path.expanduser(str(d))
    jax.config.update("jax_compilation_cache_dir", d)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)  # cache every round function
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return d


def client_mode(cfg, model) -> str:
    """fast.clients: auto = vmap on an accelerator, else the task model's choice for CPUs."""
    mode = (cfg.get("fast") or {}).get("clients", "auto")
    if mode == "auto":
        on_cpu = jax.default_backend() == "cpu"
        return getattr(model, "client_mode", "vmap") if on_cpu else "vmap"
    if mode not in MODES:
        raise UserError(f"fast.clients={mode!r} is unknown; use auto or one of {', '.join(MODES)}")
    return mode


@functools.partial(jax.jit, static_argnums=2)
def _round_keys(key, r, n: int):
    return jax.random.split(jax.random.fold_in(key, r), n)


class FastAlgorithm:
    engine = "fast"

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        self.task, self.info, self.cfg, a = task, info, cfg, cfg.algo
        use_compilation_cache(cfg)
        splits.check(cfg.split.train, "split.train", evaluation=False)
        splits.check(cfg.split.eval, "split.eval", evaluation=True)
        self.m = task.fast_model(info)
        self.mode = client_mode(cfg, self.m)
        self.client = fc.Client(self.m, host=self.mode == "host", axis=AXIS if self.mode == "vmap" else None)
        self.solo = fc.Client(self.m, host=self.mode == "host")  # for clients strictly one at a time
        fast = cfg.get("fast") or {}
        self.exec = Executor(self.mode, self.m.sparse, max_width=min(
            int(fast.get("max_group", 128)), int(getattr(self.m, "max_group", 128))),
            overhead=float(getattr(self.m, "lockstep_overhead", 16.0)))
        g0, l0 = task.initial_weights(info)  # engine=tff's Keras model starts from the same values
        self.model_order = list(self.m.model_order)
        self.g0 = {k: jnp.asarray(v) for k, v in g0.items()}
        self.l0 = {k: jnp.asarray(v) for k, v in l0.items()}
        opt = lambda key: optim.build(a[key], f"algo.{key}") if key in a else None
        self.server_opt, self.client_opt = opt("server_optimizer"), opt("client_optimizer")
        self.recon_opt = opt("reconstruction_optimizer")
        self.train_parts, self.eval_parts = split_parts(cfg.split.train, 1), split_parts(cfg.split.eval)
        self.key = jax.random.PRNGKey(cfg.seed)  # dropout only; sampling and init are the loop's and Keras'
        self._server = jax.jit(self._server_fn)
        federated = a.name != "centralized"
        self.weighting = weighting.kind(cfg) if federated else "examples"
        self.dp = privacy.params(cfg) if federated else None
        if self.dp:
            self.dp_key, self._dp_clients = dp.noise_key(cfg.seed), {}
            self._dp_server = jax.jit(self._dp_server_fn)

    # --- helpers ---------------------------------------------------------------
    def views(self, params: dict, rows: dict) -> dict:
        """A client's view of the parameters: only its rows of each sparse table."""
        return {n: fc.view(p, rows[self.m.sparse[n]]) if n in self.m.sparse else p
                for n, p in params.items()}

    def round_parts(self, state):
        """split.train's schedule arguments for the round `state` is about to run (rounds
        count from 1, as the authors' server state does: growing reconstruction epochs)."""
        if self.cfg.split.train.get("recon_epochs_constant", True):
            return self.train_parts
        return split_parts(self.cfg.split.train, int(state["round"]) + 1)

    def round_keys(self, state, n: int):
        return np.asarray(_round_keys(self.key, state["round"], n))

    def weight(self, examples, tally):
        """A client's weight in the mean (algo.client_weighting, weighting.py): its examples
        after reconstruction, 1, or its non-pad target tokens."""
        return weighting.fast(self.weighting, examples, tally)

    def run_clients(self, fn, state, c: dict, counts: np.ndarray):
        """exec.run of a round's clients on the global variables. Under DP each client's
        update is zeroed and clipped in the client (fast/dp.py) before it is summed."""
        g = state["global"]
        if not self.dp:
            return self.exec.run(fn, g, c, counts, delta_like=g)
        if fn not in self._dp_clients:  # one wrapper per fn: compiled once
            self._dp_clients[fn] = dp.Clients(self.dp, fn)
        return self.exec.run(self._dp_clients[fn], (g, state["dp"]), c, counts, delta_like=g)

    def server_step(self, state, params: dict, sums: dict):
        """g <- ServerOpt(g, weighted mean of the updates, or under DP their noised mean);
        returns the new state."""
        if self.dp:
            return self._dp_server(state, params, sums["delta"], sums["sum"]["dp"])
        return self._server(state, params, sums["delta"], sums["weight"])

    def _server_fn(self, state, params, delta_sum, weight):
        opt, new = self.server_opt.next(state["opt"], params, fc.mean(delta_sum, weight))
        return {**state, "global": new, "opt": opt, "round": state["round"] + 1}

    def _dp_server_fn(self, state, params, delta_sum, tally):
        key = jax.random.fold_in(self.dp_key, state["round"])
        mean, dp_state = dp.aggregate(self.dp, state["dp"], delta_sum, tally, key)
        opt, new = self.server_opt.next(state["opt"], params, mean)
        return {**state, "global": new, "opt": opt, "dp": dp_state, "round": state["round"] + 1}

    def dp_metrics(self, state, tally) -> dict:
        """A round's DP row values (none without DP); `state` is the one the round started from."""
        return dp.round_metrics(self.dp, state["dp"], tally["dp"]) if self.dp else {}

    def dp_clip(self, state) -> float:
        """The DP clip the next round would use."""
        return float(state["dp"]["clip"])

    def initialize(self):
        state = {"global": dict(self.g0), "opt": self.server_opt.init(self.g0),
                 "round": jnp.zeros((), jnp.int32)}
        return {**state, "dp": dp.init(self.dp)} if self.dp else state

    def global_weights(self, state):
        return self.weights_in_order(state["global"], self.m.global_names)

    @staticmethod
    def weights_in_order(params: dict, names):
        """As engine=tff's `global_weights` (TFF's ModelWeights): numpy arrays in order."""
        return Weights(trainable=[np.asarray(params[n]) for n in names], non_trainable=[])

    # --- evaluation ------------------------------------------------------------
    final = {"": ("batch", False)}  # per evaluation mode: how finalize reports its loss / counts

    def evaluate(self, state, clients, client_ids=None, seen: bool = False, recon_from=None) -> dict:
        """Metrics of the evaluation clients: a Selection (with its ids and, for seen users,
        their training data), or an EvalSet streamed in chunks. One dict, or one per mode."""
        chunks = clients if isinstance(clients, EvalSet) else [(clients, client_ids, recon_from)]
        total = None
        for sel, ids, rsel in chunks:
            part = self.eval_tallies(state, sel, ids, seen, rsel)
            total = part if total is None else jax.tree_util.tree_map(jnp.add, total, part)
        out = {mode: fc.finalize(self.m, t, *self.final[mode]) for mode, t in total.items()}
        return out[""] if set(out) == {""} else out

    def eval_tallies(self, state, clients, client_ids, seen: bool, recon_from) -> dict:
        """{mode: summed metric tally} of one chunk of evaluation clients."""
        raise NotImplementedError

    def eval_schedules(self, clients, seen: bool, recon_from=None):
        """(recon data, recon schedule, measured data, measured schedule) of eval clients.

        Unseen users: reconstruct on one part of their batches, measure on the other
        (split/eval, e.g. even / odd). Seen users: reconstruct on the user's training data
        (all of its batches, split/eval's epochs and step cap), measure on all held-out data."""
        (rp, re, rs), (pp, pe, ps) = self.eval_parts
        if not seen:
            return clients.data, clients.schedule(rp, re, rs), clients.data, clients.schedule(pp, pe, ps)
        return (recon_from.data, recon_from.schedule("all", re, rs), clients.data,
                clients.schedule("all"))

    def _measure_client(self, params, c):
        p = {**params, **c.get("local", {})}
        return {"sum": self.client.measure(p, c["data"], c["measured"], local=False)}

    def measure(self, params: dict, data: dict, measured, local: dict | None = None):
        """Summed metric states of each client's model as is (training=False): the shared
        `params` plus the client's own `local` variables (stacked per client), if any."""
        c = {"data": data, "measured": measured, **({"local": local} if local else {})}
        return self.exec.run(self._measure_client, params, c, measured.count)[0]["sum"]
