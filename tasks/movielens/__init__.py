"""MovieLens matrix factorization: item embeddings global, one user embedding local.

Data (data.py): the official ml-1m layout (`ratings.dat`, downloaded from GroupLens
when absent), a ratings CSV (`user_id,item_id,rating[,timestamp]`), or ML-100K
`u.data`. The model twice: JAX for engine=fast (fast_model.py, which also defines
the initial weights) and Keras for engine=tff (keras_model.py, imported only there).
"""
from __future__ import annotations

import numpy as np

from fedrecon_bench import schema
from fedrecon_bench.errors import UserError
from fedrecon_bench.schema import Field
from tasks.base import ClientSet, FederatedData, KerasParts, Task
from tasks.movielens.data import (ML1M_MD5, ML1M_URL, Ratings, download, find_ratings_file,  # noqa: F401
                                  md5sum, prepare, prepare_authors, read_ratings, read_ratings_cached,
                                  safe_extract_zip, split_examples, split_users)
from tasks.movielens.fast_model import MovieLensFast


class MovieLens(Task):
    name = "movielens"
    metric_names = ("loss", "rating_accuracy", "rmse")
    headline_metric = "rating_accuracy"

    fields = Task.fields + (
        Field("task.accuracy_threshold", "number", low=0, default=0.5),
        Field("task.preparation", "choice", choices=("bench", "authors"), default="bench"),
        Field("task.normalize_ratings", "bool", default=False), Field("task.global_bias", "bool", default=False),
        Field("task.bias_init", "choice", choices=("zeros", "uniform"), default="zeros"),
        Field("task.split_by", "choice", choices=("user", "example"), default="user",
              note="(user: unseen val/test users; example: every user's ratings split 80/10/10)"))

    def check_config(self) -> None:
        c = self.cfg
        schema.check({"task": c}, self.fields)
        fr = (c.get("train_fraction", 0.8), c.get("val_fraction", 0.1))
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f < 1 for f in fr) \
                or fr[0] + fr[1] > 1:
            raise UserError(f"task.train_fraction={fr[0]!r}, task.val_fraction={fr[1]!r}: each must be in "
                            "(0, 1) and their sum <= 1 (the rest is test)")
        if c.get("spreadout_lambda", 0.0):
            raise UserError(
                f"task.spreadout_lambda={c.spreadout_lambda!r}: the authors' spreadout regularizer never "
                "reaches their training loss, so their runs train without it; it is not built here; "
                "use 0 (task.l2 is an L2 penalty that does apply)")
        if c.get("global_bias", False) and not c.biases:
            raise UserError("task.global_bias=true adds to the biases; set task.biases=true too")

    def load(self) -> FederatedData:
        self.check_config()
        c = self.cfg
        path = find_ratings_file(c, self.data_dir)
        ratings = read_ratings_cached(path)
        if c.get("normalize_ratings", False):  # the authors' option: 1..5 -> -1..1
            ratings = ratings._replace(rating=((ratings.rating - 3.0) / 2.0).astype(np.float32))
        split_by = c.get("split_by", "user")
        fractions = (c.get("train_fraction", 0.8), c.get("val_fraction", 0.1))
        authors = c.get("preparation", "bench") == "authors"
        info = {"ratings_file": path}
        if authors and split_by == "example":
            parts, info["num_items"] = prepare_authors(ratings, self.data_seed, c.max_examples_per_user,
                                                       c.get("max_users"), True, fractions)
            return FederatedData(*parts, info, split_by="example")
        if authors:
            users, examples, info["num_items"] = prepare_authors(
                ratings, self.data_seed, c.max_examples_per_user, c.get("max_users"), False)
        else:
            users, examples, info["num_items"], _ = prepare(
                ratings, self.data_seed, c.max_examples_per_user, c.get("max_users"),
                by_time=split_by == "example")
        if split_by == "example":
            return FederatedData(*split_examples(users, examples, fractions), info, split_by="example")
        tr, va, te = split_users(len(users), self.data_seed, fractions, authors=authors)

        def subset(idx):
            idx = np.sort(idx)
            return ClientSet([users[i] for i in idx], [examples[i] for i in idx])

        return FederatedData(subset(tr), subset(va), subset(te), info)

    def fast_model(self, info: dict) -> MovieLensFast:
        return MovieLensFast(self.cfg, info["num_items"])

    # --- engine=tff (Keras) -----------------------------------------------------
    def client_dataset(self, ex):
        from tasks.movielens import keras_model

        return keras_model.client_dataset(ex, self.cfg.batch_size)

    def keras_parts(self, info: dict) -> KerasParts:
        from tasks.movielens import keras_model

        return keras_model.keras_parts(self.cfg, *self.initial_weights(info))

    def loss_fn(self):
        from tasks.movielens.keras_model import PenalizedMSE

        return lambda: PenalizedMSE(name="mse")

    def metrics_fn(self):
        from tasks.movielens.keras_model import RMSE, RatingAccuracy

        t = float(self.cfg.get("accuracy_threshold", 0.5))
        return lambda: [RatingAccuracy(t), RMSE()]
