"""The TFF tutorial, ported as written, against this project's pipeline at the same setting.

    uv run python benchmarks/tutorial_vs_bench.py [--rounds 20] [--data-dir DIR] [--max-users 2000] [--json PATH]
    make bench                         # same, with ARGS="..." passed through

Both sides run once each in ONE process, on the same ratings file:

(A) "Federated Reconstruction for Matrix Factorization" (the TFF tutorial),
    ported straight: a pandas DataFrame, ids remapped through
    `astype('category').cat.categories` dicts, then per user
    `ratings_df[ratings_df.UserID == user_id]` ->
    `from_tensor_slices(...).take(300).shuffle(300, seed=42).batch(5).map(...)`
    for the first 2000 users, np.random.seed(42) shuffle and an 80/10/10 user
    split; its UserEmbedding layer and get_matrix_factorization_model,
    RatingAccuracy, MSE; build_fed_recon with build_sgdm(1.0)/(0.5)/(0.1) and
    build_fed_recon_eval; rounds of np.random.choice(train, 50, replace=False);
    one evaluation of the val users at the end.
    Only the file read differs: the tutorial reads ml-1m/ratings.dat
    (`sep="::"`, python engine). When the data dir has no ratings.dat (the
    shared data has only ratings.csv), ratings.csv is read with pandas into the
    same columns UserID, MovieID, Rating, plus a constant Timestamp column (the
    CSV has none) so each row has the tutorial's 4 int64 fields. Everything
    after the read is the tutorial's code.
(B) the project: `+task=movielens +algo=fedrecon` (which is the tutorial's
    setting) with rounds=N, logger=none, eval_every=N (one val evaluation at
    the end, like the tutorial), task.ratings_file pinned to the same file,
    run by fedrecon_bench.loop.run. Its data preparation is also timed alone:
    read_ratings + prepare + split_users.

What is measured (wall clock, time.perf_counter):
  data prep       A: read + remap + per-user tf.data datasets + split.
                  B: read_ratings + prepare + split_users (numpy arrays; the
                  project builds each client's tf.data.Dataset on first use,
                  inside the rounds/evaluation).
  prep + tf.data  B also with task.client_dataset() for every user, which is
                  what A's prep includes (A's number is repeated).
  init            from the end of prep to the start of round 1: building the
                  training and evaluation processes and initialize(). For B,
                  everything in loop.run that is not load/rounds/evaluation.
  round 1         the first round alone (tracing and first execution).
  rounds 2..N     mean seconds per round after the first. For B, the loop's
                  own round_s (client sampling, lazy dataset build, next, log).
  val evaluation  one evaluation of all val users after the last round.
  end-to-end      prep + init + all rounds + val evaluation. For B, the loop's
                  wall_s (its own data load, init, rounds, val evaluation)
                  minus its final test evaluation, which A does not do.
  rating acc.     final val rating_accuracy: a sanity check only; the two sides
                  draw different splits and clients (seed 42 vs seed 0).
Ratios are tutorial/project: > 1 means the project is faster.
Fairness: TF/TFF are imported and warmed up (file read into the page cache,
pandas, tf.data, and one round + evaluation of a tiny FedRecon model) before
either side; then each side runs once. The project runs first by default, so
any leftover warm-process advantage goes to the tutorial (--order
tutorial-first to swap). Reading ratings.csv with pandas' C parser is faster
than the tutorial's python-engine read of ratings.dat, so A's prep time here
is, if anything, lower than the tutorial's own.

Measured: 2-core machine, TF 2.14.1, TFF 0.87, defaults (20 rounds, 2000 users,
1600/200/200 split, shared ratings.csv), project first, machine otherwise idle:
                                          tutorial   project  tut/proj
    data prep (s)                            19.12      0.30     64.63x
    data prep + tf.data, all users (s)       19.12      1.08     17.67x
    init: build + initialize (s)              0.89      1.26      0.71x
    round 1, incl. tracing (s)                1.93      1.87      1.03x
    round 2..20 mean (s/round)                1.76      1.61      1.09x
    val evaluation (s)                        5.24      4.66      1.12x
    end-to-end (s)                           60.68     38.70      1.57x
    final val rating_accuracy               0.3128    0.2928         -
    init parts (s): tutorial build processes 0.82, initialize 0.07; project build processes 1.16, initialize 0.03, count_params 0.05
"""
from __future__ import annotations

import argparse
import collections
import functools
import gc
import io
import json
import os
import pathlib
import platform
import sys
import tempfile
import time
from typing import List, Optional, Tuple

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import tensorflow as tf  # noqa: E402
import tensorflow_federated as tff  # noqa: E402

now = time.perf_counter


# ==========================================================================
# (A) The TFF tutorial, ported as written (file read aside; see docstring)
# ==========================================================================
def load_movielens_data(ratings_path: str) -> pd.DataFrame:
    if ratings_path.endswith(".dat"):  # the tutorial's own read
        ratings_df = pd.read_csv(
            ratings_path, sep="::",
            names=["UserID", "MovieID", "Rating", "Timestamp"], engine="python")
    else:  # the only substitution: the shared ratings.csv into the same columns
        ratings_df = pd.read_csv(ratings_path).rename(columns={
            "user_id": "UserID", "item_id": "MovieID", "rating": "Rating",
            "timestamp": "Timestamp"})
        if "Timestamp" not in ratings_df:
            ratings_df["Timestamp"] = 0
    # From here on, the tutorial's code (movies_df, unused for training, is not loaded).
    movie_mapping = {
        old_movie: new_movie for new_movie, old_movie in enumerate(
            ratings_df.MovieID.astype("category").cat.categories)
    }
    user_mapping = {
        old_user: new_user for new_user, old_user in enumerate(
            ratings_df.UserID.astype("category").cat.categories)
    }
    ratings_df.MovieID = ratings_df.MovieID.map(movie_mapping)
    ratings_df.UserID = ratings_df.UserID.map(user_mapping)
    return ratings_df


def create_tf_datasets(ratings_df: pd.DataFrame,
                       batch_size: int = 1,
                       max_examples_per_user: Optional[int] = None,
                       max_clients: Optional[int] = None) -> List[tf.data.Dataset]:
    """Creates TF Datasets containing the movies and ratings for all users."""
    num_users = len(set(ratings_df.UserID))
    if max_clients is not None:
        num_users = min(num_users, max_clients)

    def rating_batch_map_fn(rating_batch):
        return collections.OrderedDict([
            ("x", tf.cast(rating_batch[:, 1:2], tf.int64)),
            ("y", tf.cast(rating_batch[:, 2:3], tf.float32))
        ])

    tf_datasets = []
    for user_id in range(num_users):
        user_ratings_df = ratings_df[ratings_df.UserID == user_id]
        tf_dataset = tf.data.Dataset.from_tensor_slices(user_ratings_df)
        tf_dataset = tf_dataset.take(max_examples_per_user).shuffle(
            buffer_size=max_examples_per_user, seed=42).batch(batch_size).map(
            rating_batch_map_fn,
            num_parallel_calls=tf.data.experimental.AUTOTUNE)
        tf_datasets.append(tf_dataset)
    return tf_datasets


def split_tf_datasets(
    tf_datasets: List[tf.data.Dataset],
    train_fraction: float = 0.8,
    val_fraction: float = 0.1,
) -> Tuple[List[tf.data.Dataset], List[tf.data.Dataset], List[tf.data.Dataset]]:
    np.random.seed(42)
    np.random.shuffle(tf_datasets)
    train_idx = int(len(tf_datasets) * train_fraction)
    val_idx = int(len(tf_datasets) * (train_fraction + val_fraction))
    return (tf_datasets[:train_idx], tf_datasets[train_idx:val_idx],
            tf_datasets[val_idx:])


class UserEmbedding(tf.keras.layers.Layer):
    """Keras layer representing an embedding for a single user, used below."""

    def __init__(self, num_latent_factors, **kwargs):
        super().__init__(**kwargs)
        self.num_latent_factors = num_latent_factors

    def build(self, input_shape):
        self.embedding = self.add_weight(
            shape=(1, self.num_latent_factors),
            initializer="uniform",
            dtype=tf.float32,
            name="UserEmbeddingKernel")
        super().build(input_shape)

    def call(self, inputs):
        return self.embedding

    def compute_output_shape(self):
        return (1, self.num_latent_factors)


def get_matrix_factorization_model(
        num_items: int,
        num_latent_factors: int) -> tff.learning.models.ReconstructionModel:
    """Defines a Keras matrix factorization model."""
    global_layers = []
    local_layers = []
    item_input = tf.keras.layers.Input(shape=[1], name="Item")
    item_embedding_layer = tf.keras.layers.Embedding(
        num_items, num_latent_factors, name="ItemEmbedding")
    global_layers.append(item_embedding_layer)
    flat_item_vec = tf.keras.layers.Flatten(name="FlattenItems")(
        item_embedding_layer(item_input))
    user_embedding_layer = UserEmbedding(num_latent_factors, name="UserEmbedding")
    local_layers.append(user_embedding_layer)
    flat_user_vec = user_embedding_layer(item_input)
    pred = tf.keras.layers.Dot(
        1, normalize=False, name="Dot")([flat_user_vec, flat_item_vec])
    input_spec = collections.OrderedDict(
        x=tf.TensorSpec(shape=[None, 1], dtype=tf.int64),
        y=tf.TensorSpec(shape=[None, 1], dtype=tf.float32))
    model = tf.keras.Model(inputs=item_input, outputs=pred)
    return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
        keras_model=model,
        global_layers=global_layers,
        local_layers=local_layers,
        input_spec=input_spec)


class RatingAccuracy(tf.keras.metrics.Mean):
    """Keras metric computing accuracy of reconstructed ratings."""

    def __init__(self, name: str = "rating_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        absolute_diffs = tf.abs(y_true - y_pred)
        example_accuracies = tf.less_equal(absolute_diffs, 0.5)
        super().update_state(example_accuracies, sample_weight=sample_weight)


def run_tutorial(ratings_path: str, rounds: int, max_users: Optional[int]) -> dict:
    np.random.seed(42)  # the tutorial's first cell
    t0 = now()
    ratings_df = load_movielens_data(ratings_path)
    tf_datasets = create_tf_datasets(
        ratings_df=ratings_df, batch_size=5, max_examples_per_user=300,
        max_clients=max_users)
    tf_train_datasets, tf_val_datasets, tf_test_datasets = split_tf_datasets(
        tf_datasets, train_fraction=0.8, val_fraction=0.1)
    t_prep = now()

    model_fn = functools.partial(
        get_matrix_factorization_model,
        num_items=len(set(ratings_df.MovieID)),  # the tutorial hard-codes 3706
        num_latent_factors=50)
    loss_fn = lambda: tf.keras.losses.MeanSquaredError()  # noqa: E731
    metrics_fn = lambda: [RatingAccuracy()]  # noqa: E731
    training_process = tff.learning.algorithms.build_fed_recon(
        model_fn=model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(1.0),
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(0.5),
        reconstruction_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
    evaluation_process = tff.learning.algorithms.build_fed_recon_eval(
        model_fn,
        loss_fn=loss_fn,
        metrics_fn=metrics_fn,
        reconstruction_optimizer_fn=tff.learning.optimizers.build_sgdm(0.1))
    t_build = now()
    state = training_process.initialize()
    eval_state = evaluation_process.initialize()
    t_init = now()

    round_s = []
    for i in range(rounds):
        t = now()
        federated_train_data = np.random.choice(
            tf_train_datasets, size=50, replace=False).tolist()
        result = training_process.next(state, federated_train_data)
        state = result.state
        train_metrics = result.metrics["client_work"]["train"]
        round_s.append(now() - t)
        print(f"[tutorial] round {i + 1}: rating_accuracy="
              f"{float(train_metrics['rating_accuracy']):.4f} ({round_s[-1]:.2f}s)",
              file=sys.stderr, flush=True)

    t = now()
    model = training_process.get_model_weights(state)
    eval_state = evaluation_process.set_model_weights(eval_state, model)
    _, eval_metrics = evaluation_process.next(eval_state, tf_val_datasets)
    t_end = now()
    acc = float(eval_metrics["client_work"]["eval"]["current_round_metrics"]["rating_accuracy"])
    return {"prep_s": t_prep - t0, "prep_tfdata_s": t_prep - t0, "init_s": t_init - t_prep,
            "init_parts_s": {"build processes": t_build - t_prep, "initialize": t_init - t_build},
            "round_s": round_s, "eval_s": t_end - t, "e2e_s": t_end - t0, "val_rating_accuracy": acc,
            "num_clients": [len(tf_train_datasets), len(tf_val_datasets), len(tf_test_datasets)]}


# ==========================================================================
# (B) The project
# ==========================================================================
def compose(*overrides: str):
    """The config `python -m fedrecon_bench <overrides>` would run (as tests/conftest.py)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from fedrecon_bench.cli_args import CONF_DIR, normalize

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return hydra_compose(config_name="config", overrides=normalize(list(overrides)))


def _timed(cls, name: str, into: dict):
    """Wraps cls.name so each call adds its duration to into[name] (instrumentation only)."""
    orig = getattr(cls, name)

    @functools.wraps(orig)
    def wrapper(*a, **kw):
        t = now()
        try:
            return orig(*a, **kw)
        finally:
            into[name] = into.get(name, 0.0) + now() - t

    setattr(cls, name, wrapper)
    return orig


def run_project(ratings_path: str, data_dir: str, rounds: int, max_users: Optional[int]) -> dict:
    from fedrecon_bench import loop
    from fedrecon_bench.algorithms.fedrecon.tff import FedRecon
    from tasks.movielens import MovieLens, prepare, read_ratings, split_users

    q = lambda s: "'" + str(s).replace("\\", "\\\\").replace("'", "\\'") + "'"  # noqa: E731
    cfg = compose("+task=movielens", "+algo=fedrecon", f"rounds={rounds}", "logger=none",
                  f"eval_every={rounds}", f"data_dir={q(data_dir)}",
                  f"task.ratings_file={q(ratings_path)}",
                  f"task.max_users={max_users if max_users else 'null'}")
    c = cfg.task

    # Data preparation alone, then with every client's tf.data.Dataset built.
    t0 = now()
    r = read_ratings(ratings_path)
    users, examples, _, _ = prepare(r, cfg.seed, c.max_examples_per_user, c.get("max_users"))
    split_users(len(users), cfg.seed)
    prep_s = now() - t0
    task = MovieLens(c, cfg.data_dir, cfg.seed)
    t = now()
    datasets = [task.client_dataset(ex) for ex in examples]
    tfdata_s = now() - t
    del r, users, examples, datasets
    gc.collect()

    spans: dict = {}
    wrapped = [(MovieLens, "load"), (FedRecon, "__init__"), (FedRecon, "initialize"),
               (loop, "count_params")]
    origs = [_timed(obj, name, spans) for obj, name in wrapped]
    try:
        with tempfile.TemporaryDirectory(prefix="tutorial_vs_bench-") as run_dir:
            summary = loop.run(cfg, run_dir)
            rows = [json.loads(l) for l in pathlib.Path(run_dir, "metrics.jsonl").read_text().splitlines()]
    finally:
        for (obj, name), orig in zip(wrapped, origs):
            setattr(obj, name, orig)
    if summary["status"] != "completed":
        raise SystemExit(f"project run {summary['status']}: {summary.get('error')}")
    round_s = [x["round_s"] for x in rows if x["split"] == "train"]
    val = [x for x in rows if x["split"] == "val"][-1]
    test_eval_s = sum(x["eval_s"] for x in rows if x["split"] == "test")
    e2e = summary["wall_s"] - test_eval_s
    return {"prep_s": prep_s, "prep_tfdata_s": prep_s + tfdata_s,
            "init_s": e2e - spans["load"] - sum(round_s) - val["eval_s"],
            "init_parts_s": {"build processes": spans["__init__"], "initialize": spans["initialize"],
                             "count_params": spans["count_params"]},
            "load_in_run_s": spans["load"], "round_s": round_s, "eval_s": val["eval_s"],
            "e2e_s": e2e, "val_rating_accuracy": val["rating_accuracy"],
            "num_clients": [summary["num_clients"][s] for s in ("train", "val", "test")]}


# ==========================================================================
# Driver
# ==========================================================================
def warm_up(ratings_path: str) -> None:
    """One-time process costs (imports, first tracing and execution in Keras, tf.data and
    TFF) that whichever side ran first would otherwise pay alone."""
    with open(ratings_path, "rb") as f:
        head = f.read()  # page cache
    pd.read_csv(io.BytesIO(head[:4096].rsplit(b"\n", 1)[0]))
    ds = tf.data.Dataset.from_tensor_slices(np.zeros((10, 4), np.int64)).batch(5).map(
        lambda b: collections.OrderedDict(x=tf.cast(b[:, 1:2], tf.int64)))
    list(ds)

    def tiny_model():  # not either side's model: only the first-build costs of Keras and TFF
        inp = tf.keras.layers.Input(shape=[1], dtype=tf.int64)
        emb, head = tf.keras.layers.Embedding(3, 2), tf.keras.layers.Dense(1)
        model = tf.keras.Model(inp, head(tf.keras.layers.Flatten()(emb(inp))))
        spec = collections.OrderedDict(x=tf.TensorSpec([None, 1], tf.int64),
                                       y=tf.TensorSpec([None, 1], tf.float32))
        return tff.learning.models.ReconstructionModel.from_keras_model_and_layers(
            keras_model=model, global_layers=[emb], local_layers=[head], input_spec=spec)

    sgd = tff.learning.optimizers.build_sgdm
    proc = tff.learning.algorithms.build_fed_recon(
        tiny_model, loss_fn=tf.keras.losses.MeanSquaredError, server_optimizer_fn=sgd(1.0),
        client_optimizer_fn=sgd(0.1), reconstruction_optimizer_fn=sgd(0.1))
    ev = tff.learning.algorithms.build_fed_recon_eval(
        tiny_model, loss_fn=tf.keras.losses.MeanSquaredError, reconstruction_optimizer_fn=sgd(0.1))
    client = tf.data.Dataset.from_tensor_slices(collections.OrderedDict(
        x=np.zeros((4, 1), np.int64), y=np.ones((4, 1), np.float32))).batch(2)
    state = proc.next(proc.initialize(), [client]).state
    ev.next(ev.set_model_weights(ev.initialize(), proc.get_model_weights(state)), [client])


def find_ratings(data_dir: str) -> str:
    for name in ("ratings.dat", "ratings.csv"):  # the project's own preference
        p = os.path.join(data_dir, "ml-1m", name)
        if os.path.isfile(p):
            return p
    raise SystemExit(f"no ml-1m/ratings.dat or ml-1m/ratings.csv under {data_dir} "
                     "(set FEDRECON_BENCH_DATA or --data-dir)")


def table(a: dict, b: dict) -> str:
    mean = lambda xs: float(np.mean(xs)) if xs else float("nan")  # noqa: E731
    rows = [("data prep (s)", a["prep_s"], b["prep_s"]),
            ("data prep + tf.data, all users (s)", a["prep_tfdata_s"], b["prep_tfdata_s"]),
            ("init: build + initialize (s)", a["init_s"], b["init_s"]),
            ("round 1, incl. tracing (s)", a["round_s"][0], b["round_s"][0]),
            (f"round 2..{len(a['round_s'])} mean (s/round)", mean(a["round_s"][1:]),
             mean(b["round_s"][1:])),
            ("val evaluation (s)", a["eval_s"], b["eval_s"]),
            ("end-to-end (s)", a["e2e_s"], b["e2e_s"])]
    out = [f"{'':36s} {'tutorial':>9s} {'project':>9s} {'tut/proj':>9s}"]
    for name, x, y in rows:
        out.append(f"{name:36s} {x:9.2f} {y:9.2f} {x / y:9.2f}x")
    out.append(f"{'final val rating_accuracy':36s} {a['val_rating_accuracy']:9.4f} "
               f"{b['val_rating_accuracy']:9.4f} {'-':>9s}")
    return "\n".join(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--data-dir", default=None,
                   help="data root holding ml-1m/ (default: $FEDRECON_BENCH_DATA, else ../shared/data)")
    p.add_argument("--max-users", type=int, default=2000, help="first N users; 0 = all")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--order", choices=("project-first", "tutorial-first"), default="project-first")
    args = p.parse_args(argv)
    if args.rounds < 2:
        p.error("--rounds must be >= 2 (round 1 is reported apart from the mean)")
    data_dir = args.data_dir or os.environ.get("FEDRECON_BENCH_DATA") or str(ROOT.parent / "shared" / "data")
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
    ratings_path = find_ratings(data_dir)
    max_users = args.max_users or None

    warm_up(ratings_path)
    results = {}
    order = ["project", "tutorial"] if args.order == "project-first" else ["tutorial", "project"]
    for side in order:
        print(f"--- {side} ---", file=sys.stderr, flush=True)
        if side == "tutorial":
            results[side] = run_tutorial(ratings_path, args.rounds, max_users)
        else:
            results[side] = run_project(ratings_path, data_dir, args.rounds, max_users)
        gc.collect()

    a, b = results["tutorial"], results["project"]
    print(f"\nratings: {ratings_path}; users: {max_users or 'all'} "
          f"(train/val/test tutorial {a['num_clients']}, project {b['num_clients']}); "
          f"rounds: {args.rounds}; order: {args.order}; cores: {os.cpu_count()}")
    print(table(a, b))
    fmt = lambda d: ", ".join(f"{k} {v:.2f}" for k, v in d.items())  # noqa: E731
    print(f"init parts (s): tutorial {fmt(a['init_parts_s'])}; project {fmt(b['init_parts_s'])}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rounds": args.rounds, "max_users": max_users, "ratings_file": ratings_path,
                       "order": args.order, "cpu_count": os.cpu_count(), "python": platform.python_version(),
                       "tensorflow": tf.__version__, "tff": tff.__version__, **results}, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
