"""FedAvg (McMahan et al. 2017), engine=fast: every model variable is global.

    for each round t:
        S <- sample clients_per_round training clients          (the loop)
        for each client i in S, at once (vmap):
            w_i <- w_t; one epoch of w_i <- w_i - eta_c * grad L(w_i; b) over D_i
            send w_t - w_i, weighted by |D_i| (0 if not finite)
        w_{t+1} <- ServerOpt(w_t, weighted mean of the updates)
    evaluation: the global model as is on the measuring half (odd batches of
    split/eval; all held-out data for seen users); with algo.eval=finetune also
    each user's fine-tuned copy (fast/finetune below).

Equal to TFF's build_weighted_fed_avg / build_fed_eval (tests/test_fast_engine.py).
"""
from __future__ import annotations

import jax

from fedrecon_bench.algorithms.finetune import VARIABLES
from fedrecon_bench.errors import UserError
from fedrecon_bench.fast import client as fc
from fedrecon_bench.fast import optim
from fedrecon_bench.fast.engine import FastAlgorithm


class FedAvg(FastAlgorithm):
    name = "fedavg"
    all_global = True

    def __init__(self, task, info: dict, cfg, run_dir: str = "."):
        super().__init__(task, info, cfg, run_dir)
        self.g0 = {**self.g0, **self.l0}  # the task's local layers are simply global here
        self.names = (*self.m.global_names, *self.m.local_names)
        mode = cfg.algo.get("eval", "global")
        if mode not in ("global", "finetune"):
            raise UserError(f"algo.eval={mode!r} is unknown; use global or finetune")
        self.finetune = None
        if mode == "finetune":
            ft = cfg.algo.finetune
            if ft.variables not in VARIABLES:
                raise UserError(f"algo.finetune.variables={ft.variables!r} is unknown; use one of "
                                f"{', '.join(VARIABLES)}")
            self.finetune = {"all": self.names, "local": self.m.local_names,
                             "global": self.m.global_names}[ft.variables]
            self.ft_opt = optim.build(ft.optimizer, "algo.finetune.optimizer")
            self.eval_modes = ("finetune", "global")
        self._round = jax.jit(self._round_fn)
        self._tuned = jax.jit(self._tuned_fn, static_argnames="local")

    def _client(self, w, data, rows, steps, key):
        w_i = self.views(w, rows)
        w_new, tally = self.client.train(w_i, {}, self.client_opt, data, *steps, key, local=True)
        return (*fc.update(w_i, w_new, tally["examples"]), tally)

    def _round_fn(self, state, data, rows, steps, keys):
        w = state["global"]
        deltas, weights, tally = self.map_clients(self._client, (None, 0, 0, 0, 0),
                                                  w, data, rows, steps, keys)
        return self.server_step(state, w, deltas, weights, rows), fc.combine(tally)

    def next(self, state, clients, client_ids=None):
        state, tally = self._round(state, clients.data, clients.rows, clients.schedule("all"),
                                   self.round_keys(state, len(clients)))
        return state, fc.finalize(self.m, tally, loss="example", counts=True)

    # --- evaluation ----------------------------------------------------------
    def _tuned_fn(self, w, rdata, rows, recon, mdata, measured, keys, live, local: bool):
        """Fine-tuning: a copy of the chosen variables trained on the tuning part,
        then measured on the disjoint measured part (never seen while tuning)."""
        def one(rdata, rows, recon, mdata, measured, key):
            w_i = self.views(w, rows) if local else w
            tuned = {n: w_i[n] for n in self.finetune}
            fixed = {n: p for n, p in w_i.items() if n not in self.finetune}
            tuned, _ = self.client.train(tuned, fixed, self.ft_opt, rdata, *recon, key, local, stats=False)
            return self.client.measure({**fixed, **tuned}, mdata, *measured, local)

        tally = self.map_clients(one, (0,) * 6, rdata, rows, recon, mdata, measured, keys)
        return fc.summed(tally, live)

    def evaluate(self, state, clients, client_ids=None, seen: bool = False, recon_from=None) -> dict:
        w = state["global"]
        rdata, recon, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        plain = fc.finalize(self.m, self.measure(w, mdata, measured), loss="example", counts=True)
        if self.finetune is None:
            return plain
        # Unseen users tune and measure within one client's rows (views); a seen user
        # tunes on training data with other rows, so tunes a full copy of the tables.
        rows = clients.rows
        keys = jax.random.split(self.key, len(clients))
        tally = self.chunked(lambda *a: self._tuned(w, *a, local=not seen), len(clients),
                             rdata, rows, recon, mdata, measured, keys)
        return {"finetune": fc.finalize(self.m, tally, loss="batch"), "global": plain}

    def global_weights(self, state):
        return self.weights_in_order(state["global"], self.model_order)

