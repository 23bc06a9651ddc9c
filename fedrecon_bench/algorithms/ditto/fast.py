"""Ditto on engine=fast (the pseudo-code and how v is stored: __init__.py). A round is FedAvg's
round (FedAvg.next, unchanged), then a second pass over the same clients that steps their
personal models from the client store."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench import client_store
from fedrecon_bench.algorithms.ditto import SPEC
from fedrecon_bench.algorithms.fedavg.fast import FedAvg
from fedrecon_bench.engines.fast import optim
from fedrecon_bench.engines.fast.evaluators import Evaluator, FineTune, Global
from fedrecon_bench.engines.fast.split import Schedule
from fedrecon_bench.engines.fast.state import ClientOut

EVAL_BYTES = 64 << 20  # seen users' personal models read and measured at a time, in bytes


class Ditto(FedAvg):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        a = cfg.algo
        self.lam = float(a.get("lam", 0.1))
        self.personal_opt = optim.build(a.personal_optimizer, "algo.personal_optimizer")
        self.p_epochs, self.p_steps_max = int(a.get("personal_epochs", 1)), a.get("personal_steps_max")
        self.from_global = a.get("personal_init", "initial") == "global"
        self.names = self.m.model_order  # v holds every variable
        self.client_store = client_store.make(a.get("store", "disk"), run_dir)
        self.evaluators = (Personal(self), Global(self.rt, "global"))

    def personal(self, w: dict, client_ids) -> dict:
        """The clients' personal models stacked along a leading axis: stored, else the first v
        (w_0, or with personal_init=global the given global model w)."""
        return client_store.stacked(self.client_store, self.names, w if self.from_global else self.g0, client_ids)

    def _personal_client(self, w, c):
        """s steps of v <- v - eta_p (grad F(v) + lam (v - w)). Plain SGD: the client's rows of a
        sparse table step in its view; its other rows, where grad F = 0, take the s steps'
        closed form w + (1 - eta_p lam)^s (v - w). Else every row steps."""
        v, sched, key, opt = c["v"], c["steps"], jax.random.fold_in(c["key"], 1), self.personal_opt
        if not opt.plain_sgd:
            new, _ = self.client.train(v, {}, opt, c["data"], sched, key, local=False, stats=False,
                                       prox=(self.lam, w))
            return ClientOut(keep=new)
        rows, sparse = c["rows"], self.m.sparse
        mine, _ = self.client.train(self.views(v, rows), {}, opt, c["data"], sched, key, local=True,
                                    stats=False, prox=(self.lam, self.views(w, rows)))
        decay = jnp.power(jnp.float32(1.0 - opt.lr * self.lam), sched.count)  # an integer power: exact sign
        new = {n: (w[n] + decay * (v[n] - w[n])).at[rows[sparse[n]]].set(mine[n], mode="drop")
               if n in sparse else mine[n] for n in v}
        return ClientOut(keep=new)

    def next(self, state, clients, client_ids):
        new_state, metrics = super().next(state, clients, client_ids)  # the global model: FedAvg's round
        steps = clients.schedule("all", self.p_epochs, self.p_steps_max)
        c = {"data": clients.data, "rows": clients.rows, "steps": steps, "key": self.round_keys(state, len(clients))}
        ids = list(client_ids)
        # v is read from the store and written back a group of clients at a time: a round holds
        # one group's personal models (whole models), not every sampled client's
        load = lambda at: {"v": self.personal(state.params, [ids[i] for i in at])}
        sink = lambda at, kept: client_store.put_stacked(self.client_store, self.names, [ids[i] for i in at], kept)
        self.exec.run(self._personal_client, state.params, c, steps.count, load=load, sink=sink)
        return new_state, {**metrics, **client_store.round_metrics(self.client_store)}


class ProxTune(FineTune):
    """Unseen users: v <- w, trained on the reconstruction part with the pull towards w (in the
    client's view: rows it has no data for stay at w), then measured on the other part."""

    def __init__(self, algo):
        super().__init__(algo.rt, algo.names, algo.personal_opt, "personal")
        self.lam = algo.lam

    def _tuned(self, w, c, local: bool):
        w_i = self.rt.views(w, c["rows"]) if local else w
        v, _ = self.rt.client.train(w_i, {}, self.opt, c.get("rdata", c["data"]), c["recon"], c["key"], local,
                                    stats=False, prox=(self.lam, w_i))
        t = self.rt.client.measure(v, c["data"], c["measured"], local)
        return ClientOut(tally=t, keep=t)


class Personal(Evaluator):
    """The headline: seen users' stored v as is (read in chunks of at most EVAL_BYTES), unseen
    users' v from w (ProxTune)."""

    def __init__(self, algo):
        super().__init__(algo.rt, "personal")
        self.algo, self.tune = algo, ProxTune(algo)

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        if not seen:
            return self.tune.tally(state, clients, client_ids, seen, recon_from)
        _, _, data, measured = self.rt.eval_schedules(clients, seen, recon_from)
        model_bytes = sum(np.asarray(p).nbytes for p in state.params.values())
        step = max(1, EVAL_BYTES // max(1, model_bytes))
        sums, per = None, []
        for a in range(0, len(client_ids), step):
            part = slice(a, a + step)
            v = self.algo.personal(state.params, client_ids[part])
            t, each = self.rt.measure_each({}, {k: x[part] for k, x in data.items()},
                                           Schedule(measured.idx[part], measured.count[part], measured.once), v)
            sums = t if sums is None else jax.tree_util.tree_map(jnp.add, sums, t)
            per.append(each)
        return sums, jax.tree_util.tree_map(lambda *xs: jnp.concatenate(xs), *per)
