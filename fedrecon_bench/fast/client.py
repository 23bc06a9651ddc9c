"""One client's steps for the fast engine: pure functions the algorithms `vmap` over clients.

`train` runs SGD steps (`lax.scan`) over a client's scheduled batches, training
some parameters while others stay frozen; `measure` evaluates on scheduled
batches; `aggregate` is the server's weighted mean of client updates. Metric
states are sums (see fast/model.py), taken like TFF's metrics: on each training
step's predictions before its update.

Sparse tables (model.sparse): with `local=True` a client holds a *view* of a
table, only its own rows (data.rows), and its batches index the view
(`<field>:local`); with `local=False` batches index the full table. Plain SGD
then updates just the rows a batch touched, which equals TFF's dense update.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

from fedrecon_bench.fast.data import LOCAL


def view(table, rows):
    """A client's rows of a table; padding rows read 0."""
    return table.at[rows].get(mode="fill", fill_value=0)


class Client:
    def __init__(self, model):
        self.m = model

    def _fields(self, names, local: bool) -> dict:
        return {n: f + (LOCAL if local else "") for n, f in self.m.sparse.items() if n in names}

    def _gather(self, params: dict, batch: dict, local: bool) -> dict:
        fields = self._fields(params, local)
        return {n: (p[batch[fields[n]]] if n in fields else p) for n, p in params.items()}

    def _tally(self, batch, pred, loss, v, stats: bool = True):
        """Metric sums of one step (v = 0 for steps a client does not have)."""
        n = jnp.sum(batch["mask"])
        s = {k: v * x for k, x in self.m.stats(batch, pred).items()} if stats else {}
        return {"stats": s, "loss_sum": v * loss, "batches": v, "loss_x_sum": v * loss * n,
                "examples": v * n}

    def train(self, trainable: dict, frozen: dict, opt, data: dict, idx, valid, rng, local: bool,
              stats: bool = True):
        """SGD steps on `trainable`; returns (trainable, tally). stats=False: no metrics
        (reconstruction reports none), which saves their cost."""
        sparse = self._fields(trainable, local)

        def step(carry, xs):
            tr, ostate, tally = carry
            i, v, k = xs
            batch = {name: a[i] for name, a in data.items()}
            fixed = self._gather(frozen, batch, local)

            def loss_fn(rows, dense):
                pred = self.m.predict({**fixed, **dense, **rows}, batch, True, k)
                return self.m.loss(batch, pred), pred

            rows = {n: tr[n][batch[f]] for n, f in sparse.items()}
            dense = {n: w for n, w in tr.items() if n not in sparse}
            (loss, pred), (g_rows, g_dense) = jax.value_and_grad(
                loss_fn, argnums=(0, 1), has_aux=True)(rows, dense)
            if opt.plain_sgd:  # w - lr * g, only on the rows the batch touched
                lr = jnp.float32(opt.lr) * v
                new = {n: w - lr * g_dense[n] for n, w in dense.items()}
                new.update({n: tr[n].at[batch[f]].add(-lr * g_rows[n]) for n, f in sparse.items()})
            else:
                grads = dict(g_dense)
                grads.update({n: jnp.zeros_like(tr[n]).at[batch[f]].add(g_rows[n])
                              for n, f in sparse.items()})
                new_state, new = opt.next(ostate, tr, grads)
                keep = lambda a, b: jnp.where(v > 0, a, b)
                new, ostate = jax.tree_util.tree_map(keep, (new, new_state), (tr, ostate))
            tally = jax.tree_util.tree_map(jnp.add, tally, self._tally(batch, pred, loss, v, stats))
            return (new, ostate, tally), None

        keys = jax.random.split(rng, idx.shape[0])
        b0 = {k: a[0] for k, a in data.items()}
        shapes = jax.eval_shape(lambda: self._tally(b0, self.m.predict(
            self._gather({**frozen, **trainable}, b0, local), b0, False, None), 0.0, 0.0, stats))
        zero = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, jnp.float32), shapes)
        (tr, _, tally), _ = jax.lax.scan(step, (trainable, opt.init(trainable), zero), (idx, valid, keys))
        return tr, tally

    def measure(self, params: dict, data: dict, idx, valid, local: bool):
        """Metric sums of the model as is (training=False) on the scheduled batches."""
        def one(i, v):  # sequential over batches (lax.map): activations of one batch at a time
            batch = {name: a[i] for name, a in data.items()}
            pred = self.m.predict(self._gather(params, batch, local), batch, False, None)
            return self._tally(batch, pred, self.m.loss(batch, pred), v)

        return combine(jax.lax.map(lambda iv: one(*iv), (idx, valid)))


def update(before: dict, after: dict, examples):
    """A client's update `before - after` and its weight, as TFF sends them: both zeroed
    when any value is not finite (so one diverged client cannot poison the mean)."""
    delta = {n: before[n] - after[n] for n in before}
    ok = jnp.all(jnp.stack([jnp.all(jnp.isfinite(d)) for d in delta.values()]))
    return {n: jnp.where(ok, d, 0.0) for n, d in delta.items()}, jnp.where(ok, examples, 0.0)


def aggregate(params: dict, deltas: dict, weights, rows: dict, sparse: dict) -> dict:
    """Weighted mean of the clients' updates (sum_c w_c * delta_c / sum_c w_c), TFF's
    MeanFactory; a sparse table's per-client rows are scattered back into the table."""
    total = jnp.sum(weights)
    out = {}
    for n, d in deltas.items():
        w = weights.reshape((-1,) + (1,) * (d.ndim - 1))
        if n in sparse:
            r = rows[sparse[n]].reshape(-1)
            s = jnp.zeros_like(params[n]).at[r].add((w * d).reshape((-1,) + d.shape[2:]), mode="drop")
        else:
            s = jnp.sum(w * d, axis=0)
        out[n] = jnp.where(total > 0, s / jnp.maximum(total, 1e-30), 0.0)
    return out


def summed(tally, live):
    """Per-client tallies summed over clients, `live` (0 for a chunk's padding clients) weighting each."""
    return combine(jax.tree_util.tree_map(lambda x: x * live.reshape((-1,) + (1,) * (x.ndim - 1)), tally))


def combine(tally) -> dict:
    """Sum a vmapped tally over clients."""
    return jax.tree_util.tree_map(lambda x: jnp.sum(x, axis=0), tally)


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
