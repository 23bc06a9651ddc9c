"""Shared test helpers: config composition in-process and the shared real data."""
from __future__ import annotations

import importlib.util
import json
import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


# TensorFlow and TFF are in the default environment only; the `modern` one (engine=fast on
# today's JAX, pyproject.toml) lacks them, and there tests marked `tff` are skipped.
HAVE_TFF = all(importlib.util.find_spec(m) is not None for m in ("tensorflow", "tensorflow_federated"))
NO_TFF = "needs TensorFlow and TFF, which this environment lacks (engine=fast-only `modern` environment)"


def pytest_sessionfinish(session, exitstatus):
    """TFF starts a worker process that outlives the tests unless stopped."""
    import sys

    if "tensorflow_federated" in sys.modules:
        from fedrecon_bench.engines.tff import runtime

        runtime.stop_workers()


_SHARED_SCOPES = {"class", "module", "package"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook reads the groups
def pytest_collection_modifyitems(config, items):
    """Under `-n N --dist loadgroup` (make test), tests that share a module- or
    class-scoped fixture (a sweep, a built algorithm) run in one worker, so the
    fixture is built once; all other tests are spread one by one."""
    for item in items:
        defs = getattr(item, "_fixtureinfo", None)
        if defs and any(d[-1].scope in _SHARED_SCOPES for d in defs.name2fixturedefs.values()):
            item.add_marker(pytest.mark.xdist_group(item.module.__name__))
        if not HAVE_TFF and item.get_closest_marker("tff"):  # one hook: a second def would replace this one
            item.add_marker(pytest.mark.skip(reason=NO_TFF))


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


from fedrecon_bench.compose import compose  # noqa: E402,F401  (tests import it from here)


@pytest.fixture(scope="session")
def tiny_ratings(tmp_path_factory):
    """40 users x 25 items, 12-25 ratings each, as a ratings CSV."""
    from fedrecon_bench.algorithms import testing

    return testing.tiny_ratings(tmp_path_factory.mktemp("data") / "ratings.csv")


def crash(monkeypatch, algo_cls, cfg, run_dir, crash_call: int) -> None:
    """Runs cfg in run_dir with `algo_cls.next` raising on its crash_call-th call."""
    import pytest as _pytest

    from fedrecon_bench import loop

    calls, real = {"n": 0}, algo_cls.next

    def crashing(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == crash_call:
            raise RuntimeError("simulated crash")
        return real(self, *a, **kw)

    monkeypatch.setattr(algo_cls, "next", crashing)
    with _pytest.raises(RuntimeError):
        loop.run(cfg, str(run_dir))
    monkeypatch.setattr(algo_cls, "next", real)


def crash_then_resume(monkeypatch, algo_cls, cfg_fn, full_dir, crashed_dir, crash_call: int) -> dict:
    """Runs a config to the end in full_dir; then again in crashed_dir with
    `algo_cls.next` raising on its crash_call-th call, and resumes it there. Returns the
    resumed run's summary; compare the two dirs with `untimed_rows`."""
    from fedrecon_bench import loop

    loop.run(cfg_fn(), str(full_dir))
    crash(monkeypatch, algo_cls, cfg_fn(), crashed_dir, crash_call)
    return loop.run(cfg_fn(), str(crashed_dir))


def untimed_rows(run_dir) -> list[dict]:
    """metrics.jsonl without the fields that measure time or memory."""
    import json

    lines = pathlib.Path(run_dir, "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(l).items() if k not in ("round_s", "eval_s", "rss_mb")} for l in lines]
