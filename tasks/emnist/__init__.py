"""EMNIST character recognition, one client per writer: the standard TFF EMNIST
CNN, with a personal user embedding (local) concatenated to its image features.

Data and populations (`task.source`, `task.split_by`): data.py's docstring.

The model twice: JAX for engine=fast (fast_model.py, which also defines the initial
weights) and Keras for engine=tff (keras_model.py, imported only there).
"""
from __future__ import annotations

import os
import time

from fedrecon_bench.errors import UserError
from tasks.base import FederatedData, KerasParts, Task
from tasks.emnist import tff_source
from tasks.emnist.data import (FIELDS, NUM_CLASSES, build_populations, cache_dirs, check_task_config,
                               group_by_writer, leaf_files, load_leaf_folder, log, unify_pixels)
from tasks.emnist.fast_model import EmnistFast, _dropout  # noqa: F401


class EMNIST(Task):
    name = "emnist"
    fields = Task.fields + FIELDS
    metric_names = ("loss", "accuracy")
    headline_metric = "accuracy"

    @property
    def num_classes(self) -> int:
        return 10 if self.cfg.only_digits else NUM_CLASSES

    def load(self) -> FederatedData:
        c = self.cfg
        check_task_config(c)
        data_dir = os.path.expanduser(str(self.data_dir))
        t0 = time.perf_counter()
        info = {"num_classes": self.num_classes, "source": c.source}
        if c.source == "leaf":
            root = os.path.join(data_dir, "femnist-leaf")
            train_dir, test_dir = os.path.join(root, "train"), os.path.join(root, "test")
            if not leaf_files(train_dir):
                raise UserError(
                    f"{train_dir}: no LEAF FEMNIST *.json files; set FEDRECON_BENCH_DATA (or "
                    f"data_dir=) to a folder with femnist-leaf/train/*.json and femnist-leaf/test/*.json, "
                    f"or use task.source=tff")
            dirs = cache_dirs(root, c.get("cache_dir"))
            (tr, hit_tr), (te, hit_te) = (load_leaf_folder(train_dir, dirs),
                                          load_leaf_folder(test_dir, dirs))
            train_w, test_w = group_by_writer(*tr), group_by_writer(*te)
            info["cache"] = {"train": hit_tr, "test": hit_te}
            unify_pixels(train_w, test_w)
            t1 = time.perf_counter()
            train, val, test = build_populations(train_w, test_w, c.split_by, self.data_seed,
                                                 c.max_examples_per_user, bool(c.only_digits))
        else:  # read lazily: ids and sizes from the database, a writer's images when needed
            t1 = time.perf_counter()
            train, val, test = tff_source.populations(bool(c.only_digits), os.path.join(data_dir, "emnist-tff"),
                                                      c.split_by, self.data_seed, c.max_examples_per_user)
        info.update(read_s=round(t1 - t0, 3), load_s=round(time.perf_counter() - t0, 3))
        log.info("emnist: %d/%d/%d train/val/test writers, %d train images; read %.2f s "
                 "(cache %s), prepared in %.2f s", len(train), len(val), len(test),
                 train.num_examples, info["read_s"], info.get("cache", "n/a"), info["load_s"])
        for name, pop in (("val", val), ("test", test)):
            # FedRecon-style evaluation reconstructs on even batches and measures on odd
            # ones; a one-batch client is measured on nothing (metrics then read 0).
            short = int(sum(pop.sizes <= c.batch_size))
            if short:
                log.warning("emnist: %d of %d %s writers have <= task.batch_size=%d examples (one "
                            "batch), so an even/odd evaluation split measures nothing on them; "
                            "lower task.batch_size (split_by=example halves ~16 LEAF test images)",
                            short, len(pop), name, c.batch_size)
        return FederatedData(train, val, test, info, split_by=c.split_by)

    def fast_model(self, info: dict) -> EmnistFast:
        return EmnistFast(self.cfg, self.num_classes)

    # --- engine=tff (Keras) -----------------------------------------------------
    def client_dataset(self, ex):
        from tasks.emnist import keras_model

        return keras_model.client_dataset(ex, self.cfg.batch_size)

    def keras_parts(self, info: dict) -> KerasParts:
        from tasks.emnist import keras_model

        return keras_model.keras_parts(self.cfg, self.num_classes, self.seed, *self.initial_weights(info))

    def loss_fn(self):
        import tensorflow as tf

        return lambda: tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def metrics_fn(self):
        import tensorflow as tf

        return lambda: [tf.keras.metrics.SparseCategoricalAccuracy(name="accuracy")]
