"""The config `python -m fedrecon_bench <overrides>` would run, composed in-process: the one
helper tests, benchmarks and analysis share (the CLI's checks and argument order included)."""
from __future__ import annotations


def compose(*overrides: str):
    from hydra import compose as hydra_compose, initialize_config_dir

    from fedrecon_bench.cli_args import CONF_DIR, normalize

    from fedrecon_bench import tuned

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=normalize(list(overrides)))
    tuned.apply(cfg, tuned.override_keys(overrides))  # a preset's per-setting picks, as a run gets them
    return cfg
