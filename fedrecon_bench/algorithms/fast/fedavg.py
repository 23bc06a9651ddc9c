"""FedAvg (McMahan et al. 2017), engine=fast: every model variable is global.

    for each round t:
        S <- sample clients_per_round training clients          (the loop)
        for each client i in S (fast/execute.py: vmap groups or one after another):
            w_i <- w_t; algo.client_epochs of w_i <- w_i - eta_c * grad L(w_i; b) over D_i,
                   at most algo.client_steps_max steps (the authors' recipe: 1 epoch, <= 50 steps)
            send w_t - w_i, weighted by algo.client_weighting (0 if not finite)
        w_{t+1} <- ServerOpt(w_t, weighted mean of the updates; under DP: fast/dp.py)
    evaluation: the global model as is on the measuring half (odd batches of
    split/eval; all held-out data for seen users); with algo.eval=finetune also
    each user's fine-tuned copy (fast/finetune below).

Equal to TFF's build_weighted_fed_avg / build_fed_eval (tests/test_fast_engine.py).
"""
from __future__ import annotations

import jax
import numpy as np

from fedrecon_bench.algorithms import FINETUNE_VARIABLES as VARIABLES, client_schedule
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
        self.epochs, self.steps_max = client_schedule(cfg.algo)
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

    def _client(self, w, c):
        w_i = self.views(w, c["rows"])
        w_new, tally = self.client.train(w_i, {}, self.client_opt, c["data"], c["steps"], c["key"], local=True)
        delta, weight = fc.update(w_i, w_new, self.weight(tally["examples"], tally))
        return {"delta": delta, "weight": weight, "rows": c["rows"], "sum": tally}

    def next(self, state, clients, client_ids=None):
        steps = clients.schedule("all", self.epochs, self.steps_max)
        c = {"data": clients.data, "rows": clients.rows, "steps": steps,
             "key": self.round_keys(state, len(clients))}
        sums, _ = self.run_clients(self._client, state, c, steps.count)
        metrics = fc.finalize(self.m, sums["sum"], loss="example", counts=True)
        return self.server_step(state, state["global"], sums), {**metrics, **self.dp_metrics(state, sums["sum"])}

    # --- evaluation ----------------------------------------------------------
    def _tuned(self, w, c, local: bool):
        """Fine-tuning: a copy of the chosen variables trained on the tuning part,
        then measured on the disjoint measured part (never seen while tuning)."""
        w_i = self.views(w, c["rows"]) if local else w
        tuned = {n: w_i[n] for n in self.finetune}
        fixed = {n: p for n, p in w_i.items() if n not in self.finetune}
        tuned, _ = self.client.train(tuned, fixed, self.ft_opt, c.get("rdata", c["data"]), c["recon"],
                                     c["key"], local, stats=False)
        return {"sum": self.client.measure({**fixed, **tuned}, c["data"], c["measured"], local)}

    def _tuned_unseen(self, w, c):  # tunes and measures within the client's rows (views)
        return self._tuned(w, c, local=True)

    def _tuned_seen(self, w, c):  # tunes on training data with other rows: a full copy
        return self._tuned(w, c, local=False)

    final = {"": ("example", True), "global": ("example", True), "finetune": ("batch", False)}

    def eval_tallies(self, state, clients, client_ids, seen: bool, recon_from) -> dict:
        w = state["global"]
        rdata, recon, mdata, measured = self.eval_schedules(clients, seen, recon_from)
        plain = self.measure(w, mdata, measured)
        if self.finetune is None:
            return {"": plain}
        c = {"data": mdata, "rows": clients.rows, "recon": recon, "measured": measured,
             "key": np.asarray(jax.random.split(self.key, len(clients)))}
        if rdata is not mdata:
            c["rdata"] = rdata
        fn = self._tuned_seen if seen else self._tuned_unseen
        tally = self.exec.run(fn, w, c, np.stack([recon.count, measured.count], axis=1))[0]["sum"]
        return {"finetune": tally, "global": plain}

    def global_weights(self, state):
        return self.weights_in_order(state["global"], self.model_order)
