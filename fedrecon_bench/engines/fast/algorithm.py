"""engine=fast's algorithm base: what every JAX algorithm shares (engines/tff/algorithm.py
is the TFF twin).

    Runtime      the task's JAX model and initial weights, how clients run (execute.py),
                 the evaluation schedules and keys: what evaluators.py's pieces use
    FastAlgorithm  optimizers and schedules from the config, client weighting, the
                 aggregator (aggregate.py: a mean, or DP) and the server step over the
                 typed ServerState (state.py), evaluation through the listed evaluators
"""
from __future__ import annotations

import functools
import os

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench import weighting
from fedrecon_bench.algorithms.api import Algorithm, Weights
from fedrecon_bench.engines.fast import aggregate, client as fc, jax_compat, optim  # noqa: F401
from fedrecon_bench.engines.fast import weighting as fast_weighting
from fedrecon_bench.engines.fast.data import EvalSet
from fedrecon_bench.engines.fast.evaluators import client_rows
from fedrecon_bench.engines.fast.execute import AXIS, MODES, Executor
from fedrecon_bench.engines.fast.split import split_parts
from fedrecon_bench.engines.fast.state import ClientOut, ServerState
from fedrecon_bench.errors import UserError


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
        return model.client_mode if jax.default_backend() == "cpu" else "vmap"
    if mode not in MODES:
        raise UserError(f"fast.clients={mode!r} is unknown; use auto or one of {', '.join(MODES)}")
    return mode


@functools.partial(jax.jit, static_argnums=2)
def _round_keys(key, r, n: int):
    return jax.random.split(jax.random.fold_in(key, r), n)


class Runtime:
    """The task's JAX model and how a run's clients execute; shared by an algorithm and its
    evaluators."""

    def __init__(self, task, info: dict, cfg):
        use_compilation_cache(cfg)
        self.m = task.fast_model(info)
        self.mode = client_mode(cfg, self.m)
        self.client = fc.Client(self.m, host=self.mode == "host", axis=AXIS if self.mode == "vmap" else None)
        self.solo = fc.Client(self.m, host=self.mode == "host")  # for clients strictly one at a time
        fast = cfg.get("fast") or {}
        self.exec = Executor(self.mode, self.m.sparse, max_width=min(int(fast.get("max_group", 128)),
                                                                     int(self.m.max_group)),
                             overhead=float(self.m.lockstep_overhead))
        g0, l0 = task.initial_weights(info)  # engine=tff's Keras model starts from the same values
        self.g0 = {k: jnp.asarray(v) for k, v in g0.items()}
        self.l0 = {k: jnp.asarray(v) for k, v in l0.items()}
        self.key = jax.random.PRNGKey(cfg.seed)  # dropout only; sampling and init are the loop's and Keras'
        self.eval_parts = split_parts(cfg.split.eval)

    def views(self, params: dict, rows: dict) -> dict:
        """A client's view of the parameters: only its rows of each sparse table."""
        return {n: fc.view(p, rows[self.m.sparse[n]]) if n in self.m.sparse else p
                for n, p in params.items()}

    def eval_keys(self, n: int):
        return np.asarray(jax.random.split(self.key, n))

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
        t = self.client.measure(p, c["data"], c["measured"], local=False)
        return ClientOut(tally=t, keep=t)

    def measure_each(self, params: dict, data: dict, measured, local: dict | None = None):
        """(summed metric states, each client's stacked) of each client's model as is
        (training=False): the shared `params` plus the client's own `local` variables
        (stacked per client), if any."""
        c = {"data": data, "measured": measured, **({"local": local} if local else {})}
        sums, per = self.exec.run(self._measure_client, params, c, measured.count)
        return sums.tally, per

    def measure(self, params: dict, data: dict, measured, local: dict | None = None):
        """The summed metric states of measure_each."""
        return self.measure_each(params, data, measured, local)[0]


class FastAlgorithm(Algorithm):
    engine = "fast"
    evaluators: tuple = ()  # evaluators.py pieces, headline first (set by each algorithm)

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        self.task, self.info, self.cfg, a = task, info, cfg, cfg.algo
        self.rt = rt = Runtime(task, info, cfg)
        self.m, self.client, self.solo, self.exec = rt.m, rt.client, rt.solo, rt.exec
        self.g0, self.l0, self.key = rt.g0, rt.l0, rt.key
        opt = lambda key: optim.build(a[key], f"algo.{key}") if key in a else None
        self.server_opt, self.client_opt = opt("server_optimizer"), opt("client_optimizer")
        self.recon_opt = opt("reconstruction_optimizer")
        self.train_parts = split_parts(cfg.split.train, 1)
        self.weighting = weighting.kind(cfg) if self.spec.federated else "examples"
        self.agg = aggregate.build(cfg, self.spec)
        self._server = jax.jit(self._server_fn)

    # --- helpers ---------------------------------------------------------------
    def views(self, params: dict, rows: dict) -> dict:
        return self.rt.views(params, rows)

    def round_parts(self, state: ServerState):
        """split.train's schedule arguments for the round `state` is about to run (rounds
        count from 1, as the authors' server state does: growing reconstruction epochs)."""
        if self.cfg.split.train.get("recon_epochs_constant", True):
            return self.train_parts
        return split_parts(self.cfg.split.train, int(state.round) + 1)

    def round_keys(self, state: ServerState, n: int):
        return np.asarray(_round_keys(self.key, state.round, n))

    def weight(self, examples, tally):
        """A client's weight in the mean (algo.client_weighting, weighting.py): its examples
        after reconstruction, 1, or its non-pad target tokens."""
        return fast_weighting.weight(self.weighting, examples, tally)

    def run_clients(self, fn, state: ServerState, c: dict, counts: np.ndarray):
        """exec.run of a round's clients on the global variables, through the aggregator's
        client wrapper (under DP each update is zeroed and clipped in its client)."""
        g = state.params
        return self.exec.run(self.agg.client(fn), (g, state.agg), c, counts, delta_like=g)

    # --- the server ------------------------------------------------------------
    def initialize(self) -> ServerState:
        return ServerState(dict(self.g0), self.server_opt.init(self.g0), jnp.zeros((), jnp.int32),
                           self.agg.init())

    def server_step(self, state: ServerState, sums) -> ServerState:
        """g <- ServerOpt(g, the aggregator's mean of the round's updates)."""
        return self._server(state, sums._replace(tally=None))

    def _server_fn(self, state: ServerState, sums):
        mean, agg = self.agg.server(state.agg, sums, state.round)
        opt, new = self.server_opt.next(state.opt, state.params, mean)
        return state._replace(params=new, opt=opt, agg=agg, round=state.round + 1)

    def agg_metrics(self, state: ServerState, sums) -> dict:
        """A round's aggregator row values (DP: the clip it used, zeroing); `state` is the
        one the round started from."""
        return self.agg.metrics(state.agg, sums)

    def dp_clip(self, state: ServerState) -> float | None:
        return self.agg.clip(state.agg)

    def global_weights(self, state: ServerState) -> Weights:
        names = self.m.global_names if self.spec.sends == "global" else self.m.model_order
        return Weights([np.asarray(state.params[n]) for n in names], [], list(names))

    # --- evaluation ------------------------------------------------------------
    def evaluators_for(self, seen: bool) -> tuple:
        """The evaluation pieces for unseen or seen users, headline first (an algorithm may
        lead with another piece for seen users)."""
        return self.evaluators

    def eval_modes(self, seen: bool) -> tuple:
        return tuple(ev.label(seen) for ev in self.evaluators_for(seen))

    def evaluate(self, state: ServerState, clients, client_ids=None, seen: bool = False,
                 recon_from=None, records=None) -> dict:
        """{mode: metrics} of the evaluation clients, one mode per evaluator (headline first):
        a Selection (with its ids and, for seen users, their training data), or an EvalSet
        streamed in chunks. `records` (records.Records) receives each chunk's per-client rows."""
        chunks = clients if isinstance(clients, EvalSet) else [(clients, client_ids, recon_from)]
        total = {}
        for sel, ids, rsel in chunks:
            for ev in self.evaluators_for(seen):
                t, per = ev.tally(state, sel, ids, seen, rsel)
                label = ev.label(seen)
                total[label] = t if label not in total else jax.tree_util.tree_map(jnp.add, total[label], t)
                if records is not None:
                    records.add(label, ids, client_rows(self.m, per, ev))
        return {ev.label(seen): fc.finalize(self.m, total[ev.label(seen)], ev.loss, ev.counts)
                for ev in self.evaluators_for(seen)}
