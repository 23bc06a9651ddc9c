"""benchmarks/algorithm_cost.py in its --smoke form on the real MovieLens data (48 training
users, a few rounds): a row per algorithm with a finite ratio to FedAvg, and Ditto's disk store
holding exactly the training users the sampler visited. A check that the script works; its
numbers are not a measurement."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import types

import pytest
from conftest import ROOT

SCRIPT = ROOT / "benchmarks" / "algorithm_cost.py"


def table(out: str) -> list[list[str]]:
    """The printed Markdown table's body rows, as cells."""
    rows = [ln for ln in out.splitlines() if ln.startswith("| ") and not ln.startswith("| part")]
    return [[c.strip() for c in ln.strip("|").split("|")] for ln in rows]


@pytest.mark.slow
def test_algorithm_cost_smoke(shared_data, tmp_path):
    env = {**os.environ, "FEDRECON_BENCH_DATA": str(shared_data), "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--smoke", "--tmp", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "load average at start" in proc.stderr and "load average at end" in proc.stderr
    rows = table(proc.stdout)
    by = {(r[0], r[1]): r for r in rows}
    names = ["fedavg", "fedprox", "fedrep", "ditto (memory store)", "hypcluster2", "hypcluster4"]
    assert [k for k in by if k[0] == "round"] == [("round", n) for n in names]
    assert by[("round", "fedavg")][4] == "1.00" and by[("store", "fedavg")][4] == "1.00"
    for r in rows:
        assert math.isfinite(float(r[3])) and float(r[3]) > 0, r
        assert math.isfinite(float(r[4])) and float(r[4]) > 0, r
    assert [k[1] for k in by if k[0] == "store"] == ["ditto (disk store)", "ditto (disk store, 2 rounds)", "fedavg"]
    assert [r[2] for r in rows] == ["3 x 10"] * 6 + ["6 x 10", "2 x 10", "6 x 10"]
    # a stateless algorithm keeps no store; Ditto's holds one model per visited training user
    assert by[("round", "fedavg")][7] == "-" and by[("store", "fedavg")][7] == "-"
    share, users = re.fullmatch(r"([\d.]+)% of (\d+)", by[("store", "ditto (disk store)")][8]).groups()
    assert users == "48"
    visited = round(float(share) / 100 * 48)
    assert 0 < visited < 48
    m = re.search(r"store after 6 rounds x 10 clients: (\d+) clients of (\d+) visited training users, "
                  r"([\d,]+) B in files \(summary.json client_store.bytes\), ([\d,]+) B allocated", proc.stdout)
    assert m, proc.stdout
    clients, seen, files, allocated = (int(g.replace(",", "")) for g in m.groups())
    assert clients == seen == visited
    assert by[("store", "ditto (disk store)")][7].startswith(f"{clients} clients, ")
    # every stored model is whole: the file sizes add up to about the models' bytes (npz headers aside)
    assert clients * 741_400 <= files <= clients * 741_400 * 1.01 and allocated >= files
    assert re.search(r"Peak RSS, Ditto \(disk store\) - FedAvg: -?[\d,]+ MB; the sampled clients' personal "
                     r"models \(10 x 741,400 B\): 7 MB", proc.stdout)
    # the same seed samples the same first 2 rounds: the short run's store is the long one's start
    short = re.match(r"(\d+) clients, ", by[("store", "ditto (disk store, 2 rounds)")][7])
    assert short and 10 <= int(short.group(1)) <= 20 and int(short.group(1)) < clients
    assert re.search(rf"after 6 rounds - after 2: -?[\d,]+ MB, while the store grew from {short.group(1)} to "
                     rf"{clients} clients", proc.stdout)
    assert not list(tmp_path.iterdir()), "the runs' temp dir is removed at the end"


def test_algorithm_cost_refuses_a_disk_without_room_for_the_store(monkeypatch, tmp_path, capsys):
    monkeypatch.syspath_prepend(str(SCRIPT.parent))
    import algorithm_cost

    monkeypatch.setattr(algorithm_cost.shutil, "disk_usage", lambda p: types.SimpleNamespace(free=7 * 10**9))
    with pytest.raises(SystemExit) as e:
        algorithm_cost.check_disk(types.SimpleNamespace(tmp=str(tmp_path), users=4_832))
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "7.0 GB free" in err and "7.2 GB" in err and "--tmp DIR" in err
    algorithm_cost.check_disk(types.SimpleNamespace(tmp=str(tmp_path), users=4_000))  # 5.9 GB: room
