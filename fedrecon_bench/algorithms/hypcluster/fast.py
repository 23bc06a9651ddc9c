"""HypCluster on engine=fast (the pseudo-code: __init__.py): FedAvg's client on the set it
chooses, the K sets in the server state's params (sets.py: their layout and per-set mean),
each set with its own server optimizer state. The choice costs one measuring pass per
set over the client's training batches, inside the client function the executor runs."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from fedrecon_bench.algorithms.api import Weights
from fedrecon_bench.algorithms.fedavg.fast import FedAvg
from fedrecon_bench.algorithms.hypcluster import SPEC, warm_paths, weights_file
from fedrecon_bench.algorithms.hypcluster.sets import Sets
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.evaluators import Evaluator
from fedrecon_bench.engines.fast.execute import Executor
from fedrecon_bench.engines.fast.state import ClientOut, ServerState
from fedrecon_bench.errors import UserError
from fedrecon_bench.evaluation import OWN

PER_SET = ("set_clients", "set_weight")  # a round's tally entries [K]: clients and weight per set


def set_seed(seed: int, k: int) -> int:
    """The initializer's seed of set k > 0: a 31-bit draw from (run seed, k), so no set of a
    run repeats another run seed's set 0."""
    return int(np.random.SeedSequence([int(seed) % 2**32, k]).generate_state(1)[0] >> 1)


def load_warm(path: str, model, template: dict) -> dict:
    """One set from a FedAvg run's global_weights.npz (`<index>/<name>` arrays in the model's
    order), checked against the model: every name, every shape."""
    f = weights_file(path)
    try:
        with np.load(f, allow_pickle=False) as z:
            got = {k.split("/", 1)[-1]: z[k] for k in sorted(z.files)}
    except Exception as e:  # a damaged or foreign file
        raise UserError(f"algo.warm_start={path!r}: {f} cannot be read ({type(e).__name__}); "
                        "give a completed +algo=fedavg run dir of this task") from None
    want = {n: tuple(np.shape(template[n])) for n in model.model_order}
    have = {n: tuple(np.shape(a)) for n, a in got.items()}
    if have != want:
        bad = sorted(set(want) ^ set(have)) or [n for n in want if want[n] != have[n]]
        raise UserError(f"algo.warm_start={path!r}: its weights do not fit this model ({bad[0]}: "
                        f"{have.get(bad[0], 'absent')} there, {want.get(bad[0], 'absent')} here); give a "
                        "+algo=fedavg run of the same task and model keys")
    return {n: got[n].astype(np.asarray(template[n]).dtype) for n in model.model_order}


class Choose(Evaluator):
    """Each user picks the set with the lowest loss on its reconstruction part, and that set is
    measured on the rest (as evaluators.Global measures the one model); a user with nothing
    to choose on (an empty first part) ties at 0 and gets set 0. `picked` counts the choices
    of an evaluation, for its cluster_share_<k> row values."""

    loss, counts = "example", True

    def __init__(self, rt, sets: Sets):
        super().__init__(rt)
        self.sets, self.picked = sets, np.zeros(sets.k)

    def _client(self, packed, c):
        loss = lambda w: self.rt.client.measure(w, c.get("rdata", c["data"]), c["recon"], local=True)["loss_x_sum"]
        k = self.sets.choose(self.sets.losses(packed, c.get("rrows", c["rows"]), loss, self.rt.mode == "host"))
        t = self.rt.client.measure(self.sets.view(packed, c["rows"], k), c["data"], c["measured"], local=True)
        t = {**t, "cluster": {str(j): (k == j).astype(jnp.float32) for j in range(self.sets.k)}}
        return ClientOut(tally=t, keep=t)

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        rdata, recon, mdata, measured = self.rt.eval_schedules(clients, seen, recon_from)
        c = {"data": mdata, "rows": clients.rows, "recon": recon, "measured": measured}
        if seen:
            c.update(rdata=rdata, rrows=recon_from.rows)
        counts = np.stack([recon.count] * self.sets.k + [measured.count], axis=1)
        sums, per = self.rt.exec.run(self._client, state.params, c, counts)
        self.picked += np.array([float(sums.tally["cluster"][str(j)]) for j in range(self.sets.k)])
        return sums.tally, per


class HypCluster(FedAvg):
    spec = SPEC

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.K = int(cfg.algo.clusters)
        self.sets = Sets(self.m, self.K, self.g0)
        self.initial = self._initial_sets(task, cfg.algo.get("warm_start"))
        # Training's executor scatters each sparse update into its set's block (sets.py);
        # its steps count with the run's.
        self.set_exec = Executor(self.rt.mode, {n: n for n in self.m.sparse}, self.exec.max_width,
                                 self.exec.overhead)
        self.set_exec.steps = self.exec.steps
        self.chooser = Choose(self.rt, self.sets)
        self.evaluators = (self.chooser,)

    def _initial_sets(self, task, warm) -> list[dict]:
        paths = warm_paths(warm)
        if paths:
            if len(paths) not in (1, self.K):
                raise UserError(f"algo.warm_start lists {len(paths)} runs for algo.clusters={self.K}; "
                                "give one (every set starts from it) or one per set")
            loaded = [load_warm(p, self.m, self.g0) for p in paths]
            return loaded * self.K if len(loaded) == 1 else loaded
        others = []
        for k in range(1, self.K):
            g, loc = self.m.init(set_seed(task.seed, k))
            others.append({**g, **loc})
        return [dict(self.g0), *others]

    # --- the server ------------------------------------------------------------
    def initialize(self) -> ServerState:
        packed = self.sets.pack(self.initial)
        opt = jax.vmap(self.server_opt.init)(self.sets.stacked(packed))
        return ServerState(packed, opt, jnp.zeros((), jnp.int32), self.agg.init())

    def server_step(self, state: ServerState, sums) -> ServerState:
        return self._server(state, sums._replace(tally={k: sums.tally[k] for k in PER_SET}))

    def _server_fn(self, state: ServerState, sums):
        """Each set steps on its clients' mean (a set nobody chose stays as it is, optimizer
        state too); under DP every set steps on the noised sum / clients_per_round."""
        if self.agg.dp is None:
            mean, agg = self.sets.mean(sums.delta, sums.tally["set_weight"]), state.agg
            moved = sums.tally["set_clients"] > 0
        else:
            total, agg = self.agg.server(state.agg, sums, state.round)
            mean, moved = self.sets.stacked(total), jnp.ones((self.K,), bool)
        params = self.sets.stacked(state.params)
        opt, new = jax.vmap(self.server_opt.next)(state.opt, params, mean)
        keep = lambda a, b: jnp.where(moved.reshape((self.K,) + (1,) * (a.ndim - 1)), a, b)
        opt, new = jax.tree_util.tree_map(keep, (opt, new), (state.opt, params))
        return state._replace(params=self.sets.packed(new), opt=opt, agg=agg, round=state.round + 1)

    def global_weights(self, state: ServerState) -> Weights:
        sets = self.sets.unpack(state.params)
        names = [f"set{k}/{n}" for k in range(self.K) for n in self.m.model_order]
        return Weights([s[n] for s in sets for n in self.m.model_order], [], names)

    # --- a round ---------------------------------------------------------------
    def _client(self, packed, c):
        """Choose a set on all training batches, train it as FedAvg's client, send its update
        as the K-set vector with the client's weight counted for its set."""
        loss = lambda w: self.client.measure(w, c["data"], c["all"], local=True)["loss_x_sum"]
        k = self.sets.choose(self.sets.losses(packed, c["rows"], loss, self.rt.mode == "host"))
        w_i = self.sets.view(packed, c["rows"], k)
        w_new, tally = self.train_client(w_i, c)
        delta, weight = fc.update(w_i, w_new, self.weight(tally["examples"], tally))
        onehot = (jnp.arange(self.K) == k).astype(jnp.float32)
        tally = {**tally, "set_clients": onehot, "set_weight": onehot * weight}
        return ClientOut(delta=self.sets.spread(delta, k), weight=weight, rows=self.sets.rows(c["rows"], k),
                         tally=tally)

    def next(self, state, clients, client_ids=None):
        steps, every = clients.schedule("all", self.epochs, self.steps_max), clients.schedule("all")
        c = {"data": clients.data, "rows": clients.rows, "steps": steps, "all": every,
             "key": self.round_keys(state, len(clients))}
        counts = np.stack([every.count] * self.K + [steps.count], axis=1)
        sums, _ = self.set_exec.run(self.agg.client(self._client), (state.params, state.agg), c, counts,
                                    delta_like=state.params)
        metrics = fc.finalize(self.m, {k: v for k, v in sums.tally.items() if k not in PER_SET}, loss="example",
                              counts=True)
        chose = np.asarray(sums.tally["set_clients"])
        metrics[OWN] = {f"cluster_clients_{k}": int(round(float(chose[k]))) for k in range(self.K)}
        return self.server_step(state, sums), {**metrics, **self.agg_metrics(state, sums)}

    # --- evaluation ------------------------------------------------------------
    def evaluate(self, state, clients, client_ids=None, seen: bool = False, recon_from=None, records=None):
        self.chooser.picked[:] = 0
        out = super().evaluate(state, clients, client_ids, seen, recon_from, records)
        n = max(self.chooser.picked.sum(), 1.0)
        out[""][OWN] = {f"cluster_share_{k}": float(self.chooser.picked[k] / n) for k in range(self.K)}
        return out
