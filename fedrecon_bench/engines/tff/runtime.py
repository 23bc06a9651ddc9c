"""TFF's local C++ runtime, started and stopped cleanly.

TFF runs computations in a `worker_binary` child process that it starts on the
first call with *our* stdout/stderr, and it only stops it in a `__del__` that
often never runs at exit. The orphan then keeps any pipe attached to our output
open, so `run | tee log`, CI log capture and subprocess-based sweeps never see
EOF. We start the worker ourselves with its output on /dev/null and terminate it
when the process exits.
"""
from __future__ import annotations

import atexit
import contextlib
import os
import sys

_started = False


@contextlib.contextmanager
def _std_to_devnull():
    saved = sys.stdout, sys.stderr
    with open(os.devnull, "w") as devnull:
        sys.stdout = sys.stderr = devnull
        try:
            yield
        finally:
            sys.stdout, sys.stderr = saved


def stop_workers() -> None:
    """Terminates TFF worker processes started by this process."""
    import psutil

    workers = [p for p in psutil.Process().children(recursive=True)
               if "worker_binary" in " ".join(_cmdline(p))]
    for p in workers:
        with contextlib.suppress(psutil.Error):
            p.terminate()
    _, alive = psutil.wait_procs(workers, timeout=5)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()


def _cmdline(p) -> list[str]:
    import psutil

    try:
        return p.cmdline()
    except psutil.Error:
        return []


def start() -> None:
    """Starts TFF's worker with detached output (idempotent)."""
    global _started
    if _started:
        return
    import tensorflow as tf
    import tensorflow_federated as tff

    with _std_to_devnull():
        tff.tensorflow.computation(lambda: tf.constant(0))()  # first call starts the worker
    atexit.register(stop_workers)
    _started = True
