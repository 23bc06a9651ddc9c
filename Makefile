# Two commands: `make run` (locked env + the main command) and `make test`.
# uv is installed with pip when missing; everything else comes from uv.lock.
# `make test-modern`: engine=fast's tests (every test not marked `tff`) in the TF-free
# `modern` environment (today's JAX, NumPy 2; pyproject.toml), in .venv-modern.
PY ?= python3
UV = $$(command -v uv 2>/dev/null || echo "$$HOME/.local/bin/uv")
ARGS ?=
MODERN_PY ?= 3.11
MODERN = UV_PROJECT_ENVIRONMENT=.venv-modern $(UV)
MODERN_GROUPS = --locked --no-default-groups --group modern --python $(MODERN_PY)
# Test processes: two, one per core; tests sharing a module-scoped fixture stay together
# (tests/conftest.py). WORKERS=0 runs in one process.
WORKERS ?= 2

.PHONY: uv env env-modern run test test-modern bench clean paper-movielens dp-study participation-study tasks-study
uv:
	@command -v uv >/dev/null 2>&1 || [ -x "$$HOME/.local/bin/uv" ] || \
	  $(PY) -m pip install --quiet uv || $(PY) -m pip install --quiet --user uv

env: uv
	$(UV) sync --locked --python 3.11

env-modern: uv
	$(MODERN) sync $(MODERN_GROUPS)

run: env
	$(UV) run --locked python -m fedrecon_bench +task=movielens +algo=fedrecon $(ARGS)

test: env
	$(UV) run --locked pytest -q -n $(WORKERS) --dist loadgroup $(ARGS)

test-modern: env-modern
	$(MODERN) run $(MODERN_GROUPS) pytest -q -n $(WORKERS) --dist loadgroup -m "not tff" $(ARGS)

bench: env
	$(UV) run --locked python benchmarks/tutorial_vs_bench.py $(ARGS)

# One command per paper table: resumable (completed jobs are skipped), then the table and plots
# under studies/<name>/. ARGS=--reduced runs each study's documented smaller grid.
paper-movielens: env
	$(UV) run --locked python -m analysis.study paper-movielens $(ARGS)

dp-study: env
	$(UV) run --locked python -m analysis.study dp $(ARGS)

participation-study: env
	$(UV) run --locked python -m analysis.study participation $(ARGS)

tasks-study: env
	$(UV) run --locked python -m analysis.study tasks $(ARGS)

clean:
	rm -rf runs multirun .pytest_cache
