"""Evaluation pieces on engine=fast (engines/tff/evaluators.py is the TFF twin). An algorithm
lists the ones it reports, headline first; each measures a chunk of evaluation clients
and returns its summed metric tally.

    Reconstruct  l_i <- init, trained on one part of the user's batches with the global
                 variables frozen, then the model measured on the other part (split/eval;
                 seen users: trained on their training data, measured on held-out data)
    Global       the global model as is, on the same measured part
    FineTune     a copy of the chosen variables trained on the first part, then measured
    Stored       the client's stored local variables (seen users: "stored"), or fresh
                 ones from init (unseen users, who have none: "fresh")

`loss` and `counts` say how client.finalize reports each: "batch" = the mean over
batches (TFF's reconstruction evaluation), "example" with counts (TFF's fed_eval).
`tally` returns the chunk's summed tally and each client's own (stacked), from the same
computation: the per-client records (fedrecon_bench/records.py) cost no second pass.
"""
from __future__ import annotations

import jax
import numpy as np

from fedrecon_bench import client_store
from fedrecon_bench.engines.fast import client as fc
from fedrecon_bench.engines.fast.state import ClientOut

VARIABLES = ("all", "local", "global")  # algo.finetune.variables


class Evaluator:
    loss, counts = "batch", False

    def __init__(self, rt, mode: str = ""):
        self.rt, self.mode = rt, mode

    def label(self, seen: bool) -> str:
        """The mode's name in rows ("" when it is the algorithm's only one)."""
        return self.mode

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        """(the chunk's summed tally, each client's tally stacked along a leading axis)."""
        raise NotImplementedError


def client_rows(model, per_client, ev) -> list[dict]:
    """Each client's record (records.py): its measured examples, its metrics as `ev` reports
    them, and the tallies they come from (tally_<key>, nested keys joined by dots:
    tally_stats.hits, tally_loss_sum, ...; client.finalize turns summed ones into metrics)."""
    per = jax.tree_util.tree_map(np.asarray, jax.device_get(per_client))
    flat = {("tally_" + ".".join(str(getattr(k, "key", k)) for k in path)): leaf
            for path, leaf in jax.tree_util.tree_flatten_with_path(per)[0]}
    rows = []
    for i in range(len(per["examples"])):
        t = jax.tree_util.tree_map(lambda x: x[i], per)
        row = {k: v for k, v in fc.finalize(model, t, ev.loss, ev.counts).items()
               if k not in ("num_examples", "num_batches")}
        row["num_examples"] = int(round(float(t["examples"])))
        row.update({k: float(v[i]) for k, v in flat.items()})
        rows.append(row)
    return rows


class Reconstruct(Evaluator):
    def __init__(self, rt, opt, mode: str = ""):
        super().__init__(rt, mode)
        self.opt = opt

    def reconstruct(self, g, data, sched, key, local: bool, stats: bool = False):
        """(local variables, tally): trained from init on `sched` with `g` frozen; the tally
        is empty unless `stats` (the authors' evaluate_reconstruction). Training that
        reconstructs uses this too."""
        if not self.rt.l0:  # nothing local: nothing to reconstruct (and no metrics, as the authors')
            return {}, None
        return self.rt.client.train(self.rt.l0, g, self.opt, data, sched, key, local, stats=stats)

    def steps(self, recon, after) -> np.ndarray:
        """[clients, 2]: each client's reconstruction steps and the steps after them."""
        return np.stack([recon.count * bool(self.rt.l0), after.count], axis=1)

    def _client(self, g, c):
        l_i, _ = self.reconstruct(g, c.get("rdata", c["data"]), c["recon"], c["key"], local=False)
        t = self.rt.client.measure({**g, **l_i}, c["data"], c["measured"], local=False)
        return ClientOut(tally=t, keep=t)

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        rdata, recon, mdata, measured = self.rt.eval_schedules(clients, seen, recon_from)
        c = {"data": mdata, "recon": recon, "measured": measured, "key": self.rt.eval_keys(len(clients))}
        if rdata is not mdata:
            c["rdata"] = rdata
        sums, per = self.rt.exec.run(self._client, state.params, c, self.steps(recon, measured))
        return sums.tally, per


class Global(Evaluator):
    loss, counts = "example", True

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        _, _, mdata, measured = self.rt.eval_schedules(clients, seen, recon_from)
        return self.rt.measure_each(state.params, mdata, measured)


class FineTune(Evaluator):
    def __init__(self, rt, tuned_names, opt, mode: str = "finetune"):
        super().__init__(rt, mode)
        self.names, self.opt = tuple(tuned_names), opt

    def _tuned(self, w, c, local: bool):
        """A copy of the chosen variables trained on the tuning part, then measured on the
        disjoint measured part (never seen while tuning)."""
        w_i = self.rt.views(w, c["rows"]) if local else w
        tuned = {n: w_i[n] for n in self.names}
        fixed = {n: p for n, p in w_i.items() if n not in self.names}
        tuned, _ = self.rt.client.train(tuned, fixed, self.opt, c.get("rdata", c["data"]), c["recon"],
                                        c["key"], local, stats=False)
        t = self.rt.client.measure({**fixed, **tuned}, c["data"], c["measured"], local)
        return ClientOut(tally=t, keep=t)

    def _unseen(self, w, c):  # tunes and measures within the client's rows (views)
        return self._tuned(w, c, local=True)

    def _seen(self, w, c):  # tunes on training data with other rows: a full copy
        return self._tuned(w, c, local=False)

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        rdata, recon, mdata, measured = self.rt.eval_schedules(clients, seen, recon_from)
        c = {"data": mdata, "rows": clients.rows, "recon": recon, "measured": measured,
             "key": self.rt.eval_keys(len(clients))}
        if rdata is not mdata:
            c["rdata"] = rdata
        fn = self._seen if seen else self._unseen
        sums, per = self.rt.exec.run(fn, state.params, c, np.stack([recon.count, measured.count], axis=1))
        return sums.tally, per


class Stored(Evaluator):
    def __init__(self, rt, store):
        super().__init__(rt, "stored")
        self.store = store

    def label(self, seen: bool) -> str:
        return "stored" if seen else "fresh"

    def tally(self, state, clients, client_ids, seen: bool, recon_from):
        _, _, mdata, measured = self.rt.eval_schedules(clients, seen, recon_from)
        local = client_store.stacked(self.store, self.rt.m.local_names, self.rt.l0, client_ids, seen)
        return self.rt.measure_each(state.params, mdata, measured, local)
