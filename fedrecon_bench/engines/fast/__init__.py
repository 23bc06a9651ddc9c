"""engine=fast: the suite's algorithms in JAX, every client of a round in one compiled call,
each client costing its own steps (execute.py). Equal to engine=tff (the engine-equality tests)."""
from __future__ import annotations


class FastEngine:
    name = "fast"
    requires = ("jax",)
    install_hint = "install the project's dependencies (`uv sync --locked`)"

    def start(self) -> None:
        pass  # JAX starts on first use

    def populations(self, task, data, algo, cache_mb: int = 1024) -> tuple:
        """train, val, test as padded arrays packed per selection, each with its own cache of
        cache_mb (data_cache_mb); lockstep (vmap) groups keep bucketed schedule widths."""
        from fedrecon_bench.engines.fast.data import Population

        size = int(cache_mb) << 20
        lockstep = algo.rt.mode == "vmap"
        return tuple(Population(algo.rt.m, getattr(data, s), size, lockstep) for s in ("train", "val", "test"))

    def device(self, algo) -> dict:
        """JAX's devices and how the clients run."""
        import jax

        devices = jax.devices()
        return {"platform": devices[0].platform, "kind": devices[0].device_kind,
                "devices": [str(d) for d in devices], "framework": f"jax {jax.__version__}",
                "clients": algo.rt.mode}

    def stats(self, algo) -> dict:
        """summary.json's `fast`: the client mode, and the steps scheduled and computed
        (they differ by a vmap group's lockstep padding)."""
        steps = algo.rt.exec.steps
        return {"clients": algo.rt.mode, "steps_scheduled": steps["scheduled"], "steps_computed": steps["computed"]}


ENGINE = FastEngine()
