"""Per-client evaluation records (`eval_per_client`): one Parquet file per evaluation,
`<run_dir>/per_client/<split>_round<r>.parquet`, with one row per (client, evaluation mode):

    round, split, eval_mode ("" when the algorithm reports one mode), headline (bool),
    client_id, num_examples (the examples measured), each metric of the task, and
    tally_<name>: the engine's sums the metrics were computed from (engine=fast: the
    model's additive stats and loss sums; engine=tff: each Keras metric's variables)

Rows arrive chunk by chunk (an evaluation streams its clients) and each chunk is one
row group, so memory holds one chunk's records, plus a float per client and metric for
the statistics that go next to the pooled metrics in metrics.jsonl and summary.json:

    <metric>_client_{mean,std,p10,p25,p50,p75,p90,min}

over the clients with at least one measured example (unweighted: each client counts
once; percentiles interpolate linearly, numpy's default). The pooled metric stays the
headline: these are statistics of the per-client values, not a second pooled value.
The file is written under a temporary name and renamed when the evaluation ends.
"""
from __future__ import annotations

import math
import os

import numpy as np

DIRNAME = "per_client"
STATS = ("mean", "std", "p10", "p25", "p50", "p75", "p90", "min")


def path(run_dir: str, split: str, round_: int) -> str:
    return os.path.join(run_dir, DIRNAME, f"{split}_round{round_:06d}.parquet")


def stats(values) -> dict:
    """The per-client statistics of one metric's values (NaN-free), by STATS name."""
    x = np.asarray(values, np.float64)
    if x.size == 0:
        return {s: math.nan for s in STATS}
    p = np.percentile(x, [10, 25, 50, 75, 90])
    return {"mean": float(x.mean()), "std": float(x.std()), "p10": float(p[0]), "p25": float(p[1]),
            "p50": float(p[2]), "p75": float(p[3]), "p90": float(p[4]), "min": float(x.min())}


def stat_keys(metric: str) -> list[str]:
    return [f"{metric}_client_{s}" for s in STATS]


def column(values: list, kind):
    """An Arrow array of `values` built from its buffers: pa.array and pa.table import pandas
    to check their input's type (about 40 MB resident, more than the records themselves)."""
    import pyarrow as pa

    n = len(values)
    if kind == pa.string():
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(n + 1, np.int32)
        np.cumsum([len(e) for e in encoded], out=offsets[1:])
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    if kind == pa.bool_():
        bits = np.packbits(np.asarray(values, bool), bitorder="little")
        return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(bits)])
    dtype = {pa.int32(): np.int32, pa.int64(): np.int64, pa.float64(): np.float64}[kind]
    return pa.Array.from_buffers(kind, n, [None, pa.py_buffer(np.asarray(values, dtype))])


class Records:
    """The records of one evaluation; `add` per chunk and mode, `close` at the end."""

    def __init__(self, run_dir: str, split: str, round_: int, metrics, headline: str):
        self.path, self.split, self.round = path(run_dir, split, round_), split, int(round_)
        self.metrics, self.headline = tuple(m for m in metrics if m != "num_tokens"), headline
        self.tmp = self.path + ".tmp"
        self._writer, self._schema = None, None
        self.values: dict[str, dict[str, list]] = {}  # mode -> metric -> per-client values
        self.counts: dict[str, int] = {}

    def add(self, mode: str, client_ids, rows: list[dict]) -> None:
        """rows[i]: client_ids[i]'s num_examples, metrics and tallies (tally_<name>)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        vals = self.values.setdefault(mode, {m: [] for m in self.metrics})
        table = {"round": [self.round] * len(rows), "split": [self.split] * len(rows),
                 "eval_mode": [mode] * len(rows), "headline": [mode == self.headline] * len(rows),
                 "client_id": [str(c) for c in client_ids]}
        keys = [k for k in rows[0] if k != "num_examples"] if rows else []
        table["num_examples"] = [int(r["num_examples"]) for r in rows]
        for k in keys:
            table[k] = [float(r.get(k, math.nan)) for r in rows]
        for r in rows:
            if r["num_examples"] > 0:
                for m in self.metrics:
                    if m in r and math.isfinite(r[m]):
                        vals[m].append(float(r[m]))
        self.counts[mode] = self.counts.get(mode, 0) + len(rows)
        if not rows:
            return
        if self._writer is None:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            self._schema = pa.schema([("round", pa.int32()), ("split", pa.string()), ("eval_mode", pa.string()),
                                      ("headline", pa.bool_()), ("client_id", pa.string()),
                                      ("num_examples", pa.int64()), *((k, pa.float64()) for k in keys)])
            self._writer = pq.ParquetWriter(self.tmp, self._schema)
        self._writer.write_batch(pa.RecordBatch.from_arrays(
            [column(table[f.name], f.type) for f in self._schema], schema=self._schema))

    def stats(self, mode: str) -> dict:
        """`<metric>_client_<stat>` of one mode, and how many clients had measured examples."""
        vals = self.values.get(mode, {})
        out = {}
        for m in self.metrics:
            out.update({f"{m}_client_{s}": v for s, v in stats(vals.get(m, [])).items()})
        out["clients_measured"] = len(vals.get(self.metrics[0], [])) if self.metrics else 0
        return out

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            os.replace(self.tmp, self.path)
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if os.path.exists(self.tmp):
            os.remove(self.tmp)
