"""The two supported environments (docs/environments.md): where TensorFlow Federated is
missing (the `modern` group), engine=tff is refused in one line before anything loads, and
a refusal that names a fix for every environment comes first."""
import importlib.util
import subprocess
import sys

import pytest

from conftest import HAVE_TFF, ROOT, compose
from fedrecon_bench import algorithms, engines
from fedrecon_bench.errors import UserError


@pytest.fixture
def no_tff(monkeypatch):
    """This environment as the `modern` one sees it: tensorflow and TFF not found."""
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name.split(".")[0] in ("tensorflow", "tensorflow_federated")
                        else real(name, *a))


def test_engine_tff_without_tff_is_refused_in_one_line(no_tff, tiny_ratings):
    cfg = compose("+task=movielens", "+algo=fedrecon", "engine=tff", f"task.ratings_file={tiny_ratings}")
    with pytest.raises(UserError) as e:
        engines.check(cfg, algorithms.spec("fedrecon"), "tff")
    msg = str(e.value)
    assert msg.startswith("engine=tff needs tensorflow, tensorflow_federated, which this environment does not have")
    assert "use engine=fast" in msg and "uv sync --locked" in msg and "\n" not in msg
    engines.check(compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}"),
                  algorithms.spec("fedrecon"), "fast")  # engine=fast needs only JAX


def test_an_algorithms_own_refusal_comes_before_the_missing_modules(no_tff, tiny_ratings):
    cfg = compose("+task=movielens", "+algo=ditto", "engine=tff", f"task.ratings_file={tiny_ratings}")
    with pytest.raises(UserError, match=r"^\+algo=ditto does not run on engine=tff"):
        engines.check(cfg, algorithms.spec("ditto"), "tff")


@pytest.mark.skipif(HAVE_TFF, reason="the CLI's refusal where TFF is really missing (the `modern` environment)")
def test_cli_refuses_engine_tff_with_exit_2(tiny_ratings, tmp_path):
    p = subprocess.run([sys.executable, "-m", "fedrecon_bench", "+task=movielens", "+algo=fedrecon", "engine=tff",
                        f"task.ratings_file={tiny_ratings}", "logger=none", f"hydra.run.dir={tmp_path}"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    lines = p.stderr.strip().splitlines()
    assert p.returncode == 2 and lines[-1].startswith("error: engine=tff needs tensorflow"), p.stderr
