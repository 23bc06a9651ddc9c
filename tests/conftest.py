"""Shared test helpers: config composition in-process and the shared real data."""
from __future__ import annotations

import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def shared_data_dir() -> pathlib.Path | None:
    """The real data: $FEDRECON_BENCH_DATA, else ../shared/data beside the repo."""
    for cand in (os.environ.get("FEDRECON_BENCH_DATA"), ROOT.parent / "shared" / "data"):
        if cand and pathlib.Path(cand, "README.md").is_file():
            return pathlib.Path(cand)
    return None


@pytest.fixture
def shared_data() -> pathlib.Path:
    d = shared_data_dir()
    if d is None:
        pytest.skip("shared real data not found (set FEDRECON_BENCH_DATA)")
    return d


def compose(*overrides: str):
    """The config `python -m fedrecon_bench <overrides>` would run, composed in-process."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from fedrecon_bench.cli_args import CONF_DIR, normalize

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=normalize(list(overrides)))


@pytest.fixture(scope="session")
def tiny_ratings(tmp_path_factory):
    """40 users x 25 items, 12-25 ratings each, as a ratings CSV."""
    rng = np.random.default_rng(0)
    path = tmp_path_factory.mktemp("data") / "ratings.csv"
    lines = ["user_id,item_id,rating"]
    for u in range(1, 41):
        for i in rng.choice(25, size=rng.integers(12, 26), replace=False):
            lines.append(f"{u},{i + 1},{rng.integers(1, 6)}")
    path.write_text("\n".join(lines) + "\n")
    return path
