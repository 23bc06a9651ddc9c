"""engine=tff: TensorFlow Federated, the reference. Algorithms build TFF's own processes where
TFF has one, and TF client steps orchestrated in Python where
it has none (clients that keep state, training on the server)."""
from __future__ import annotations


class TffEngine:
    name = "tff"
    requires = ("tensorflow", "tensorflow_federated")
    install_hint = ("use engine=fast, or the default environment, which has TensorFlow Federated "
                    "(`uv sync --locked`, Python 3.11; docs/environments.md)")

    def start(self) -> None:
        from fedrecon_bench.engines.tff import runtime

        runtime.start()

    def populations(self, task, data, algo, cache_mb: int = 1024) -> tuple:
        """train, val, test as tf.data datasets built per used client, each with its own cache."""
        from fedrecon_bench.engines.tff.data import Datasets

        size = int(cache_mb) << 20
        return tuple(Datasets(task, getattr(data, s), size) for s in ("train", "val", "test"))

    def device(self, algo) -> dict:
        return {"platform": "cpu", "framework": "tensorflow"}

    def stats(self, algo) -> None:
        return None


ENGINE = TffEngine()
