"""Unseen-user quality vs the number of reconstruction steps, from a finished run.

    python -m analysis.recon_curve <run dir> [--steps 0,1,2,5,10,20,50] [--split test]
        [--recon-epochs N] [--out DIR] [data_dir=...]

Rebuilds the task's model from the run's `.hydra/config.yaml`, loads the server's final
global variables from `global_weights.npz`, and evaluates the run's test (or val)
users with TFF's `build_fed_recon_eval` once per k: each user's local variables start
at their initializer and take k reconstruction steps (batches) with the run's
reconstruction optimizer on the user's reconstruction half (even batches, cycled
for as many epochs as k needs, or at most --recon-epochs), then the metrics are
measured on the other half (odd batches, as the run's split.eval measures). k=0 is
no reconstruction at all. One more point, `run`, is the run's own split.eval, which
reproduces the run's summary.json value (printed side by side as a check).
Writes recon_curve.csv, .png and .pdf to <out> (default: the run dir).
"""
from __future__ import annotations

import argparse
import csv
import math
import os
import sys

import matplotlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ chatter
matplotlib.use("Agg")  # files only

import numpy as np  # noqa: E402

from analysis import runs as R  # noqa: E402
from fedrecon_bench.errors import UserError  # noqa: E402

DEFAULT_STEPS = "0,1,2,5,10,20,50"


def load_global_weights(path: str) -> list[np.ndarray]:
    """Arrays in the server's order (keys `<index>/<variable name>`, see the run contract)."""
    if not os.path.isfile(path):
        raise UserError(f"{path}: not found; recon_curve needs a completed run that saved its "
                        "final global weights")
    with np.load(path, allow_pickle=False) as z:
        keys = sorted(z.files, key=lambda k: int(k.split("/", 1)[0]) if k.split("/", 1)[0].isdigit() else k)
        return [z[k] for k in keys]


def split_fn(k: int | None, recon_epochs: int | None, post_epochs: int = 1,
             post_steps_max: int | None = None):
    """Even batches reconstruct (k steps; None: no cap), odd batches measure, like TFF's
    build_dataset_split_fn(split_dataset=True) but allowing k=0 and unlimited epochs."""
    import tensorflow as tf

    if k is None and not recon_epochs:
        raise ValueError("split_fn: no step cap needs an epoch cap")

    def fn(ds):
        recon = ds.enumerate().filter(lambda i, _: tf.equal(i % 2, 0)).map(lambda _, b: b)
        post = ds.enumerate().filter(lambda i, _: tf.equal(i % 2, 1)).map(lambda _, b: b)
        # repeat() of an empty dataset ends at once, so a user without batches is safe
        recon = recon.repeat(recon_epochs) if recon_epochs else recon.repeat()
        recon = recon.take(k) if k is not None else recon
        post = post.repeat(post_epochs)
        if post_steps_max is not None:
            post = post.take(post_steps_max)
        return recon, post

    return fn


class Evaluator:
    """The run's task, model and test users, evaluated with given global weights."""

    def __init__(self, run_dir: str, data_dir: str | None = None, split: str = "test"):
        from omegaconf import OmegaConf

        run = R.load_run(run_dir)
        if run.status != "completed":
            raise UserError(f"{run_dir}: run status is {run.status}; recon_curve needs a "
                            "completed run")
        if not run.summary.get("local_params"):
            raise UserError(f"{run_dir}: algo {run.summary.get('algo')} has no local variables "
                            f"(local_params={run.summary.get('local_params')}); nothing to "
                            "reconstruct (use a FedRecon run)")
        cfg_path = os.path.join(run_dir, ".hydra", "config.yaml")
        if not os.path.isfile(cfg_path):
            raise UserError(f"{cfg_path}: not found; recon_curve rebuilds the model from it")
        cfg = OmegaConf.load(cfg_path)
        if data_dir:
            cfg.data_dir = data_dir
        if OmegaConf.select(cfg, "algo.reconstruction_optimizer") is None:
            raise UserError(f"{cfg_path}: no algo.reconstruction_optimizer; recon_curve "
                            "reconstructs with the run's reconstruction optimizer")
        if split not in ("val", "test"):
            raise UserError(f"--split {split!r}: use val or test (users unseen in training)")
        self.run, self.cfg, self.split = run, cfg, split
        self.weights = load_global_weights(os.path.join(run_dir, "global_weights.npz"))

        import tasks
        from fedrecon_bench.engines.tff import optim, runtime

        self.task = tasks.build(cfg)
        data = self.task.load()
        self.info = data.info
        self.clients = getattr(data, split)
        runtime.start()
        self.datasets = [self.task.client_dataset(self.clients.read(i)) for i in range(len(self.clients))]
        self.recon_opt = optim.build(cfg.algo.reconstruction_optimizer,
                                          "algo.reconstruction_optimizer")

    def model_fn(self):
        from fedrecon_bench.engines.tff.evaluators import recon_model_fn

        return recon_model_fn(self.task, self.info)()

    def evaluate(self, dataset_split_fn) -> dict:
        import tensorflow as tf
        import tensorflow_federated as tff

        proc = tff.learning.algorithms.build_fed_recon_eval(
            self.model_fn, loss_fn=self.task.loss_fn(), metrics_fn=self.task.metrics_fn(),
            reconstruction_optimizer_fn=self.recon_opt, dataset_split_fn=dataset_split_fn)
        state = proc.initialize()
        current = proc.get_model_weights(state)
        flat = tf.nest.flatten(current.trainable)
        shapes = [tuple(np.shape(a)) for a in flat]
        if shapes != [tuple(w.shape) for w in self.weights]:
            raise UserError(f"{self.run.path}/global_weights.npz: shapes "
                            f"{[tuple(w.shape) for w in self.weights]} do not match the model "
                            f"rebuilt from .hydra/config.yaml ({shapes}); was the data changed?")
        weights = tff.learning.models.ModelWeights(
            trainable=tf.nest.pack_sequence_as(current.trainable, self.weights),
            non_trainable=current.non_trainable)
        state = proc.set_model_weights(state, weights)
        _, metrics = proc.next(state, self.datasets)
        m = metrics["client_work"]["eval"]["current_round_metrics"]
        return {k: float(v) for k, v in m.items()}


def recon_curve(run_dir: str, steps: list[int], recon_epochs: int | None = None,
                data_dir: str | None = None, split: str = "test", with_run_point: bool = True):
    """Rows {"steps": k or "run", "recon_epochs", metrics...}, and the Evaluator."""
    ev = Evaluator(run_dir, data_dir, split)
    se = ev.cfg.split.eval
    rows = []
    for k in steps:
        m = ev.evaluate(split_fn(k, recon_epochs, se.post_recon_epochs, se.post_recon_steps_max))
        rows.append({"steps": k, "recon_epochs": recon_epochs or "as needed", **m})
        print(f"k={k}: " + ", ".join(f"{n}={m[n]:.4f}" for n in ev.task.metric_names if n in m),
              flush=True)
    if with_run_point:
        m = ev.evaluate(split_fn(se.recon_steps_max, se.recon_epochs, se.post_recon_epochs,
                                 se.post_recon_steps_max))
        rows.append({"steps": "run", "recon_epochs": se.recon_epochs,
                     "recon_steps_max": se.recon_steps_max, **m})
    return rows, ev


def write(rows, ev, out_dir: str, metric: str | None = None) -> list[str]:
    import matplotlib.pyplot as plt
    import seaborn as sns

    os.makedirs(out_dir, exist_ok=True)
    names = [n for n in ev.task.metric_names if n in rows[0]]
    metric = metric or getattr(ev.task, "headline_metric", names[0])
    if metric not in names:
        raise UserError(f"--metric {metric!r}: available {', '.join(names)}")
    csv_path = os.path.join(out_dir, "recon_curve.csv")
    fields = ["steps", "recon_epochs", *names]
    with open(csv_path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    curve = [r for r in rows if r["steps"] != "run"]
    sns.set_theme(style="whitegrid", context="notebook")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=150, layout="constrained")
    ax.plot([r["steps"] for r in curve], [r[metric] for r in curve], marker="o",
            label="k reconstruction steps")
    run_pt = next((r for r in rows if r["steps"] == "run"), None)
    if run_pt is not None:
        se = ev.cfg.split.eval
        ax.axhline(run_pt[metric], color="C3", ls="--",
                   label=f"the run's split.eval: {se.recon_epochs} epoch(s), "
                         + (f"<= {se.recon_steps_max} steps" if se.recon_steps_max else "no step cap"))
    ax.set_xscale("symlog", linthresh=1)  # k=0 on the same axis as 1, 10, 100
    ax.set_xticks([r["steps"] for r in curve], [str(r["steps"]) for r in curve])
    ax.set_xlim(-0.3, max(r["steps"] for r in curve) * 1.15 + 0.3)
    s = ev.run.summary
    ax.set(xlabel="reconstruction steps k (batches)",
           ylabel=f"{ev.split} {metric} ({'lower' if R.lower_is_better(metric) else 'higher'} is better)",
           title=f"{s.get('task')}/{s.get('algo')} seed {s.get('seed')}: {len(ev.clients)} "
                 f"unseen {ev.split} users\n{metric} after k local reconstruction steps")
    ax.legend(fontsize=9)
    paths = [csv_path]
    for ext in ("png", "pdf"):
        paths.append(os.path.join(out_dir, f"recon_curve.{ext}"))
        fig.savefig(paths[-1])
    plt.close(fig)
    return paths


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.recon_curve",
                                description=__doc__.split("\n")[0])
    p.add_argument("run_dir")
    p.add_argument("--steps", default=DEFAULT_STEPS, help=f"k values (default {DEFAULT_STEPS})")
    p.add_argument("--recon-epochs", type=int, help="at most this many passes over the "
                                                    "reconstruction half (default: as k needs)")
    p.add_argument("--split", default="test", help="test (default) or val users")
    p.add_argument("--metric", help="metric to draw (default: the task's headline metric)")
    p.add_argument("--out", help="output dir (default: the run dir)")
    args, overrides = p.parse_known_args(argv)
    try:
        data_dir = None
        for o in overrides:
            key, sep, val = o.partition("=")
            if key != "data_dir" or not sep:
                raise UserError(f"unknown argument {o!r}; only data_dir=<path> is accepted "
                                "(the rest comes from the run's .hydra/config.yaml)")
            data_dir = val
        try:
            steps = [int(s) for s in args.steps.split(",")]
        except ValueError:
            raise UserError(f"--steps {args.steps!r}: give integers >= 0 like {DEFAULT_STEPS}") from None
        if any(k < 0 for k in steps):
            raise UserError(f"--steps {args.steps!r}: steps must be >= 0")
        if args.recon_epochs is not None and args.recon_epochs < 1:
            raise UserError(f"--recon-epochs {args.recon_epochs}: must be >= 1")
        if not os.path.isfile(os.path.join(args.run_dir, "summary.json")):
            raise UserError(f"{args.run_dir}: no summary.json; pass one run dir (the path "
                            "printed as run_dir:)")
        rows, ev = recon_curve(args.run_dir, steps, args.recon_epochs, data_dir, args.split)
        paths = write(rows, ev, args.out or args.run_dir, args.metric)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    metric = args.metric or ev.task.headline_metric
    run_pt = rows[-1]
    summ = R.select(ev.run, args.split, metric, "final", None)
    print(f"check: the run's own split.eval gives {args.split} {metric} {run_pt[metric]:.6f}; "
          f"summary.json has {summ if summ is None else f'{summ:.6f}'}"
          + ("" if summ is None or math.isclose(run_pt[metric], summ, abs_tol=1e-5)
             else " (differs: was the data or code changed since the run?)"))
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
