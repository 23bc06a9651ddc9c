"""A preset's per-setting picks (fedrecon_bench/tuned.py): `experiment=movielens_paper +algo=X` runs
X's own client learning rate; the command line wins; malformed entries are refused in one line."""
import pytest
from omegaconf import OmegaConf

from conftest import compose
from fedrecon_bench import tuned
from fedrecon_bench.errors import UserError


@pytest.mark.parametrize("algo,extra,lr", [
    ("fedrecon", (), 0.5), ("fedavg", (), 0.1), ("fedavg", ("task.split_by=example",), 0.2),
    ("stateful_fedavg", (), 0.2), ("centralized", (), 0.02),
    ("fedrep", (), 0.2), ("fedrep", ("task.split_by=example",), 0.02), ("ditto", (), 0.1),
    ("hypcluster", ("algo.clusters=2",), 0.05), ("hypcluster", ("algo.clusters=4",), 0.2),
    ("hypcluster", ("algo.clusters=4", "task.split_by=example"), 0.02), ("fedprox", (), 0.1),
    ("fedavg", ("algo.client_optimizer.learning_rate=0.3",), 0.3),          # the command line wins
    ("fedavg", ("++algo.client_optimizer.learning_rate=0.04",), 0.04),
])
def test_the_paper_preset_runs_each_algorithms_own_rate(algo, extra, lr):
    cfg = compose("experiment=movielens_paper", f"+algo={algo}", *extra)
    assert cfg.algo.client_optimizer.learning_rate == lr


def test_later_entries_win_and_every_key_must_match():
    cfg = OmegaConf.create({"algo": {"name": "a", "lr": 1.0}, "task": {"split_by": "user"}, "tuned": [
        {"when": {"algo.name": "a"}, "set": {"algo.lr": 2.0}},
        {"when": {"algo.name": "a", "task.split_by": "example"}, "set": {"algo.lr": 3.0}},
        {"when": {"algo.name": "a", "task.split_by": "user"}, "set": {"algo.lr": 4.0}}]})
    assert tuned.apply(cfg) == {"algo.lr": 4.0} and cfg.algo.lr == 4.0
    assert tuned.picks(cfg, explicit={"algo.lr"}) == {}


@pytest.mark.parametrize("entry,msg", [
    ({"set": {"algo.lr": 1}}, r"tuned\[0\]: each entry needs"),
    ({"when": {"algo.name": "a"}, "set": {"algo.lrr": 1}}, "tuned: algo.lrr is not a config key"),
])
def test_malformed_entries_are_refused_in_one_line(entry, msg):
    cfg = OmegaConf.create({"algo": {"name": "a", "lr": 1.0}, "tuned": [entry]})
    with pytest.raises(UserError, match=msg) as e:
        tuned.apply(cfg)
    assert "\n" not in str(e.value)


def test_override_keys():
    assert tuned.override_keys(["+algo=x", "a.b=1", "++c=2", "~d", "seed=3"]) == {"algo", "a.b", "c", "seed"}


@pytest.mark.parametrize("split,want", [
    ("user", {"lam": 0.1, "personal": 0.03, "init": "initial"}),
    ("example", {"lam": 1, "personal": 0.03, "init": "global"}),
])
def test_the_paper_preset_runs_dittos_tuned_personal_keys(split, want):
    """Ditto's row sets its own keys too (make paper-movielens's personal stage), per user split."""
    cfg = compose("experiment=movielens_paper", "+algo=ditto", f"task.split_by={split}")
    got = {"lam": cfg.algo.lam, "personal": cfg.algo.personal_optimizer.learning_rate, "init": cfg.algo.personal_init}
    assert got == want
