"""MovieLens matrix factorization: item embeddings global, one user embedding local.

Data (data.py): the official ml-1m layout (`ratings.dat`, downloaded from GroupLens
when absent), a ratings CSV (`user_id,item_id,rating[,timestamp]`), or ML-100K
`u.data`. The model twice: JAX for engine=fast (fast_model.py, which also defines
the initial weights) and Keras for engine=tff (keras_model.py, imported only there).
"""
from __future__ import annotations

import numpy as np

from fedrecon_bench.errors import UserError
from tasks.base import ClientSet, FederatedData, KerasParts, Task
from tasks.movielens.data import (ML1M_MD5, ML1M_URL, Ratings, download, find_ratings_file,  # noqa: F401
                                  md5sum, prepare, read_ratings, safe_extract_zip, split_examples,
                                  split_users)
from tasks.movielens.fast_model import MovieLensFast


class MovieLens(Task):
    name = "movielens"
    metric_names = ("loss", "rating_accuracy", "rmse")
    headline_metric = "rating_accuracy"

    def load(self) -> FederatedData:
        path = find_ratings_file(self.cfg, self.data_dir)
        ratings = read_ratings(path)
        split_by = self.cfg.get("split_by", "user")
        if split_by not in ("user", "example"):
            raise UserError(f"task.split_by={split_by!r} is unknown; use user (unseen val/test "
                            "users) or example (every user's ratings split 80/10/10)")
        users, examples, num_items, _ = prepare(
            ratings, self.seed, self.cfg.max_examples_per_user, self.cfg.get("max_users"),
            by_time=split_by == "example")
        info = {"num_items": num_items, "ratings_file": path}
        if split_by == "example":
            return FederatedData(*split_examples(users, examples), info, split_by="example")
        tr, va, te = split_users(len(users), self.seed)

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

        return lambda: [RatingAccuracy(), RMSE()]
