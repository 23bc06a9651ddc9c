"""engine=fast's cost follows real work: each client computes its own scheduled steps,
not the longest client's, in training and in evaluation, in every client mode.

A counter in the compiled step (fast/client.py `counter`, a debug callback) counts the
lane-steps actually executed; the population has one long client and many short ones."""
import numpy as np
import pytest

from conftest import compose
from fedrecon_bench.engines.fast import execute

LONG, SHORT, N_SHORT, BS = 60, 6, 30, 3  # ratings of the long user / of each short user


@pytest.fixture(scope="module")
def skewed_ratings(tmp_path_factory):
    lines = ["user_id,item_id,rating"]
    for u in range(1, N_SHORT + 2):
        for i in range(LONG if u == 1 else SHORT):
            lines.append(f"{u},{i + 1},{(u + i) % 5 + 1}")
    path = tmp_path_factory.mktemp("skewed") / "ratings.csv"
    path.write_text("\n".join(lines) + "\n")
    return path


def _algo(path, tmp_path, mode, algo="fedrecon", *extra):
    import tasks
    from fedrecon_bench import algorithms, engines

    cfg = compose(f"+algo={algo}", "engine=fast", "+task=movielens", f"task.ratings_file={path}",
                  "task.embedding_dim=4", f"task.batch_size={BS}", f"fast.clients={mode}", *extra)
    task = tasks.get("movielens")(cfg.task, cfg.data_dir, 0)
    data = task.load()
    a = algorithms.get(algo, "fast")(task, data.info, cfg, run_dir=str(tmp_path))
    executed = []
    a.client.counter = a.solo.counter = executed.append
    return a, data, engines.get("fast").populations(task, data, a), executed


def _scheduled(a, clients) -> int:
    (rp, re, rs), (pp, pe, ps) = a.train_parts
    return int(clients.schedule(rp, re, rs).count.sum() + clients.schedule(pp, pe, ps).count.sum())


@pytest.mark.parametrize("mode", ["sequential", "host", "vmap"])
def test_a_round_executes_the_sum_of_scheduled_steps(skewed_ratings, tmp_path, mode):
    a, data, (train, val, _), executed = _algo(skewed_ratings, tmp_path, mode)
    if mode == "vmap":
        a.exec.overhead = 0.0  # free lockstep iterations: the plan must not pad short clients
    everyone = train.all()
    nb = train.num_batches[everyone.idx]
    assert nb.max() >= 10 * nb.min() and len(everyone) > 20  # one long client, many short ones
    state = a.initialize()
    state, _ = a.next(state, everyone)
    want = _scheduled(a, everyone)
    (rp, re, rs), (pp, pe, ps) = a.train_parts
    longest = everyone.schedule(rp, re, rs).count.max() + everyone.schedule(pp, pe, ps).count.max()
    assert sum(executed) == want, (sum(executed), want)
    assert want < len(everyone) * longest / 4  # what padding every client to the longest would cost
    assert a.exec.steps == {"scheduled": want, "computed": want}


@pytest.mark.parametrize("mode", ["sequential", "vmap"])
def test_evaluation_executes_the_sum_of_scheduled_steps(skewed_ratings, tmp_path, mode):
    a, data, (train, _, _), executed = _algo(skewed_ratings, tmp_path, mode)
    a.exec.overhead = 0.0
    everyone = train.all()
    a.evaluate(a.initialize(), everyone, data.train.ids)
    (rp, re, rs), _ = a.rt.eval_parts
    want = int(everyone.schedule(rp, re, rs).count.sum() + everyone.schedule("odd").count.sum())
    assert sum(executed) == want


def test_lockstep_padding_is_counted_as_computed(skewed_ratings, tmp_path):
    """With costly lockstep iterations the plan runs everyone as one group: the long client
    then sets the group's length, and the executor reports the padding it computed."""
    a, _, (train, _, _), executed = _algo(skewed_ratings, tmp_path, "vmap")
    a.exec.overhead = 1e9
    everyone = train.all()
    a.next(a.initialize(), everyone)
    assert a.exec.steps["scheduled"] == _scheduled(a, everyone)
    assert sum(executed) == a.exec.steps["computed"] > a.exec.steps["scheduled"]


@pytest.mark.parametrize("algo", ["fedavg", "stateful_fedavg", "centralized"])
def test_other_algorithms_execute_their_scheduled_steps(skewed_ratings, tmp_path, algo):
    a, _, (train, _, _), executed = _algo(skewed_ratings, tmp_path, "sequential", algo)
    everyone = train.all()
    ids = [f"u{i}" for i in range(len(everyone))]
    a.next(a.initialize(), everyone, ids)
    assert sum(executed) == int(everyone.schedule("all").count.sum())


def test_plan_groups_are_exact_partitions_of_sorted_clients():
    rng = np.random.default_rng(0)
    counts = np.stack([rng.integers(1, 50, 100), rng.integers(0, 30, 100)], axis=1)
    for overhead in (0.0, 16.0, 1e9):
        groups = execute.plan(counts, 128, overhead)
        flat = np.concatenate(groups)
        assert sorted(flat.tolist()) == list(range(100))  # every client exactly once
        assert all(len(g) == 100 or (len(g) & (len(g) - 1)) == 0 for g in groups)  # 2^k or all
        totals = counts.sum(1)[flat]
        assert np.all(np.diff(totals) <= 0)  # longest first
    assert [len(g) for g in execute.plan(counts, 128, 1e9)] == [100]  # overhead-bound: one call
    assert len(execute.plan(counts, 32, 1e9)) == 4  # 32+32+32+4: at most max_width per group


def test_plan_isolates_a_long_client_when_lanes_cost_more_than_iterations():
    counts = np.array([[100, 100]] + [[2, 1]] * 31)
    groups = execute.plan(counts, 128, overhead=0.5)
    assert groups[0].tolist() == [0]
    assert sorted(len(g) for g in groups[1:]) == [1, 2, 4, 8, 16]
    lane_steps = sum(len(g) * counts[g].max(0).sum() for g in groups)
    assert lane_steps == counts.sum()  # equal lengths within each group: nothing padded


@pytest.mark.parametrize("mode", ["sequential", "host", "vmap"])
def test_run_with_load_and_sink_holds_a_group_of_clients_state_and_gives_the_same_results(mode):
    """Executor.run's load/sink (Ditto's personal models): the same sums and kept values as with
    every client's state passed in, each client read and handed back once, and at most a group
    (vmap: max_width; host: one client) read at a time."""
    import jax.numpy as jnp

    from fedrecon_bench.engines.fast.state import ClientOut

    n, width = 11, 4
    counts = np.array([3, 1, 2, 5, 4, 1, 2, 3, 1, 1, 6])
    x = np.arange(n * 3, dtype=np.float32).reshape(n, 3)
    v = np.linspace(-1, 1, n * 3, dtype=np.float32).reshape(n, 3)

    def fn(shared, c):
        return ClientOut(tally={"s": jnp.sum(c["v"] * c["x"])}, keep={"v": c["v"] * shared + c["x"]})

    ex = lambda: execute.Executor(mode, {}, max_width=width)
    want_acc, want = ex().run(fn, jnp.float32(0.5), {"x": x, "v": v}, counts)
    loaded, got = [], np.full_like(v, np.nan)

    def load(at):
        loaded.append(np.asarray(at).tolist())
        return {"v": v[at]}

    def sink(at, kept):
        assert np.isnan(got[at]).all()  # each client handed back once
        got[at] = np.asarray(kept["v"])
    acc, kept = ex().run(fn, jnp.float32(0.5), {"x": x}, counts, load=load, sink=sink)
    assert kept is None and np.array_equal(got, np.asarray(want["v"]))
    np.testing.assert_array_equal(np.asarray(acc.tally["s"]), np.asarray(want_acc.tally["s"]))
    most = {"host": 1, "vmap": width, "sequential": n}[mode]
    assert max(len(a) for a in loaded) <= most
    assert sorted(sum(loaded, [])) == list(range(n))  # each client read once (no extra read for shapes)
