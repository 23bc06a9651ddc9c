"""Split functions: which batches reconstruct and which train/evaluate."""
import pytest
try:
    import tensorflow as tf
except ImportError:  # the TF-free `modern` environment: the tests using it are marked tff
    tf = None
from omegaconf import OmegaConf

from fedrecon_bench import splits
from fedrecon_bench.errors import UserError


def _split(n_batches, **kw):
    cfg = OmegaConf.create({"mode": "disjoint", "recon_epochs": 1, "recon_steps_max": None,
                            "post_recon_epochs": 1, "post_recon_steps_max": None, **kw})
    from fedrecon_bench.engines.tff import split

    ds = tf.data.Dataset.range(n_batches)  # element i stands for batch i
    recon, post = split.build(cfg, "split.train")(ds)
    return [int(x) for x in recon], [int(x) for x in post]


@pytest.mark.tff
def test_disjoint_uses_even_batches_for_reconstruction_and_odd_after():
    recon, post = _split(7)
    assert recon == [0, 2, 4, 6]
    assert post == [1, 3, 5]
    assert not set(recon) & set(post)


@pytest.mark.tff
def test_reuse_uses_every_batch_for_both():
    recon, post = _split(5, mode="reuse")
    assert recon == post == [0, 1, 2, 3, 4]


@pytest.mark.tff
def test_epochs_repeat_and_steps_cap_across_epochs():
    # The tutorial's exercise: 3 recon epochs <= 50 steps, 1 post-recon epoch <= 50 steps.
    recon, post = _split(10, recon_epochs=3, recon_steps_max=50, post_recon_steps_max=50)
    assert recon == [0, 2, 4, 6, 8] * 3
    assert post == [1, 3, 5, 7, 9]
    recon, post = _split(10, recon_epochs=3, recon_steps_max=7, post_recon_epochs=2,
                         post_recon_steps_max=6)
    assert recon == [0, 2, 4, 6, 8, 0, 2]
    assert post == [1, 3, 5, 7, 9, 1]


def test_eval_split_must_be_disjoint():
    cfg = OmegaConf.create({"mode": "reuse", "recon_epochs": 1, "recon_steps_max": None,
                            "post_recon_epochs": 1, "post_recon_steps_max": None})
    splits.check(cfg, "split.train", evaluation=False)  # fine for training
    with pytest.raises(UserError, match=r"split\.eval\.mode='reuse'.*disjoint"):
        splits.check(cfg, "split.eval", evaluation=True)


@pytest.mark.parametrize("key,value,pattern", [
    ("mode", "halves", "unknown"), ("recon_epochs", 0, ">= 1"),
    ("post_recon_steps_max", -3, "null"), ("recon_steps_max", 2.5, "null")])
def test_bad_split_values_are_refused(key, value, pattern):
    cfg = OmegaConf.create({"mode": "disjoint", "recon_epochs": 1, "recon_steps_max": None,
                            "post_recon_epochs": 1, "post_recon_steps_max": None})
    cfg[key] = value
    with pytest.raises(UserError, match=pattern) as e:
        splits.check(cfg, "split.train", evaluation=False)
    assert f"split.train.{key}" in str(e.value)
