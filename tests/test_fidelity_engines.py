"""The paper-fidelity options (issue 14) give the same rounds and evaluations on both
engines (tests/test_fast_engine.py's comparison, rtol 1e-5), and the engine=fast-only
ones are refused on engine=tff with one line naming the key and engine=fast."""
import numpy as np
import pytest

from conftest import compose
from fedrecon_bench import validate
from fedrecon_bench.errors import UserError
from test_fast_engine import _build, _compare, nwp_args  # noqa: F401 (fixture)

SKIP3 = ("split.train.mode=skip", "split.train.proportion=3", "split.eval.mode=skip", "split.eval.proportion=3")
AGG = ("split.train.mode=aggregated", "split.eval.mode=aggregated", "split.train.recon_epochs=2",
       "split.eval.recon_epochs=2")


@pytest.mark.parametrize("overrides", [
    SKIP3,                                                          # skip, p=3
    AGG + ("split.train.post_recon_steps_max=2", "split.eval.post_recon_steps_max=1"),  # aggregated, caps
    ("split.eval.recon_epochs_constant=false",),                    # the round-0 evaluation: no reconstruction
    ("algo.client_weighting=uniform",),
    ("task.biases=true", "task.global_bias=true", "task.bias_init=uniform",
     "task.normalize_ratings=true", "task.accuracy_threshold=0.25"),  # the authors' biases and ratings
    ("+algo.client_optimizer.nesterov=true", "algo.client_optimizer.name=sgdm",
     "algo.server_optimizer.name=yogi", "algo.server_optimizer.learning_rate=0.05",
     "+algo.server_optimizer.beta_2=0.99", "+algo.server_optimizer.initial_accumulator_value=0.0",
     "+algo.server_optimizer.initial_step=1",
     "algo.reconstruction_optimizer.name=adagrad",
     "+algo.reconstruction_optimizer.initial_accumulator_value=0.5"),  # the authors' optimizer flags
    ("task.train_fraction=0.6", "task.val_fraction=0.2", "task.preparation=authors"),
])
@pytest.mark.tff
def test_fedrecon_options_engines_agree(tiny_ratings, tmp_path, overrides):
    ev = _compare("fedrecon", tiny_ratings, tmp_path, *overrides)
    assert ev[""]["loss"] > 0


def test_round0_evaluation_quirk_reconstructs_nothing(tiny_ratings, tmp_path):
    """split.eval.recon_epochs_constant=false: evaluation passes round 0, so min(0, 5) = 0
    reconstruction epochs: every user is measured with the local variables at their init."""
    from fedrecon_bench.engines.fast import client as fc

    a, data, (_, val, _) = _build("fast", "fedrecon", tiny_ratings, tmp_path, "split.eval.recon_epochs_constant=false",
                                  "split.eval.recon_epochs=5")
    state = a.initialize()
    got = a.evaluate(state, val.all(), data.val.ids)[""]
    clients = val.all()
    local = {n: np.stack([np.asarray(v)] * len(clients)) for n, v in a.l0.items()}
    want = fc.finalize(a.m, a.rt.measure(state.params, clients.data, clients.schedule("odd"), local), loss="batch")
    assert got == pytest.approx(want, rel=1e-6)
    assert a.rt.eval_parts[0][1] == 0  # zero epochs scheduled


@pytest.mark.parametrize("overrides", [
    ("algo.client_epochs=2", "algo.client_steps_max=5"),           # the authors' FedAvg recipe, scaled
    ("algo.client_weighting=uniform", "algo.eval=finetune"),
])
@pytest.mark.tff
def test_fedavg_options_engines_agree(tiny_ratings, tmp_path, overrides):
    _compare("fedavg", tiny_ratings, tmp_path, *overrides)


@pytest.mark.parametrize("algo,overrides", [
    ("fedrecon", ("algo.client_weighting=tokens", "task.masked_loss=false", "task.num_layers=2")),
    ("fedrecon", ("algo.client_weighting=tokens",) + AGG),
    ("fedavg", ("algo.client_weighting=uniform", "task.masked_loss=false")),
])
@pytest.mark.tff
def test_nwp_options_engines_agree(nwp_args, tmp_path, algo, overrides):  # noqa: F811
    _compare(algo, nwp_args, tmp_path, *overrides)


def test_split_seed_fixes_the_split_and_not_the_weights(tiny_ratings):
    import tasks

    def load(seed, split_seed):
        cfg = compose("+task=movielens", "+algo=fedrecon", f"task.ratings_file={tiny_ratings}",
                      f"seed={seed}", f"split_seed={split_seed}")
        t = tasks.build(cfg)
        return t.load(), t.initial_weights({"num_items": 25})[0]["item_embedding"]

    (d0, w0), (d1, w1), (d2, _) = load(0, 42), load(1, 42), load(1, "null")
    assert d0.val.ids == d1.val.ids and d0.test.ids == d1.test.ids
    assert all(np.array_equal(a["item"], b["item"]) for a, b in zip(d0.train.examples, d1.train.examples))
    assert d1.val.ids != d2.val.ids  # without split_seed the split follows the run seed
    assert not np.array_equal(w0, w1)  # initial weights still follow the run seed


# --------------------------------------------------------------------------
# engine=fast only: one line on engine=tff, before anything is built
# --------------------------------------------------------------------------
@pytest.mark.parametrize("algo,override,key", [
    ("fedrecon", "split.train.recon_epochs_constant=false", "split.train.recon_epochs_constant=false"),
    ("fedrecon", "algo.jointly_train_variables=true", "algo.jointly_train_variables=true"),
    ("fedrecon", "algo.evaluate_reconstruction=true", "algo.evaluate_reconstruction=true"),
    ("fedavg", "algo.client_weighting=tokens", "algo.client_weighting=tokens"),
])
@pytest.mark.tff
def test_fast_only_options_are_refused_on_tff(nwp_args, tmp_path, algo, override, key):  # noqa: F811
    base = [f"+algo={algo}", *nwp_args, override]
    with pytest.raises(UserError) as e:
        validate.check_config(compose("engine=tff", *base))
    msg = str(e.value)
    assert "\n" not in msg and key in msg and "engine=fast" in msg
    with pytest.raises(UserError, match="engine=fast"):  # building the TFF algorithm refuses too
        _build("tff", algo, nwp_args, tmp_path, override)
    validate.check_config(compose("engine=fast", *base))  # fine on engine=fast
