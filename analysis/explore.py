"""Data exploration before training, as in the TFF tutorial (and generic for any task).

    python -m analysis.explore +task=movielens [data_dir=...] [task.max_users=null]
        [--users 1,2,3] [--out DIR]

The config is composed as for a run (same `+task=` and overrides). Every task gets
the per-client view of its federated populations (examples per client, train/val/test,
after the task's caps; label or token distributions when its examples have integer
`y`). Tasks with their own explorer add to that; MovieLens adds the tutorial's:
rating histogram, movies per genre (movies.dat, or ML-100K u.item), ratings per user
in the file, and the top genres of the users given with `--users` (the file's
UserIDs). Figures are PNG + PDF under <out> (default outputs/explore/<task>); the
numbers are printed.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import string
import sys

import matplotlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TF's C++ chatter
matplotlib.use("Agg")  # files only

import numpy as np  # noqa: E402

from fedrecon_bench.errors import UserError  # noqa: E402

FIGSIZE = (6.4, 4.0)


def compose(overrides: list[str]):
    """The run's config for these overrides (task only; no algorithm needed)."""
    from hydra import compose as hydra_compose, initialize_config_dir

    from fedrecon_bench.cli_args import CONF_DIR, _check, _find, options

    i, task = _find(overrides, "task")
    if i is None:
        raise UserError(f"no task given; add +task=<name> with one of: {', '.join(options('task'))}")
    if "," in task:
        raise UserError(f"+task={task}: explore one task at a time")
    _check("task", task)
    overrides = [f"+task={task}"] + [o for j, o in enumerate(overrides) if j != i]
    from hydra.errors import HydraException

    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return hydra_compose(config_name="config", overrides=overrides)
    except HydraException as e:
        raise UserError(str(e).strip().splitlines()[0]) from None


def _fig():
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    return plt.subplots(figsize=FIGSIZE, dpi=150, layout="constrained")


def _save(fig, out_dir, stem) -> list[str]:
    import matplotlib.pyplot as plt

    paths = [os.path.join(out_dir, f"{stem}.{ext}") for ext in ("png", "pdf")]
    for p in paths:
        fig.savefig(p)
    plt.close(fig)
    return paths


# --------------------------------------------------------------------------
# Any task: the federated populations as the benchmark builds them
# --------------------------------------------------------------------------
def client_sizes(data) -> dict[str, np.ndarray]:
    return {s: np.asarray(getattr(data, s).sizes, int)
            for s in ("train", "val", "test")}


def target_names(cfg, info: dict):
    """(id -> display name, ids to leave out) for tasks whose targets are ids."""
    if cfg.task.name == "emnist":  # 62 classes: digits, upper case, lower case
        chars = string.digits + string.ascii_uppercase + string.ascii_lowercase
        return (lambda i: chars[i] if 0 <= i < len(chars) else str(i)), set()
    if cfg.task.name == "nwp":  # ids: 0 pad, 1..V words, V+1..V+K OOV buckets, BOS, EOS
        words, vf = [], info.get("vocab_file")
        if vf and os.path.isfile(vf):
            with open(vf) as f:
                words = json.load(f).get("words", [])
        V, K = cfg.task.get("vocab_size"), cfg.task.get("num_oov_buckets")

        def name(i):
            if 1 <= i <= len(words):
                return words[i - 1]
            if V is not None and K is not None:
                return {V + K + 1: "<bos>", V + K + 2: "<eos>"}.get(
                    i, "<oov>" if V < i <= V + K else str(i))
            return str(i)

        return name, {0}  # 0 pads short sequences: not a target
    return str, set()


def explore_populations(cfg, data, out_dir: str, report: list[str]) -> list[str]:
    import seaborn as sns

    task_name = cfg.task.name
    os.makedirs(out_dir, exist_ok=True)
    sizes = client_sizes(data)
    for s, n in sizes.items():
        if len(n):
            report.append(f"{s}: {len(n)} clients, {int(n.sum())} examples; per client "
                          f"min {n.min()}, median {int(np.median(n))}, mean {n.mean():.1f}, max {n.max()}")
    fig, ax = _fig()
    for s in ("train", "val", "test"):
        if len(sizes[s]):
            sns.histplot(sizes[s], bins=40, element="step", fill=False, label=f"{s} ({len(sizes[s])})",
                         ax=ax)
    ax.set(title=f"{task_name}: examples per client (after the task's caps)",
           xlabel="examples per client", ylabel="clients")
    ax.legend()
    paths = _save(fig, out_dir, "examples_per_client")

    # Integer targets: class labels (EMNIST) or next-token ids (NWP).
    ys = [e["y"] for e in (data.train.read(i) for i in range(len(data.train))) if "y" in e]
    if ys and np.issubdtype(np.asarray(ys[0]).dtype, np.integer):
        name, ignore = target_names(cfg, data.info)
        flat = np.concatenate([np.asarray(y).ravel() for y in ys])
        flat = flat[~np.isin(flat, list(ignore))] if ignore else flat
        ids, counts = np.unique(flat, return_counts=True)
        if len(ids) <= 100:  # a label distribution: every class, in id order
            shown, what = np.arange(len(ids)), f"all {len(ids)} train targets"
        else:  # a vocabulary: the most common
            shown, what = np.argsort(-counts, kind="stable")[:30], "the 30 most common train targets"
        top = np.argsort(-counts, kind="stable")[:10]
        report.append(f"train targets: {len(flat)} values, {len(ids)} distinct; most common: "
                      + ", ".join(f"{name(int(ids[i]))} ({counts[i]})" for i in top))
        fig, ax = _fig()
        ax.bar(range(len(shown)), counts[shown])
        ax.set_xticks(range(len(shown)), [name(int(ids[i])) for i in shown], rotation=90,
                      fontsize=6 if len(shown) > 40 else 8)
        ax.set(title=f"{task_name}: {what}", ylabel="count")
        paths += _save(fig, out_dir, "targets")
    return paths


# --------------------------------------------------------------------------
# MovieLens: the tutorial's exploration
# --------------------------------------------------------------------------
def read_movies(root: str) -> tuple[dict[int, list[str]], str] | tuple[None, None]:
    """{MovieID: [genres]} from movies.dat (`MovieID::Title::Genres`, latin-1) or ML-100K
    u.item (`id|title|...|19 genre flags`, names in u.genre); (None, None) if neither."""
    path = os.path.join(root, "movies.dat")
    if os.path.isfile(path):
        genres = {}
        with open(path, encoding="latin-1") as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                parts = line.rstrip("\r\n").split("::")
                if len(parts) != 3 or not parts[0].isdigit():
                    raise UserError(f"{path}:{lineno}: malformed line {line.strip()!r}; expected "
                                    "'MovieID::Title::Genres' (fix or delete that line)")
                genres[int(parts[0])] = [g for g in parts[2].split("|") if g]
        return genres, path
    path, gpath = os.path.join(root, "u.item"), os.path.join(root, "u.genre")
    if os.path.isfile(path) and os.path.isfile(gpath):
        with open(gpath, encoding="latin-1") as f:
            names = [l.split("|")[0] for l in f if l.strip()]
        genres = {}
        with open(path, encoding="latin-1") as f:
            for lineno, line in enumerate(f, start=1):
                parts = line.rstrip("\r\n").split("|")
                if len(parts) < 5 + len(names):
                    raise UserError(f"{path}:{lineno}: malformed line; expected "
                                    f"{5 + len(names)} '|'-separated fields")
                flags = parts[-len(names):]
                genres[int(parts[0])] = [n for n, fl in zip(names, flags) if fl == "1"]
        return genres, path
    return None, None


def movie_ids(item: np.ndarray, ratings_path: str, report: list[str]) -> np.ndarray | None:
    """The MovieID of each rating. ratings.csv has dense item ids: mapped through
    item_ids.csv (item_id,movie_id) beside it; ratings.dat / u.data hold MovieIDs."""
    if not ratings_path.endswith(".csv"):
        return item
    path = os.path.join(os.path.dirname(ratings_path), "item_ids.csv")
    if not os.path.isfile(path):
        report.append(f"{ratings_path} has dense item ids and there is no {path} "
                      "(item_id,movie_id); genre statistics left out")
        return None
    import pandas as pd

    m = pd.read_csv(path)
    if list(m.columns[:2]) != ["item_id", "movie_id"]:
        raise UserError(f"{path}:1: header is {','.join(m.columns)!r}; expected 'item_id,movie_id'")
    lut = np.full(max(int(m.item_id.max()), int(item.max())) + 1, -1, np.int64)
    lut[m.item_id.to_numpy()] = m.movie_id.to_numpy()
    out = lut[item]
    unmapped = out < 0
    if unmapped.any():
        report.append(f"{int(unmapped.sum())} ratings of {len(np.unique(item[unmapped]))} items "
                      f"have no movie_id in {path}; left out of genre statistics")
    return out


def explore_movielens(cfg, out_dir: str, report: list[str], users: list[int]) -> list[str]:
    from tasks.movielens import find_ratings_file, read_ratings

    os.makedirs(out_dir, exist_ok=True)
    path = find_ratings_file(cfg.task, cfg.data_dir)
    r = read_ratings(path)
    report.append(f"{path}: {len(r.rating)} ratings, {len(np.unique(r.user))} users, "
                  f"{len(np.unique(r.item))} items, mean rating {r.rating.mean():.4f}")
    paths = []

    values, counts = np.unique(r.rating, return_counts=True)
    report.append("ratings: " + ", ".join(f"{v:g}: {c}" for v, c in zip(values, counts)))
    fig, ax = _fig()
    ax.bar([f"{v:g}" for v in values], counts)
    ax.set(title=f"MovieLens: rating histogram ({len(r.rating):,} ratings)",
           xlabel="rating", ylabel="ratings")
    paths += _save(fig, out_dir, "ratings")

    import seaborn as sns

    _, per_user = np.unique(r.user, return_counts=True)
    report.append(f"ratings per user: min {per_user.min()}, median {int(np.median(per_user))}, "
                  f"mean {per_user.mean():.1f}, max {per_user.max()}")
    fig, ax = _fig()
    sns.histplot(per_user, bins=50, log_scale=(True, False), ax=ax)
    cap = cfg.task.get("max_examples_per_user")
    if cap:
        ax.axvline(cap, color="C3", ls="--", label=f"task.max_examples_per_user={cap}")
        ax.legend()
    ax.set(title=f"MovieLens: ratings per user ({len(per_user):,} users, whole file)",
           xlabel="ratings per user (log scale)", ylabel="users")
    paths += _save(fig, out_dir, "ratings_per_user")

    genres, movies_path = read_movies(os.path.dirname(path))
    mids = movie_ids(r.item, path, report) if genres is not None else None
    if genres is None:
        report.append(f"no movies.dat (or u.item + u.genre) beside {path}; genre statistics left out")
    if genres is not None:
        per_genre = collections.Counter(g for gs in genres.values() for g in gs)
        report.append(f"{movies_path}: {len(genres)} movies; movies per genre: "
                      + ", ".join(f"{g} {n}" for g, n in per_genre.most_common()))
        fig, ax = _fig()
        names, ns = zip(*per_genre.most_common())
        ax.barh(names[::-1], ns[::-1])
        ax.tick_params(axis="y", labelsize=8)
        ax.set(title=f"MovieLens: movies per genre ({len(genres):,} movies)", xlabel="movies")
        paths += _save(fig, out_dir, "genres")
    if mids is not None and users:
        top = top_genres(r.user, mids, genres, users)
        fig, axes = _users_fig(len(users))
        for ax, u in zip(axes, users):
            if top[u] is None:
                report.append(f"user {u}: no ratings in {path}")
                ax.set_visible(False)
                continue
            report.append(f"user {u} ({top[u]['ratings']} ratings): top genres "
                          + ", ".join(f"{g} rated {n} times" for g, n in top[u]["top"]))
            g, n = zip(*top[u]["top"]) if top[u]["top"] else ((), ())
            ax.barh(g[::-1], n[::-1])
            ax.tick_params(axis="y", labelsize=8)
            ax.set_title(f"user {u} ({top[u]['ratings']} ratings)", fontsize=10)
            ax.set_xlabel("ratings")
        fig.suptitle("MovieLens: top 5 genres of chosen users", fontsize=11)
        paths += _save(fig, out_dir, "user_genres")
    return paths


def top_genres(user: np.ndarray, mids: np.ndarray, genres: dict, users: list[int], k: int = 5):
    """{user: {"ratings": n, "top": [(genre, ratings of that genre), ...k]}} (None: no ratings);
    the tutorial's print_top_genres_for_user, counting a movie once per genre it has."""
    out = {}
    for u in users:
        sel = mids[(user == u) & (mids >= 0)]
        if not (user == u).any():
            out[u] = None
            continue
        c = collections.Counter(g for m in sel for g in genres.get(int(m), []))
        out[u] = {"ratings": int((user == u).sum()),
                  "top": sorted(c.items(), key=lambda t: (-t[1], t[0]))[:k]}
    return out


def _users_fig(n):
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="notebook")
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.6 * rows + 0.4), dpi=150,
                             layout="constrained", squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.set_visible(False)
    return fig, list(axes.ravel()[:n])


EXPLORERS = {"movielens": explore_movielens}  # task name -> its own exploration


def explore(cfg, out_dir: str, users: list[int] | None = None) -> tuple[list[str], list[str]]:
    """Returns (written paths, report lines)."""
    import tasks

    os.makedirs(out_dir, exist_ok=True)
    report: list[str] = []
    paths = []
    if cfg.task.name in EXPLORERS:
        paths += EXPLORERS[cfg.task.name](cfg, out_dir, report, users or [])
    elif users:
        report.append(f"--users applies to movielens only; ignored for {cfg.task.name}")
    task = tasks.build(cfg)
    paths += explore_populations(cfg, task.load(), out_dir, report)
    with open(os.path.join(out_dir, "report.txt"), "w") as f:
        f.write("\n".join(report) + "\n")
    return paths + [os.path.join(out_dir, "report.txt")], report


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m analysis.explore",
                                description=__doc__.split("\n")[0],
                                usage="python -m analysis.explore +task=<name> [key=value ...] "
                                      "[--users 1,2,3] [--out DIR]")
    p.add_argument("--users", help="MovieLens UserIDs whose top genres to show, e.g. 1,2,3")
    p.add_argument("--out", help="output dir (default: outputs/explore/<task>)")
    args, overrides = p.parse_known_args(argv)
    try:
        bad = [o for o in overrides if o.startswith("-")]
        if bad:
            raise UserError(f"unknown option {bad[0]}; options: --users, --out; "
                            "config overrides look like key=value")
        try:
            users = [int(u) for u in args.users.split(",")] if args.users else []
        except ValueError:
            raise UserError(f"--users {args.users!r}: give UserIDs like 1,2,3") from None
        cfg = compose(overrides)
        out = args.out or os.path.join("outputs", "explore", cfg.task.name)
        paths, report = explore(cfg, out, users)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print("\n".join(report))
    print("wrote " + ", ".join(paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
