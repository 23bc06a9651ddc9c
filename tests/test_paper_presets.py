"""The `_authors` presets compose exactly the paper authors' README commands plus their
flag defaults (google-research/federated, reconstruction/): each flag's value is written
here as data, with the config key it maps to, and checked against the composed config."""
import pytest
from omegaconf import OmegaConf

from conftest import compose

# Flag defaults of shared/federated_trainer.py that the commands leave alone.
TRAINER_DEFAULTS = {
    "recon_epochs_constant": True, "post_recon_epochs": 1, "evaluate_reconstruction": False,
    "jointly_train_variables": False, "global_variables_only": False, "dp_noise_multiplier": None,
}
# The two README commands, verbatim (output flags and bazel left out).
MOVIELENS = {
    "task": "movielens_mf", "client_optimizer": "sgd", "client_learning_rate": 0.5,
    "server_optimizer": "sgd", "server_learning_rate": 1.0, "reconstruction_optimizer": "sgd",
    "reconstruction_learning_rate": 0.1, "client_batch_size": 5, "clients_per_round": 100,
    "total_rounds": 500, "rounds_per_eval": 5, "rounds_per_checkpoint": 25, "recon_epochs_max": 5,
    "recon_steps_max": 50, "post_recon_steps_max": 50, "split_dataset": True,
    # ml_mf_* defaults
    "ml_mf_split_by_user": True, "ml_mf_split_train_fraction": 0.8, "ml_mf_split_val_fraction": 0.1,
    "ml_mf_normalize_ratings": False, "ml_mf_max_examples_per_user": 300, "ml_mf_num_latent_factors": 50,
    "ml_mf_add_biases": False, "ml_mf_l2_regularization": 0.0, "ml_mf_spreadout_lambda": 0.0,
    "ml_mf_accuracy_threshold": 0.5,
}
STACKOVERFLOW = {
    "task": "stackoverflow_nwp", "client_optimizer": "sgd", "client_learning_rate": 0.3,
    "server_optimizer": "yogi", "server_learning_rate": 0.1, "server_yogi_initial_accumulator_value": 0.0,
    "server_yogi_beta2": 0.99, "server_yogi_epsilon": 0.001, "reconstruction_optimizer": "sgd",
    "reconstruction_learning_rate": 0.1, "client_batch_size": 16, "clients_per_round": 200,
    "total_rounds": 2500, "rounds_per_eval": 10, "rounds_per_checkpoint": 50,
    "so_nwp_max_elements_per_user": 1024, "so_nwp_num_oov_buckets": 500, "recon_epochs_max": 5,
    "recon_steps_max": 100, "post_recon_steps_max": 100, "split_dataset": True,
    # so_nwp_* and Yogi defaults
    "so_nwp_vocab_size": 10000, "so_nwp_sequence_length": 20, "so_nwp_embedding_size": 96,
    "so_nwp_latent_size": 670, "so_nwp_num_layers": 1, "so_nwp_split_dataset_strategy": "aggregated",
    "so_nwp_split_dataset_proportion": 2, "server_yogi_beta1": 0.9,
}
# The authors' behaviour that no flag names but that changes numbers (their code, read):
IMPLIED = {"split_seed": 42,  # NP_RANDOM_SEED
           "server_initial_step": 1}  # one zero update at initialisation: Yogi's t = round + 1

SHARED_MAP = {  # flag -> (config key, value as configured here)
    "client_optimizer": ("algo.client_optimizer.name", None),
    "client_learning_rate": ("algo.client_optimizer.learning_rate", None),
    "server_optimizer": ("algo.server_optimizer.name", None),
    "server_learning_rate": ("algo.server_optimizer.learning_rate", None),
    "reconstruction_optimizer": ("algo.reconstruction_optimizer.name", None),
    "reconstruction_learning_rate": ("algo.reconstruction_optimizer.learning_rate", None),
    "client_batch_size": ("task.batch_size", None),
    "clients_per_round": ("clients_per_round", None),
    "total_rounds": ("rounds", None),
    "rounds_per_eval": ("eval_every", None),
    "rounds_per_checkpoint": ("checkpoint_every", None),
    "recon_epochs_max": ("split.{s}.recon_epochs", None),
    "recon_steps_max": ("split.{s}.recon_steps_max", None),
    "post_recon_steps_max": ("split.{s}.post_recon_steps_max", None),
    "post_recon_epochs": ("split.{s}.post_recon_epochs", None),
    "recon_epochs_constant": ("split.{s}.recon_epochs_constant", None),
    "evaluate_reconstruction": ("algo.evaluate_reconstruction", None),
    "jointly_train_variables": ("algo.jointly_train_variables", None),
}


def _check(cfg, flags: dict, mapping: dict):
    checked = []
    for flag, value in flags.items():
        if flag not in mapping:
            continue
        key, want = mapping[flag]
        want = value if want is None else want(value) if callable(want) else want
        for split in (("train", "eval") if "{s}" in key else ("",)):
            k = key.format(s=split)
            assert OmegaConf.select(cfg, k) == want, f"--{flag}={value}: {k}={OmegaConf.select(cfg, k)!r}"
            checked.append(k)
    return checked


def test_movielens_authors_preset_is_their_command():
    cfg = compose("experiment=movielens_paper_authors")
    flags = {**TRAINER_DEFAULTS, **MOVIELENS}
    mapping = {**SHARED_MAP,
               "task": ("task.name", "movielens"),
               "split_dataset": ("split.{s}.mode", "disjoint"),  # MovieLens: even/odd batches
               "ml_mf_split_by_user": ("task.split_by", "user"),
               "ml_mf_split_train_fraction": ("task.train_fraction", None),
               "ml_mf_split_val_fraction": ("task.val_fraction", None),
               "ml_mf_normalize_ratings": ("task.normalize_ratings", None),
               "ml_mf_max_examples_per_user": ("task.max_examples_per_user", None),
               "ml_mf_num_latent_factors": ("task.embedding_dim", None),
               "ml_mf_add_biases": ("task.biases", None),
               "ml_mf_l2_regularization": ("task.l2", None),
               "ml_mf_spreadout_lambda": ("task.spreadout_lambda", None),
               "ml_mf_accuracy_threshold": ("task.accuracy_threshold", None)}
    checked = _check(cfg, flags, mapping)
    assert len(checked) >= 30
    assert cfg.algo.name == "fedrecon" and cfg.task.dataset == "ml-1m" and cfg.task.max_users is None
    assert cfg.split_seed == IMPLIED["split_seed"] and cfg.task.preparation == "authors"
    assert cfg.eval_clients == MOVIELENS["clients_per_round"]  # val sampled per evaluation, test once
    assert cfg.algo.client_weighting == "examples"  # no client_weight_fn: post-reconstruction examples
    assert cfg.task.global_bias is False


def test_movielens_authors_fedavg_is_their_recipe():
    """README: jointly_train_variables=True, split_dataset=False, global_variables_only=True,
    reconstruction_learning_rate=0.0, on the MovieLens command: every variable global,
    trained on all batches for post_recon_epochs, capped at post_recon_steps_max."""
    cfg = compose("experiment=movielens_paper_authors_fedavg")
    assert cfg.algo.name == "fedavg"  # global_variables_only: the user vector shared
    assert cfg.algo.client_epochs == TRAINER_DEFAULTS["post_recon_epochs"]
    assert cfg.algo.client_steps_max == MOVIELENS["post_recon_steps_max"]
    assert cfg.algo.client_optimizer.learning_rate == MOVIELENS["client_learning_rate"]
    assert cfg.algo.server_optimizer.learning_rate == MOVIELENS["server_learning_rate"]
    assert cfg.algo.client_weighting == "examples" and cfg.algo.eval == "global"
    assert cfg.split.eval.post_recon_steps_max == MOVIELENS["post_recon_steps_max"]  # measured <= 50
    base = compose("experiment=movielens_paper_authors")
    for key in ("rounds", "clients_per_round", "eval_every", "eval_clients", "split_seed", "task"):
        assert OmegaConf.select(cfg, key) == OmegaConf.select(base, key), key


def test_stackoverflow_authors_preset_is_their_command():
    cfg = compose("experiment=nwp_stackoverflow_paper_authors")
    flags = {**TRAINER_DEFAULTS, **STACKOVERFLOW}
    mapping = {**SHARED_MAP,
               "task": ("task.source", "stackoverflow"),
               "server_yogi_initial_accumulator_value": ("algo.server_optimizer.initial_accumulator_value", None),
               "server_yogi_beta1": ("algo.server_optimizer.beta_1", None),
               "server_yogi_beta2": ("algo.server_optimizer.beta_2", None),
               "server_yogi_epsilon": ("algo.server_optimizer.epsilon", None),
               "so_nwp_max_elements_per_user": ("task.max_elements_per_user", None),
               "so_nwp_num_oov_buckets": ("task.num_oov_buckets", None),
               "so_nwp_vocab_size": ("task.vocab_size", None),
               "so_nwp_sequence_length": ("task.seq_len", None),
               "so_nwp_embedding_size": ("task.embedding_dim", None),
               "so_nwp_latent_size": ("task.lstm_units", None),
               "so_nwp_num_layers": ("task.num_layers", None),
               "so_nwp_split_dataset_strategy": ("split.{s}.mode", None),
               "so_nwp_split_dataset_proportion": ("split.{s}.proportion", None),
               "global_variables_only": ("task.local_oov", True)}
    checked = _check(cfg, flags, mapping)
    assert len(checked) >= 35
    assert cfg.task.name == "nwp" and cfg.algo.name == "fedrecon"
    assert cfg.task.projection_dim == STACKOVERFLOW["so_nwp_embedding_size"]  # Dense(embedding_size)
    assert cfg.task.masked_loss is False  # TF 2.4: the loss counts pad positions
    assert cfg.algo.client_weighting == "tokens"  # client_weight_fn = num_tokens
    assert cfg.algo.server_optimizer.initial_step == IMPLIED["server_initial_step"]
    assert cfg.split_seed == IMPLIED["split_seed"] and cfg.eval_clients == STACKOVERFLOW["clients_per_round"]


@pytest.mark.parametrize("preset", ["movielens_paper_authors", "movielens_paper_authors_fedavg",
                                    "nwp_stackoverflow_paper_authors"])
def test_authors_presets_pass_validation(preset):
    from fedrecon_bench import validate

    validate.check_config(compose(f"experiment={preset}"))
