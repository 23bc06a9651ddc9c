"""How the clients of a round (or of an evaluation) run on engine=fast: each costs its own steps.

An algorithm's client function runs one client's phases (e.g. reconstruction, then
training), each a loop as long as that client's own schedule (client.py), and
returns a ClientOut (state.py): a weighted update, metric tallies, aggregator tallies,
and what the client keeps (e.g. stateful local variables). The sums are accumulated
client by client or group by group, so memory does not grow with the clients of a round. The clients run in one of three ways (`fast.clients`):

  vmap        groups of clients in lockstep (vmap): a group runs as long as its longest
              member. Clients are sorted by their steps and cut into groups of 2^k
              (plan()), so padding is only computed where it saves more per-iteration
              overhead than it costs. For tiny steps (MovieLens) and for GPUs.
  sequential  one compiled call, clients one after another (a scan), every loop exactly
              as long as its schedule. For heavy steps (the NWP LSTM).
  host        clients one after another, each SGD step its own compiled call from Python:
              XLA:CPU runs some kernels (convolutions' gradients) several times slower
              inside a compiled loop than alone (docs/performance.md).

`steps` counts the steps scheduled and the lane-steps computed (equal except for
a vmap group's lockstep padding); summary.json reports them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.state import ClientOut

MODES = ("vmap", "sequential", "host")
AXIS = "clients"  # the vmap axis of a lockstep group (fast/client.py loops to its longest member)
CALL = 50  # a lockstep group's call (dispatch, transfers, summing) in lockstep iterations' overhead


def plan(counts: np.ndarray, max_width: int, overhead: float) -> list[np.ndarray]:
    """Groups of client positions for lockstep runs. counts [n, phases]: each client's
    steps per phase; a group runs each phase as long as its longest member. Clients are
    sorted by total steps (longest first) and cut into groups of 2^k <= max_width (or all
    n at once) that minimize sum over groups of iterations x (overhead + width) + CALL x
    overhead: `overhead` is what one lockstep iteration costs beyond its lanes, in
    lane-steps, and a group's call costs CALL iterations' worth."""
    n = len(counts)
    if n == 0:
        return []
    counts = counts.reshape(n, -1)
    order = np.lexsort((np.arange(n), -counts.sum(1)))
    c = counts[order]
    widths = [w for w in (2 ** k for k in range(max_width.bit_length())) if w <= min(n, max_width)]
    if n <= max_width and n not in widths:
        widths.append(n)  # the whole round at once (a fixed size: clients_per_round)
    cost_of = {}  # width -> cost of the group starting at each position
    for w in widths:
        windows = np.lib.stride_tricks.sliding_window_view(c, w, axis=0)  # [n-w+1, phases, w]
        cost_of[w] = (windows.max(axis=2).sum(axis=1) * (overhead + w) + CALL * overhead).tolist()
    best, choice = [0.0] * (n + 1), [0] * n
    for i in range(n - 1, -1, -1):
        best[i] = float("inf")
        for w in widths:
            if i + w <= n and cost_of[w][i] + best[i + w] < best[i]:
                best[i], choice[i] = cost_of[w][i] + best[i + w], w
    groups, i = [], 0
    while i < n:
        groups.append(order[i:i + choice[i]])
        i += choice[i]
    return groups


def _stack1(tree):
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x)[None], tree)


class Executor:
    def __init__(self, mode: str, sparse: dict, max_width: int = 128, overhead: float = 16.0):
        if mode not in MODES:
            raise ValueError(f"unknown client mode {mode!r}")
        self.mode, self.sparse = mode, sparse
        self.max_width, self.overhead = int(max_width), float(overhead)
        self.steps = {"scheduled": 0, "computed": 0}
        self._compiled, self._plans, self._shape_cache = {}, {}, {}

    # --- sums ------------------------------------------------------------------
    def _accumulate(self, acc: ClientOut, out: ClientOut) -> ClientOut:
        """acc plus the outputs of a leading axis of clients."""
        add = lambda a, x: None if a is None else jax.tree_util.tree_map(lambda s, y: s + jnp.sum(y, axis=0), a, x)
        if acc.delta is not None:
            acc = acc._replace(delta=fc.weighted_sum(acc.delta, out.delta, out.weight, out.rows or {}, self.sparse),
                               weight=acc.weight + jnp.sum(out.weight))
        return acc._replace(tally=add(acc.tally, out.tally), agg=add(acc.agg, out.agg))

    @staticmethod
    def _zero(shapes: ClientOut, delta_like) -> ClientOut:
        """The empty sums for a client function's output `shapes`."""
        zeros = lambda t: None if t is None else jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), t)
        acc = ClientOut(tally=zeros(shapes.tally), agg=zeros(shapes.agg))
        if shapes.delta is not None:
            acc = acc._replace(delta={n: jnp.zeros_like(delta_like[n]) for n in shapes.delta},
                               weight=jnp.zeros((), jnp.float32))
        return acc

    def _empty(self, fn, shared, clients, delta_like):
        """The empty sums of fn's outputs (traced once per fn and input shapes)."""
        leaves, tree = jax.tree_util.tree_flatten((shared, clients))
        key = (fn, tree, tuple((np.shape(x), np.result_type(x)) for x in leaves[:len(
            jax.tree_util.tree_leaves(shared))]), tuple((np.shape(x)[1:], np.result_type(x))
                                                     for x in jax.tree_util.tree_leaves(clients)))
        if key not in self._shape_cache:
            self._shape_cache[key] = self._zero(self._trace_shapes(fn, shared, clients), delta_like)
        return self._shape_cache[key]

    def _trace_shapes(self, fn, shared, clients):
        if self.mode != "vmap":
            return jax.eval_shape(fn, shared, jax.tree_util.tree_map(lambda a: a[0], clients))
        batched = jax.eval_shape(jax.vmap(fn, in_axes=(None, 0), axis_name=AXIS), shared,
                                 jax.tree_util.tree_map(lambda a: a[:1], clients))
        return jax.tree_util.tree_map(lambda s: jax.ShapeDtypeStruct(s.shape[1:], s.dtype), batched)

    def _jit(self, key, make):
        if key not in self._compiled:
            self._compiled[key] = jax.jit(make())
        return self._compiled[key]

    def _count(self, counts: np.ndarray, groups=None) -> None:
        counts = counts.reshape(len(counts), -1)
        self.steps["scheduled"] += int(counts.sum())
        if groups is None:
            self.steps["computed"] += int(counts.sum())
        else:
            self.steps["computed"] += int(sum(len(g) * counts[g].max(0).sum() for g in groups))

    # --- running clients -------------------------------------------------------
    def run(self, fn, shared, clients: dict, counts: np.ndarray, delta_like: dict | None = None,
            load=None, sink=None):
        """Runs fn(shared, client) for every client (a slice of each array of `clients` along
        its leading axis); returns (sums, kept): sums = a ClientOut of sum_c w_c delta_c,
        sum_c w_c and the summed tallies (those fn returns), kept = fn's `keep` outputs
        stacked in client order (None if it has none, or with `sink`).
        load(positions) -> more per-client arrays for those clients, read a vmap group at a
        time (host: a client; sequential, one compiled call: all); sink(positions, kept) takes
        each group's `keep` instead of stacking them. Together they hold one group's clients'
        state at a time, not the round's (Ditto's personal models: whole models)."""
        clients = jax.tree_util.tree_map(np.asarray, clients)

        def part(at):  # the clients at positions `at`, with their loaded state
            mine = jax.tree_util.tree_map(lambda a: a[at], clients)
            if load is None:
                return mine
            state = load(at)
            if self.mode == "host":  # fn runs eagerly: JAX arrays, as the compiled modes' (numpy lacks `.at`)
                state = jax.tree_util.tree_map(jnp.asarray, state)
            return {**mine, **state}
        n = len(counts)
        if self.mode == "host":  # fn runs eagerly (its steps are compiled calls)
            return self._run_host(fn, shared, part, n, counts, delta_like, sink)
        if self.mode == "sequential":
            self._count(counts)
            everyone = np.arange(n)
            every = part(everyone) if load else clients
            acc = self._empty(fn, shared, every, delta_like)

            def make():
                def seq(shared, clients, acc):
                    def body(acc, c):
                        out = fn(shared, c)
                        return self._accumulate(acc, _stack1(out._replace(keep=None))), out.keep
                    return jax.lax.scan(body, acc, clients)
                return seq
            acc, kept = self._jit(("seq", fn), make)(shared, every, acc)
            if sink is None:
                return acc, kept
            sink(everyone, kept)
            return acc, None
        key = counts.tobytes() + str(counts.shape).encode()
        if key not in self._plans:
            if len(self._plans) > 64:
                self._plans.clear()
            self._plans[key] = plan(counts, self.max_width, self.overhead)
        groups = self._plans[key]
        self._count(counts, groups)
        first = part(groups[0]) if groups else clients  # also the shapes of the empty sums: read once
        acc = self._empty(fn, shared, first, delta_like)

        def make():
            def group(shared, clients, acc):
                out = jax.vmap(fn, in_axes=(None, 0), axis_name=AXIS)(shared, clients)
                return self._accumulate(acc, out._replace(keep=None)), out.keep
            return group
        run_group = self._jit(("vmap", fn), make)
        kept = []
        for i, g in enumerate(groups):
            acc, k = run_group(shared, first if i == 0 else part(g), acc)
            if sink is None:
                kept.append(k)
            else:
                sink(g, k)
        if sink is not None or kept[0] is None:
            return acc, None
        inverse = np.argsort(np.concatenate(groups))
        return acc, jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs)[inverse], *kept)

    def _run_host(self, fn, shared, part, n: int, counts: np.ndarray, delta_like, sink):
        """run() with mode host: one client at a time."""
        self._count(counts)
        add = self._jit(("add", fn), lambda: lambda acc, out: self._accumulate(acc, _stack1(out)))
        acc, kept = None, []
        for c in range(n):
            at = np.array([c])
            out = fn(shared, jax.tree_util.tree_map(lambda a: a[0], part(at)))
            if acc is None:
                acc = self._zero(jax.eval_shape(lambda: out), delta_like)
            acc = add(acc, out._replace(keep=None))
            if sink is None:
                kept.append(out.keep)
            else:
                sink(at, _stack1(out.keep))
        if sink is not None or kept[0] is None:
            return acc, None
        return acc, jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *kept)

    def chain(self, fn, carry, clients: dict, counts: np.ndarray):
        """Clients strictly one after another, each starting from the previous one's
        carry (training on the server): fn(carry, client) -> (carry, ClientOut with tally / keep).
        Returns (carry, summed tally, stacked keep)."""
        clients = jax.tree_util.tree_map(np.asarray, clients)
        self._count(counts)

        def summed(outs):
            return (jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), outs.tally), outs.keep)
        if self.mode == "host":
            outs = []
            for c in range(len(counts)):
                carry, out = fn(carry, jax.tree_util.tree_map(lambda a: a[c], clients))
                outs.append(out)
            return (carry, *summed(jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *outs)))

        def make():
            def seq(carry, clients):
                carry, outs = jax.lax.scan(fn, carry, clients)
                return (carry, *summed(outs))
            return seq
        return self._jit(("chain", fn), make)(carry, clients)
