"""One client's steps for the fast engine: pure functions run for each client of a round.

`train` runs SGD steps over a client's scheduled batches, training some parameters
while others stay frozen; `measure` evaluates on scheduled batches. Each is a loop
whose trip count is the client's own number of steps (a `lax.while_loop`), so a
client never computes a step for a batch it does not have. With `host=True` the same
step is one compiled call per step, looped in Python (fast/execute.py says when).
Metric states are sums (see fast/model.py), taken like TFF's metrics: on each
training step's predictions before its update.

Sparse tables (model.sparse): with `local=True` a client holds a *view* of a
table, only its own rows (data.rows), and its batches index the view
(`<field>:local`); with `local=False` batches index the full table. Plain SGD
then updates just the rows a batch touched, which equals TFF's dense update.

A proximal term `prox = (mu, anchor)` adds mu (w - anchor) to every trainable's
gradient at every step (the gradient of mu/2 ||w - anchor||^2, as TFF's proximal client
work adds it), e.g. towards the round's global model, or a personal model towards it. It touches every row a client holds, not only a batch's.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench.engines.fast.data import LOCAL


def view(table, rows):
    """A client's rows of a table; padding rows read 0."""
    return table.at[rows].get(mode="fill", fill_value=0)


class Client:
    """`host`: loop steps in Python (one compiled call each). `axis`: the vmap axis name when
    clients run in lockstep groups (see `_lockstep`). `counter`: called with the number of
    lanes at every step computed (tests count executed steps with it)."""

    def __init__(self, model, host: bool = False, axis: str | None = None, counter=None):
        self.m, self.host, self.axis, self.counter = model, host, axis, counter
        self._compiled = {}  # host mode: one compiled step per (kind, optimizer, local, stats)
        self._zeros = {}

    def _host(self, key, fn):
        if key not in self._compiled:
            self._compiled[key] = jax.jit(fn)
        return self._compiled[key]

    def _fields(self, names, local: bool) -> dict:
        return {n: f + (LOCAL if local else "") for n, f in self.m.sparse.items() if n in names}

    def _gather(self, params: dict, batch: dict, local: bool) -> dict:
        fields = self._fields(params, local)
        return {n: (p[batch[fields[n]]] if n in fields else p) for n, p in params.items()}

    def _tally(self, batch, pred, loss, v, stats: bool = True):
        """Metric sums of one step (v = 0 for a lockstep step past the client's own);
        none at all without stats (reconstruction reports nothing: no work in its loop)."""
        if not stats:
            return {}
        n = jnp.sum(batch["mask"])
        return {"stats": {k: v * x for k, x in self.m.stats(batch, pred).items()}, "loss_sum": v * loss,
                "batches": v, "loss_x_sum": v * loss * n, "examples": v * n}

    def _count(self, v):
        if self.counter is not None:  # one call per computed step; vmapped: per lane
            jax.debug.callback(lambda lanes: self.counter(np.size(lanes)), v)

    def _loop(self, count, body, carry):
        """body(s, v, carry) for s < count. In a lockstep group the loop runs as long as the
        group's longest member (`pmax`) and v = 0 past a client's own steps: such a step
        changes nothing, as cheaply as masking can (no copy of the carry)."""
        n = jax.lax.pmax(count, self.axis) if self.axis else count
        return jax.lax.fori_loop(0, n, lambda s, c: body(s, (s < count).astype(jnp.float32), c), carry)

    def _zero(self, params: dict, data: dict, local: bool, stats: bool):
        """An empty tally (its shapes traced once per input shapes: host mode calls this a lot)."""
        leaves, tree = jax.tree_util.tree_flatten((params, data))
        key = (tree, tuple((np.shape(x), jnp.result_type(x)) for x in leaves), local, stats)
        if key not in self._zeros:
            b0 = {k: a[0] for k, a in data.items()}
            self._zeros[key] = jax.eval_shape(lambda: self._tally(b0, self.m.predict(
                self._gather(params, b0, local), b0, False, None), 0.0, 0.0, stats))
        return jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), self._zeros[key])

    # --- training ----------------------------------------------------------------
    def _grads(self, tr: dict, fixed: dict, batch: dict, rows: dict, k):
        """Loss, predictions and gradients for the sparse trainables' `rows` of this batch
        and the dense trainables."""
        dense = {n: w for n, w in tr.items() if n not in rows}

        def loss_fn(rows, dense):
            pred = self.m.predict({**fixed, **dense, **rows}, batch, True, k)
            return self.m.loss(batch, pred), pred

        (loss, pred), (g_rows, g_dense) = jax.value_and_grad(
            loss_fn, argnums=(0, 1), has_aux=True)(rows, dense)
        return loss, pred, g_rows, g_dense

    def _apply(self, tr: dict, ostate, g_rows: dict, g_dense: dict, ids: dict, v, opt, prox=None):
        if prox is not None:  # mu (w - anchor) on every trainable, all of a table's rows included
            mu, anchor = prox
            pull = {n: jnp.float32(mu) * (tr[n] - anchor[n]) for n in tr}
        if opt.plain_sgd:  # w - lr * g, only on the rows the batch touched (a pull: everywhere)
            lr = jnp.float32(opt.lr) * v
            if prox is None:
                new = {n: tr[n] - lr * g for n, g in g_dense.items()}
            else:
                new = {n: tr[n] - lr * (g_dense[n] + pull[n]) if n in g_dense else tr[n] - lr * pull[n]
                       for n in tr}
            new.update({n: new.get(n, tr[n]).at[ids[n]].add(-lr * g) for n, g in g_rows.items()})
            return new, ostate
        grads = dict(g_dense)
        grads.update({n: jnp.zeros_like(tr[n]).at[ids[n]].add(g) for n, g in g_rows.items()})
        if prox is not None:
            grads = {n: grads.get(n, 0.0) + pull[n] for n in tr}
        new_state, new = opt.next(ostate, tr, grads)
        keep = lambda a, b: jnp.where(v > 0, a, b)
        return jax.tree_util.tree_map(keep, (new, new_state), (tr, ostate))

    def _train_step(self, carry, frozen, data, b, k, v, opt, local: bool, stats: bool, prox=None):
        """One SGD step on batch `b` of `data`; carry = (trainable, optimizer state, tally)."""
        tr, ostate, tally = carry
        self._count(v)
        batch = {name: a[b] for name, a in data.items()}
        ids = {n: batch[f] for n, f in self._fields(tr, local).items()}
        loss, pred, g_rows, g_dense = self._grads(
            tr, self._gather(frozen, batch, local), batch, {n: tr[n][i] for n, i in ids.items()}, k)
        tr, ostate = self._apply(tr, ostate, g_rows, g_dense, ids, v, opt, prox)
        return tr, ostate, jax.tree_util.tree_map(jnp.add, tally, self._tally(batch, pred, loss, v, stats))

    def _lockstep(self, trainable, frozen, opt, data, sched, keys, local: bool, stats: bool, carry, prox=None):
        """The steps of a lockstep group. Indexing by a client's own batch inside the loop
        would be a gather per lane and step, so the client's batches are put in step order
        once, and frozen table rows gathered once; then every lane reads step s. When no
        two steps read the same row (`sched.once`, plain SGD), the trainable rows are read
        up front as well and their updates scattered back once, after the loop."""
        steps = {name: a[sched.idx] for name, a in data.items()}  # [S, bs, ...]
        frozen_sparse = self._fields(frozen, local)
        fixed = self._gather(frozen, steps, local)
        ids = {n: steps[f] for n, f in self._fields(trainable, local).items()}
        one_pass = bool(ids) and sched.once and opt.plain_sgd and prox is None
        rows0 = {n: trainable[n][i] for n, i in ids.items()} if one_pass else {}
        def body(s, v, c):
            tr, ostate, tally, moved = c
            self._count(v)
            batch = {name: x[s] for name, x in steps.items()}
            fx = {n: (p[s] if n in frozen_sparse else p) for n, p in fixed.items()}
            if one_pass:
                loss, pred, g_rows, g_dense = self._grads(tr, fx, batch, {n: r[s] for n, r in rows0.items()},
                                                          keys[s])
                lr = jnp.float32(opt.lr) * v
                tr = {**tr, **{n: tr[n] - lr * g for n, g in g_dense.items()}}
                # dynamic_update_slice, not .at[s].set: no bounds select, so XLA updates in place
                moved = {n: jax.lax.dynamic_update_index_in_dim(m, -lr * g_rows[n], s, 0)
                         for n, m in moved.items()}
            else:
                step_ids = {n: i[s] for n, i in ids.items()}
                loss, pred, g_rows, g_dense = self._grads(
                    tr, fx, batch, {n: tr[n][i] for n, i in step_ids.items()}, keys[s])
                tr, ostate = self._apply(tr, ostate, g_rows, g_dense, step_ids, v, opt, prox)
            tally = jax.tree_util.tree_map(jnp.add, tally, self._tally(batch, pred, loss, v, stats))
            return tr, ostate, tally, moved

        moved = {n: jnp.zeros_like(r) for n, r in rows0.items()}
        tr, _, tally, moved = self._loop(sched.count, body, (*carry, moved))
        return {**tr, **{n: tr[n].at[ids[n]].add(m) for n, m in moved.items()}}, tally

    def train(self, trainable: dict, frozen: dict, opt, data: dict, sched, rng, local: bool,
              stats: bool = True, prox=None):
        """SGD steps on `trainable` over a Schedule (split.py) of `data`'s batches; returns
        (trainable, tally). stats=False: no metrics, an empty tally (reconstruction).
        prox: (mu, anchor dict) adds the proximal pull mu (w - anchor) (None or mu = 0: none)."""
        if prox is not None and not prox[0]:
            prox = None  # mu = 0 is exactly no term, as TFF's proximal client work skips it
        keys = jax.random.split(rng, sched.idx.shape[0])
        carry = (trainable, opt.init(trainable), self._zero({**frozen, **trainable}, data, local, stats))
        if self.host:
            mu = None if prox is None else prox[0]
            step = self._host(("train", opt, local, stats, mu), lambda c, f, d, b, k, a: self._train_step(
                c, f, d, b, k, jnp.float32(1.0), opt, local, stats, None if a is None else (mu, a)))
            data, anchor = jax.device_put(data), None if prox is None else prox[1]
            for s in range(int(sched.count)):
                carry = step(carry, frozen, data, sched.idx[s], keys[s], anchor)
            return carry[0], carry[2]
        if self.axis:
            return self._lockstep(trainable, frozen, opt, data, sched, keys, local, stats, carry, prox)
        carry = self._loop(sched.count, lambda s, v, c: self._train_step(
            c, frozen, data, sched.idx[s], keys[s], v, opt, local, stats, prox), carry)
        return carry[0], carry[2]

    # --- measuring ---------------------------------------------------------------
    def _measure_step(self, tally, seen: dict, batch: dict, v):
        """seen: the parameters as this batch sees them (sparse tables as its rows)."""
        self._count(v)
        pred = self.m.predict(seen, batch, False, None)
        return jax.tree_util.tree_map(jnp.add, tally, self._tally(batch, pred, self.m.loss(batch, pred), v))

    def _measure_at(self, tally, params: dict, data: dict, b, v, local: bool):
        batch = {name: a[b] for name, a in data.items()}
        return self._measure_step(tally, self._gather(params, batch, local), batch, v)

    def measure(self, params: dict, data: dict, sched, local: bool):
        """Metric sums of the model as is (training=False) on the scheduled batches."""
        tally = self._zero(params, data, local, True)
        if self.host:
            step = self._host(("measure", local), lambda t, p, d, b: self._measure_at(
                t, p, d, b, jnp.float32(1.0), local))
            data = jax.device_put(data)
            for s in range(int(sched.count)):
                tally = step(tally, params, data, sched.idx[s])
            return tally
        if self.axis:  # as _lockstep: batches in step order, table rows gathered once
            steps = {name: a[sched.idx] for name, a in data.items()}
            sparse = self._fields(params, local)
            rows = self._gather(params, steps, local)
            return self._loop(sched.count, lambda s, v, t: self._measure_step(
                t, {n: (p[s] if n in sparse else p) for n, p in rows.items()},
                {name: x[s] for name, x in steps.items()}, v), tally)
        return self._loop(sched.count, lambda s, v, t: self._measure_at(
            t, params, data, sched.idx[s], v, local), tally)


def update(before: dict, after: dict, examples):
    """A client's update `before - after` and its weight, as TFF sends them: both zeroed
    when any value is not finite (so one diverged client cannot poison the mean)."""
    delta = {n: before[n] - after[n] for n in before}
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(d)) for d in delta.values()]))
    return {n: jnp.where(ok, d, 0.0) for n, d in delta.items()}, jnp.where(ok, examples, 0.0)


def weighted_sum(acc: dict, deltas: dict, weights, rows: dict, sparse: dict) -> dict:
    """acc + sum_c w_c * delta_c over a leading client axis; a sparse table's per-client
    rows are scattered back into the table."""
    out = {}
    for n, d in deltas.items():
        w = weights.reshape((-1,) + (1,) * (d.ndim - 1))
        if n in sparse:
            r = rows[sparse[n]].reshape(-1)
            out[n] = acc[n].at[r].add((w * d).reshape((-1,) + d.shape[2:]), mode="drop")
        else:
            out[n] = acc[n] + jnp.sum(w * d, axis=0)
    return out


def mean(sums: dict, total) -> dict:
    """The weighted mean from summed updates (TFF's MeanFactory): sum / total, 0 if no weight."""
    return {n: jnp.where(total > 0, s / jnp.maximum(total, 1e-30), 0.0) for n, s in sums.items()}


def finalize(model, tally, loss: str, counts: bool = False) -> dict:
    """Metric values from summed tallies. loss: "batch" = mean over batches (TFF's
    MeanMetricWrapper), "example" = example-weighted (TFF's Keras-model loss metric,
    which also reports the counts)."""
    t = jax.tree_util.tree_map(float, tally)
    out = model.metrics(t["stats"])
    if loss == "batch":
        out["loss"] = t["loss_sum"] / t["batches"] if t["batches"] else 0.0
    else:
        out["loss"] = t["loss_x_sum"] / t["examples"] if t["examples"] else 0.0
    if counts:
        out["num_examples"], out["num_batches"] = int(round(t["examples"])), int(round(t["batches"]))
    return out
