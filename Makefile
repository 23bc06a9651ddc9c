# Two commands: `make run` (locked env + the main command) and `make test`.
# uv is installed with pip when missing; everything else comes from uv.lock.
PY ?= python3
UV = $$(command -v uv 2>/dev/null || echo "$$HOME/.local/bin/uv")
ARGS ?=
# Test processes: two, one per core; tests sharing a module-scoped fixture stay together
# (tests/conftest.py). WORKERS=0 runs in one process.
WORKERS ?= 2

.PHONY: env run test bench clean
env:
	@command -v uv >/dev/null 2>&1 || [ -x "$$HOME/.local/bin/uv" ] || \
	  $(PY) -m pip install --quiet uv || $(PY) -m pip install --quiet --user uv
	$(UV) sync --locked --python 3.11

run: env
	$(UV) run --locked python -m fedrecon_bench +task=movielens +algo=fedrecon $(ARGS)

test: env
	$(UV) run --locked pytest -q -n $(WORKERS) --dist loadgroup $(ARGS)

bench: env
	$(UV) run --locked python benchmarks/tutorial_vs_bench.py $(ARGS)

clean:
	rm -rf runs multirun .pytest_cache
