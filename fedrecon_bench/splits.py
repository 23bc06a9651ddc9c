"""Dataset split functions: which batches reconstruct, which train or evaluate.

`disjoint` uses even-indexed batches for reconstruction and odd-indexed ones
after it; `reuse` (the tutorial's `simple`) uses the whole dataset for both.
Epochs repeat a part; `*_steps_max` caps the steps across those epochs.
Evaluation must measure on data the reconstruction never saw, so only
`disjoint` is accepted there.
"""
from __future__ import annotations

from fedrecon_bench.errors import UserError

MODES = ("disjoint", "reuse")


def check(split, key: str, evaluation: bool) -> None:
    if split.mode not in MODES:
        raise UserError(f"{key}.mode={split.mode!r} is unknown; use one of {', '.join(MODES)}")
    if evaluation and split.mode != "disjoint":
        raise UserError(
            f"{key}.mode={split.mode!r}: evaluation must reconstruct and measure on disjoint halves "
            f"of each user's data; use split/eval=disjoint (or {key}.mode=disjoint)")
    for name in ("recon_epochs", "post_recon_epochs"):
        v = split[name]
        if not isinstance(v, int) or v < 1:
            raise UserError(f"{key}.{name}={v!r} must be an integer >= 1")
    for name in ("recon_steps_max", "post_recon_steps_max"):
        v = split[name]
        if v is not None and (not isinstance(v, int) or v < 1):
            raise UserError(f"{key}.{name}={v!r} must be null (no cap) or an integer >= 1")


def build(split, key: str, evaluation: bool = False, split_dataset: bool | None = None):
    """A TFF `ReconstructionDatasetSplitFn` for this config. split_dataset=False uses
    the whole dataset for both parts whatever the mode (seen users reconstruct on all
    of their training data)."""
    import tensorflow_federated as tff

    check(split, key, evaluation)
    return tff.learning.models.ReconstructionModel.build_dataset_split_fn(
        recon_epochs=split.recon_epochs,
        recon_steps_max=split.recon_steps_max,
        post_recon_epochs=split.post_recon_epochs,
        post_recon_steps_max=split.post_recon_steps_max,
        split_dataset=split.mode == "disjoint" if split_dataset is None else split_dataset,
    )
