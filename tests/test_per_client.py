"""Per-client evaluation records (fedrecon_bench/records.py) and the paired comparisons of
analysis/per_client.py: statistics and tests by hand, records that add up to the pooled
metric, their files in a run dir, and the same files after a kill and resume."""
import json
import math

import numpy as np
import pytest

from conftest import compose, crash_then_resume
from fedrecon_bench import records


class Collector:
    """records.Records' interface in memory: {mode: {client id: row}}."""

    def __init__(self):
        self.rows = {}

    def add(self, mode, client_ids, rows):
        self.rows.setdefault(mode, {}).update({str(c): r for c, r in zip(client_ids, rows)})


def _nest(flat: dict) -> dict:
    """tally_a.b columns back into {a: {b: ...}}."""
    out = {}
    for k, v in flat.items():
        node, *path = k[len("tally_"):].split(".")
        if path:
            out.setdefault(node, {})[path[0]] = v
        else:
            out[node] = v
    return out


def pooled_from_records(algo, rows: dict, mode: str, seen: bool) -> dict:
    """The pooled metrics recomputed from the per-client tallies of one mode: engine=fast's
    summed tallies finalized by the model, engine=tff's summed Keras metric variables
    (an example-weighted loss keeps its weights in its Mean's total and count)."""
    summed = {}
    for row in rows[mode].values():
        for k, v in row.items():
            if k.startswith("tally_"):
                summed[k] = summed.get(k, 0.0) + v
    if algo.engine == "fast":
        from fedrecon_bench.engines.fast import client as fc

        ev = next(e for e in algo.evaluators_for(seen) if e.label(seen) == mode)
        return fc.finalize(algo.m, _nest(summed), ev.loss, ev.counts)
    import tensorflow as tf

    out = {}
    for m in [*algo.task.metrics_fn()(), tf.keras.metrics.Mean(name="loss")]:
        for v in m.variables:
            x = summed[f"tally_{m.name}.{v.name.split(':')[0].split('/')[-1]}"]
            v.assign(np.reshape(x, v.shape).astype(v.dtype.as_numpy_dtype))
        out[m.name] = float(m.result())
    return out


# --------------------------------------------------------------------------
# By hand
# --------------------------------------------------------------------------
def test_statistics_by_hand():
    s = records.stats([7, 1, 3, 10, 5, 2, 9, 4, 8, 6])  # 1..10, linear interpolation
    assert s == pytest.approx({"mean": 5.5, "std": math.sqrt(8.25), "p10": 1.9, "p25": 3.25, "p50": 5.5,
                               "p75": 7.75, "p90": 9.1, "min": 1.0})
    assert all(math.isnan(v) for v in records.stats([]).values())


def test_helped_hurt_unchanged_follow_the_metric_direction():
    from analysis import per_client as pc

    ref, new = np.array([0.5, 0.5, 0.5, 0.2]), np.array([0.6, 0.5, 0.4, 0.2])
    assert pc.fractions(ref, new, "rating_accuracy") == {"helped": 0.25, "hurt": 0.25, "unchanged": 0.5}
    assert pc.fractions(ref, new, "rmse") == {"helped": 0.25, "hurt": 0.25, "unchanged": 0.5}  # mirrored
    assert pc.fractions(np.array([1.0, 1.0]), np.array([0.9, 1.2]), "rmse")["helped"] == 0.5  # lower is better
    assert pc.fractions(ref, new, "rating_accuracy", tol=0.15) == {"helped": 0.0, "hurt": 0.0, "unchanged": 1.0}


def test_paired_bootstrap_interval_covers_a_known_difference():
    """200 synthetic comparisons of 60 users whose true mean difference is 0.1: the 95%
    percentile interval covers it in about 95% of them (a percentile bootstrap of the mean
    undercovers slightly at this size)."""
    from analysis import per_client as pc

    rng = np.random.default_rng(5)
    covered = sum(lo <= 0.1 <= hi for lo, hi in (pc.bootstrap_ci(rng.normal(0.1, 1.0, 60), reps=1000)
                                                 for _ in range(200)))
    assert 0.88 <= covered / 200 <= 0.99, covered
    lo, hi = pc.bootstrap_ci(np.full(30, 0.25))
    assert lo == hi == pytest.approx(0.25)  # no spread, no interval


def test_wilcoxon_signed_rank_by_hand():
    """Five positive differences: W- = 0, and the exact two-sided p is 2 / 2^5; ties at zero
    are dropped; all zero gives no test."""
    from analysis import per_client as pc

    assert pc.wilcoxon([1.0, 2.0, 3.0, 4.0, 5.0]) == (0.0, pytest.approx(2 / 32))
    assert pc.wilcoxon([0.0, 1.0, 2.0, 3.0, 4.0, 5.0]) == (0.0, pytest.approx(2 / 32))
    w, p = pc.wilcoxon([-1.0, 2.0, 3.0])  # ranks 1, 2, 3: W- = 1, W+ = 5; p = 4 / 8
    assert (w, p) == (1.0, pytest.approx(0.5))
    assert math.isnan(pc.wilcoxon([0.0, 0.0])[0]) and pc.wilcoxon([0.0, 0.0])[1] == 1.0


# --------------------------------------------------------------------------
# Runs
# --------------------------------------------------------------------------
def _cfg(tiny_ratings, *extra):
    return compose("+task=movielens", f"task.ratings_file={tiny_ratings}", "task.embedding_dim=4",
                   "rounds=4", "clients_per_round=5", "eval_every=2", "logger=none", "engine=fast", *extra)


def _files(run_dir):
    import pandas as pd

    return {p.name: pd.read_parquet(p) for p in sorted((run_dir / "per_client").glob("*.parquet"))}


@pytest.mark.parametrize("algo,extra", [("fedrecon", ()), ("fedavg", ("algo.eval=finetune",))])
def test_a_run_writes_records_that_add_up_to_its_rows(tiny_ratings, tmp_path, algo, extra):
    from fedrecon_bench import loop

    s = loop.run(_cfg(tiny_ratings, f"+algo={algo}", *extra), str(tmp_path))
    files = _files(tmp_path)
    assert sorted(files) == ["test_round000004.parquet", "val_round000002.parquet", "val_round000004.parquet"]
    rows = [json.loads(l) for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    for row in (r for r in rows if r["split"] != "train"):
        df = files[f"{row['split']}_round{row['round']:06d}.parquet"]
        mode = row.get("eval_mode", "")
        mine = df[df["eval_mode"] == mode]
        assert len(mine) == row["clients"] and mine["client_id"].is_unique
        assert bool(mine["headline"].all()) == (mode == df[df["headline"]]["eval_mode"].iloc[0])
        measured = mine[mine["num_examples"] > 0]
        for m in ("rating_accuracy", "rmse", "loss"):
            want = records.stats(measured[m])
            assert {k: row[f"{m}_client_{k}"] for k in records.STATS} == pytest.approx(want, rel=1e-12), m
        assert row["clients_measured"] == len(measured)
    assert "rating_accuracy_client_p10" in s["final"]["test"]


def test_kill_and_resume_gives_the_same_record_files(tiny_ratings, tmp_path, monkeypatch):
    from fedrecon_bench import algorithms

    args = ("+algo=stateful_fedavg", "rounds=6", "checkpoint_every=2", "eval_every=2")
    crash_then_resume(monkeypatch, algorithms.get("stateful_fedavg", "fast"), lambda: _cfg(tiny_ratings, *args),
                      tmp_path / "full", tmp_path / "crashed", crash_call=5)
    full, crashed = _files(tmp_path / "full"), _files(tmp_path / "crashed")
    assert sorted(full) == sorted(crashed) and len(full) == 4
    for name in full:
        assert full[name].equals(crashed[name]), name


def test_records_are_off_when_asked(tiny_ratings, tmp_path):
    from fedrecon_bench import loop

    s = loop.run(_cfg(tiny_ratings, "+algo=fedrecon", "eval_per_client=false"), str(tmp_path))
    assert not (tmp_path / "per_client").exists() and "rating_accuracy_client_p10" not in s["final"]["test"]


def test_reference_fractions_ignore_row_keys_the_reference_lacks(tmp_path):
    """HypCluster's rows carry algo.clusters, FedAvg's do not: each K still pairs with the
    FedAvg run of its seed (3 users: K=2 helps 2 of them, K=4 hurts 1)."""
    import pandas as pd

    from analysis import runs as R
    from analysis import table

    def run(name, algo, acc, clusters=None, mode="finetune"):
        d = tmp_path / name
        (d / "per_client").mkdir(parents=True)
        pd.DataFrame({"round": 5, "split": "test", "eval_mode": mode, "headline": True, "client_id": ["a", "b", "c"],
                      "num_examples": 4, "rating_accuracy": acc}).to_parquet(d / "per_client" / "test_round000005.parquet")
        final = {"test": {"rating_accuracy": sum(acc) / 3}, "val": {"rating_accuracy": 0.5}}
        algo_cfg = {"name": algo, **({"clusters": clusters} if clusters else {})}
        return R.Run(str(d), {"algo": algo, "status": "completed", "final": final, "seed": 0, "task": "movielens"},
                     {"algo": algo_cfg, "task": {"split_by": "user"}, "seed": 0})

    runs = [run("fa", "fedavg", [0.5, 0.5, 0.5]), run("h2", "hypcluster", [0.6, 0.7, 0.5], 2, "recon"),
            run("h4", "hypcluster", [0.5, 0.4, 0.5], 4, "recon")]
    t = table.Table(runs, ["rating_accuracy"], "test", rows=["algo", "algo.clusters", "task.split_by"],
                    reference="fedavg:finetune")
    got = {(r["algo"], r["algo.clusters"]): r["value"] for r in t.per_run if r["metric"].startswith("helped")}
    assert got == {("fedavg", None): 0.0, ("hypcluster", 2): 2 / 3, ("hypcluster", 4): 0.0}
    hurt = {r["algo.clusters"]: r["value"] for r in t.per_run if r["metric"].startswith("hurt")}
    assert hurt[4] == pytest.approx(1 / 3)


def test_records_are_written_without_importing_pandas(tmp_path):
    """pa.array / pa.table import pandas to inspect their input (about 40 MB resident, more than
    5,000 clients' records); the records build Arrow arrays from buffers instead."""
    import subprocess
    import sys

    code = f"""
import sys, pyarrow.parquet as pq
from fedrecon_bench import records
r = records.Records({str(tmp_path)!r}, "val", 3, ["loss", "accuracy"], "")
r.add("", ["u1", "ü2"], [{{"num_examples": 2, "loss": 0.5, "accuracy": 1.0, "tally_loss_sum": 1.0}},
                         {{"num_examples": 0, "loss": float("nan"), "accuracy": 0.0, "tally_loss_sum": 0.0}}])
r.close()
assert "pandas" not in sys.modules, "pandas imported"
print(pq.read_table(r.path).to_pylist())
"""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr[-2000:]
    rows = eval(p.stdout.replace("nan", "float('nan')"))
    assert [(r["client_id"], r["num_examples"], r["headline"], r["round"], r["split"]) for r in rows] == [
        ("u1", 2, True, 3, "val"), ("ü2", 0, True, 3, "val")]
    assert rows[0]["loss"] == 0.5 and math.isnan(rows[1]["loss"]) and rows[1]["tally_loss_sum"] == 0.0
