"""Dataset split functions against the peers' own test vectors.

Sources (each case's id names the peer's repository, file and test function; -4 / -7: the
two configurations one peer test checks):
  GR_TRAINER  google-research/federated reconstruction/shared/federated_trainer_utils_test.py
  GR_UTILS    google-research/federated reconstruction/reconstruction_utils_test.py
  TFF_UTILS   tensorflow/federated tensorflow_federated/python/learning/reconstruction/
              reconstruction_utils_test.py (the file before FedRecon moved to learning/algorithms)

Every case is a client dataset `range(n).batch(b)` and the batches the peer expects in the
reconstruction part and in the part after it, per round. Their arguments map to a split
config (conf/split/*): split_dataset=False -> mode reuse; their even/odd split ->
disjoint; the skip / aggregated strategies and proportion as they are; the epochs and step
caps by name. Checked here on both engines:
  engine=tff   fedrecon_bench.engines.tff.split.build (a tf.data split function), with the round
               independent cases; a round-dependent training split (recon_epochs_constant
               false) is refused with one line (docs/paper-fidelity.md: engine=fast only);
  engine=fast  fedrecon_bench.engines.fast.split.split_parts + schedule, round by round.
Zero post-reconstruction epochs or steps (their split functions return an empty part) are
refused by the config check with one line (fedrecon_bench/splits.py, docs/paper-fidelity.md
fidelity"); the schedules still give the authors' parts for them.
"""
from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from fedrecon_bench import splits
from fedrecon_bench.errors import UserError
from fedrecon_bench.engines.fast.split import schedule, split_parts
from fedrecon_bench.engines.tff import split as tff_split

GR_TRAINER = "google-research/federated reconstruction/shared/federated_trainer_utils_test.py"
GR_UTILS = "google-research/federated reconstruction/reconstruction_utils_test.py"
TFF_UTILS = ("tensorflow/federated "
             "tensorflow_federated/python/learning/reconstruction/reconstruction_utils_test.py")

R3 = [[0, 1], [2, 3], [4, 5]]  # range(6).batch(2): the peers' usual client, 3 batches
SKIP2 = [[0, 1], [4, 5]]       # skip / even-odd reconstruction batches of R3
AGG2 = [[0, 1], [2, 3]]        # aggregated, p = 2 or 3: batches 0 and 1 of R3
R3_4 = [[0, 1], [2, 3], [4, 5], [0, 1]]


def case(source, test, split, rounds, n=6, b=2):
    """test: the peer's test function, `test_build_dataset_split_fn_<test>` (`=name`:
    test_build_dataset_<name>, `=simple...`: test_simple...; `-4` a variant);
    rounds: {round: (reconstruction batches, post-reconstruction batches)}."""
    test = ("test_" + ("build_dataset_" if test.startswith("=split") else "") + test[1:]
            if test.startswith("=") else "test_build_dataset_split_fn_" + test)
    s = dict(mode="reuse", proportion=2, recon_epochs=1, recon_epochs_constant=True, recon_steps_max=None,
             post_recon_epochs=1, post_recon_steps_max=None)
    s.update(split)
    stem = source.rsplit("/", 1)[1][:-3]
    return pytest.param(source, OmegaConf.create(s), rounds, n, b, id=f"{source.split()[0]}:{stem}::{test}")


def skip(p=2, **kw):
    return dict(mode="skip", proportion=p, **kw)


def agg(p=2, **kw):
    return dict(mode="aggregated", proportion=p, **kw)


def var(epochs=8, **kw):  # the authors' growing reconstruction epochs: min(round, recon_epochs)
    return dict(recon_epochs=epochs, recon_epochs_constant=False, **kw)


CASES = [
    # ---- google-research federated_trainer_utils_test.py (24) ----
    case(GR_TRAINER, "none", dict(recon_epochs=2), {3: (R3 * 2, R3)}),
    case(GR_TRAINER, "skip", skip(recon_epochs=2), {3: (SKIP2 * 2, [[2, 3]])}),
    case(GR_TRAINER, "aggregated", agg(recon_epochs=2), {3: (AGG2 * 2, [[4, 5]])}),
    case(GR_TRAINER, "none_recon_epochs_variable", var(), {1: (R3, R3), 2: (R3 * 2, R3)}),
    case(GR_TRAINER, "skip_recon_epochs_variable", skip(**var()),
         {1: (SKIP2, [[2, 3]]), 2: (SKIP2 * 2, [[2, 3]])}),
    case(GR_TRAINER, "aggregated_recon_epochs_variable", agg(3, **var()),
         {1: (AGG2, [[4, 5]]), 2: (AGG2 * 2, [[4, 5]])}),
    case(GR_TRAINER, "none_recon_max_steps-4", dict(recon_epochs=2, recon_steps_max=4), {3: (R3_4, R3)}),
    case(GR_TRAINER, "none_recon_max_steps-7", dict(recon_epochs=2, recon_steps_max=7), {3: (R3 * 2, R3)}),
    case(GR_TRAINER, "skip_recon_max_steps-4", skip(3, recon_epochs=2, recon_steps_max=4),
         {3: ([[0, 1], [0, 1]], [[2, 3], [4, 5]])}),
    case(GR_TRAINER, "skip_recon_max_steps-7", skip(3, recon_epochs=2, recon_steps_max=7),
         {3: ([[0, 1], [0, 1]], [[2, 3], [4, 5]])}),
    case(GR_TRAINER, "aggregated_recon_max_steps-4", agg(recon_epochs=2, recon_steps_max=4),
         {3: (AGG2 * 2, [[4, 5]])}),
    case(GR_TRAINER, "aggregated_recon_max_steps-7", agg(recon_epochs=2, recon_steps_max=7),
         {3: (AGG2 * 2, [[4, 5]])}),
    case(GR_TRAINER, "none_recon_epochs_variable_max_steps", var(recon_steps_max=4),
         {1: (R3, R3), 2: (R3_4, R3)}),
    case(GR_TRAINER, "skip_recon_epochs_variable_max_steps", skip(**var(recon_steps_max=4)),
         {1: (SKIP2, [[2, 3]]), 2: (SKIP2 * 2, [[2, 3]])}),
    case(GR_TRAINER, "aggregated_recon_epochs_variable_max_steps", agg(3, **var(recon_steps_max=4)),
         {1: (AGG2, [[4, 5]]), 2: (AGG2 * 2, [[4, 5]])}),
    case(GR_TRAINER, "none_recon_epochs_variable_max_steps_zero_post_epochs",
         var(recon_steps_max=4, post_recon_epochs=0), {1: (R3, []), 2: (R3_4, [])}),
    case(GR_TRAINER, "skip_recon_epochs_variable_max_steps_zero_post_epochs",
         skip(**var(recon_steps_max=4, post_recon_epochs=0)), {1: (SKIP2, []), 2: (SKIP2 * 2, [])}),
    case(GR_TRAINER, "aggregated_recon_epochs_variable_max_steps_zero_post_epochs",
         agg(3, **var(recon_steps_max=4, post_recon_epochs=0)), {1: (AGG2, []), 2: (AGG2 * 2, [])}),
    case(GR_TRAINER, "none_recon_epochs_variable_max_steps_multiple_post_epochs",
         var(recon_steps_max=4, post_recon_epochs=2), {1: (R3, R3 * 2), 2: (R3_4, R3 * 2)}),
    case(GR_TRAINER, "skip_recon_epochs_variable_max_steps_multiple_post_epochs",
         skip(**var(recon_steps_max=4, post_recon_epochs=2)),
         {1: (SKIP2, [[2, 3], [2, 3]]), 2: (SKIP2 * 2, [[2, 3], [2, 3]])}),
    case(GR_TRAINER, "aggregated_recon_epochs_variable_max_steps_multiple_post_epochs",
         agg(**var(recon_steps_max=4, post_recon_epochs=2)),
         {1: (AGG2, [[4, 5], [4, 5]]), 2: (AGG2 * 2, [[4, 5], [4, 5]])}),
    case(GR_TRAINER, "none_post_recon_multiple_epochs_max_steps",
         dict(post_recon_epochs=2, post_recon_steps_max=4),
         {1: (R3, R3_4), 2: (R3, R3_4)}),
    case(GR_TRAINER, "skip_post_recon_multiple_epochs_max_steps",
         skip(post_recon_epochs=2, post_recon_steps_max=4),
         {1: (SKIP2, [[2, 3], [2, 3]]), 2: (SKIP2, [[2, 3], [2, 3]])}),
    case(GR_TRAINER, "aggregated_post_recon_multiple_epochs_max_steps",
         agg(post_recon_epochs=2, post_recon_steps_max=4),
         {1: (AGG2, [[4, 5], [4, 5]]), 2: (AGG2, [[4, 5], [4, 5]])}),
    case(GR_TRAINER, "=split_none_fn_split_dataset_zero_batches", {}, {1: ([], []), 2: ([], [])}, n=0),
    case(GR_TRAINER, "=split_skip_fn_split_dataset_zero_batches", skip(10), {1: ([], []), 2: ([], [])}, n=0),
    case(GR_TRAINER, "=split_aggregated_fn_split_dataset_zero_batches", agg(10),
         {1: ([], []), 2: ([], [])}, n=0),
    # ---- google-research reconstruction_utils_test.py (14) ----
    case(GR_UTILS, "=simple_dataset_split_fn", {}, {3: (R3, R3)}),
    case(GR_UTILS, "=build_dataset_split_fn", dict(recon_epochs=2), {3: (R3 * 2, R3)}),
    case(GR_UTILS, "recon_epochs_variable", var(), {1: (R3, R3), 2: (R3 * 2, R3)}),
    case(GR_UTILS, "recon_max_steps-4", dict(recon_epochs=2, recon_steps_max=4), {3: (R3_4, R3)}),
    case(GR_UTILS, "recon_max_steps-7", dict(recon_epochs=2, recon_steps_max=7), {3: (R3 * 2, R3)}),
    case(GR_UTILS, "recon_epochs_variable_max_steps", var(recon_steps_max=4), {1: (R3, R3), 2: (R3_4, R3)}),
    case(GR_UTILS, "recon_epochs_variable_max_steps_zero_post_epochs",
         var(recon_steps_max=4, post_recon_epochs=0),
         {1: (R3, []), 2: (R3_4, [])}),
    case(GR_UTILS, "recon_epochs_variable_max_steps_multiple_post_epochs",
         var(recon_steps_max=4, post_recon_epochs=2), {1: (R3, R3 * 2), 2: (R3_4, R3 * 2)}),
    case(GR_UTILS, "post_recon_multiple_epochs_max_steps", dict(post_recon_epochs=2, post_recon_steps_max=4),
         {1: (R3, R3_4), 2: (R3, R3_4)}),
    case(GR_UTILS, "split_dataset_odd_batches", dict(mode="disjoint"),
         {1: (SKIP2, [[2, 3]]), 2: (SKIP2, [[2, 3]])}),
    case(GR_UTILS, "split_dataset_even_batches", dict(mode="disjoint"),
         {1: (SKIP2, [[2, 3], [6, 7]]), 2: (SKIP2, [[2, 3], [6, 7]])}, n=8),
    case(GR_UTILS, "split_dataset_zero_batches", dict(mode="disjoint"), {1: ([], []), 2: ([], [])}, n=0),
    case(GR_UTILS, "split_dataset_one_batch", dict(mode="disjoint"),
         {1: ([[0]], []), 2: ([[0]], [])}, n=1, b=4),
    case(GR_UTILS, "split_dataset_other_args",
         dict(mode="disjoint", **var(3, recon_steps_max=3, post_recon_epochs=2, post_recon_steps_max=3)),
         {1: (SKIP2, [[2, 3], [2, 3]]), 2: (SKIP2 + [[0, 1]], [[2, 3], [2, 3]])}),
    case(GR_UTILS, "split_dataset_steps_max_0",
         dict(mode="disjoint", **var(3, recon_steps_max=3, post_recon_epochs=2, post_recon_steps_max=0)),
         {1: (SKIP2, []), 2: (SKIP2 + [[0, 1]], [])}),
    # ---- TFF reconstruction_utils_test.py (11) ----
    case(TFF_UTILS, "=simple_dataset_split_fn", {}, {1: (R3, R3)}),
    case(TFF_UTILS, "=build_dataset_split_fn", dict(recon_epochs=2), {1: (R3 * 2, R3)}),
    case(TFF_UTILS, "recon_max_steps-4", dict(recon_epochs=2, recon_steps_max=4), {1: (R3_4, R3)}),
    case(TFF_UTILS, "recon_max_steps-7", dict(recon_epochs=2, recon_steps_max=7), {1: (R3 * 2, R3)}),
    case(TFF_UTILS, "recon_epochs_max_steps_zero_post_epochs", dict(recon_steps_max=4, post_recon_epochs=0),
         {1: (R3, [])}),
    case(TFF_UTILS, "post_recon_multiple_epochs_max_steps", dict(post_recon_epochs=2, post_recon_steps_max=4),
         {1: (R3, R3_4)}),
    case(TFF_UTILS, "split_dataset_odd_batches", dict(mode="disjoint"), {1: (SKIP2, [[2, 3]])}),
    case(TFF_UTILS, "split_dataset_even_batches", dict(mode="disjoint"), {1: (SKIP2, [[2, 3], [6, 7]])}, n=8),
    case(TFF_UTILS, "split_dataset_zero_batches", dict(mode="disjoint"), {1: ([], [])}, n=0),
    case(TFF_UTILS, "split_dataset_one_batch", dict(mode="disjoint"), {1: ([[0]], [])}, n=1, b=4),
    case(TFF_UTILS, "split_dataset_other_args", dict(mode="disjoint", recon_epochs=2, recon_steps_max=3,
                                                     post_recon_epochs=2, post_recon_steps_max=3),
         {1: (SKIP2 + [[0, 1]], [[2, 3], [2, 3]])}),
    case(TFF_UTILS, "split_dataset_steps_max_0", dict(mode="disjoint", recon_steps_max=3, post_recon_epochs=2,
                                                      post_recon_steps_max=0), {1: (SKIP2, [])}),
]


def _batches(n: int, b: int) -> list[list[int]]:
    return [list(range(n))[i:i + b] for i in range(0, n, b)]


def _refused(split) -> bool:
    return split.post_recon_epochs == 0 or split.post_recon_steps_max == 0


@pytest.mark.parametrize("source,split,rounds,n,b", CASES)
def test_fast_schedules_give_the_peers_batches(source, split, rounds, n, b):
    """engine=fast: the batches each schedule reads, in order, round by round."""
    batches = _batches(n, b)
    for r, want in rounds.items():
        got = []
        for part, epochs, steps_max in split_parts(split, r):
            idx, count = schedule([len(batches)], part, epochs, steps_max)
            got.append([batches[i] for i in idx[0, :count[0]]])
        assert got == list(want), (source, r)


@pytest.mark.tff
@pytest.mark.parametrize("source,split,rounds,n,b", CASES)
def test_tff_split_function_gives_the_peers_batches_or_refuses(source, split, rounds, n, b):
    """engine=tff: tff_split.build's tf.data split function on range(n).batch(b); the cases the
    suite declines are refused in one line naming the key and the way out."""
    import tensorflow as tf

    if _refused(split):
        name = "post_recon_epochs" if split.post_recon_epochs == 0 else "post_recon_steps_max"
        with pytest.raises(UserError) as e:
            splits.check(split, "split.train", evaluation=False)
        assert str(e.value).startswith(f"split.train.{name}=0 leaves nothing after reconstruction")
        assert "\n" not in str(e.value) and "use an integer >= 1" in str(e.value)
        return
    if not split.recon_epochs_constant:  # TFF's split function gets no round number
        with pytest.raises(UserError, match=r"^split.train.recon_epochs_constant=false needs the round "
                                            r"number.*use engine=fast$"):
            tff_split.build(split, "split.train")
        return
    recon, post = tff_split.build(split, "split.train")(tf.data.Dataset.range(n).batch(b))
    got = ([x.tolist() for x in recon.as_numpy_iterator()], [x.tolist() for x in post.as_numpy_iterator()])
    for r, want in rounds.items():  # the round does not matter here, as the peers assert
        assert got == tuple(want), (source, r)
