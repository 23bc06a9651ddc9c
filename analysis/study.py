"""Studies: one resumable command per paper table, from sweeps to the table and plots.

    python -m analysis.study <name> [--out DIR] [--reduced] [--dry-run]
    make paper-movielens | make dp-study | make participation-study | make tasks-study

A study is a few stages of sweeps (Hydra multiruns into fixed dirs under --out, default
studies/<name>), each stage free to use what the ones before picked on validation users,
then tables and plots. Running it again skips every completed job (a run dir holding a
completed run has nothing to do), so an interrupted study continues where it stopped.
--dry-run prints the sweeps' commands instead of running them. The studies: study_dp.py
(the privacy-utility study), study_paper.py (the MovieLens paper table),
study_participation.py (accuracy against how often clients come back), study_tasks.py (the
personalization baselines on EMNIST and Shakespeare).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections import defaultdict

from analysis import runs as R
from fedrecon_bench.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC_PAGE = "docs/results.md"
STUDIES = {"dp": "analysis.study_dp", "paper-movielens": "analysis.study_paper",
           "participation": "analysis.study_participation", "tasks": "analysis.study_tasks"}


class Study:
    """The runner a study module's `run(study, args)` drives."""

    def __init__(self, out: str, dry_run: bool = False, extra: list[str] | None = None,
                 doc_page: str | None = None):
        """extra: overrides appended to every sweep (e.g. rounds=2 for a smoke run); doc_page:
        the docs page whose blocks take the study's tables (None: none)."""
        self.out, self.dry_run, self.extra = out, dry_run, list(extra or [])
        self.doc_page = doc_page
        self.commands: list[list[str]] = []

    def sweep(self, name: str, overrides: list[str]) -> str:
        """Runs (or continues) one Hydra multirun into <out>/<name>; returns its dir."""
        d = os.path.join(self.out, name)
        cmd = [sys.executable, "-m", "fedrecon_bench", "-m", *overrides, *self.extra, f"hydra.sweep.dir={d}"]
        self.commands.append(cmd)
        if self.dry_run:
            print(" ".join(["python", *cmd[1:]]))
            return d
        print(f"study: {name} ({len(overrides)} overrides) -> {d}", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise UserError(f"study: the sweep {name} exited {proc.returncode}; see {d}")
        return d

    def runs(self, *names: str) -> list:
        return R.load_runs([os.path.join(self.out, n) for n in names
                            if os.path.isdir(os.path.join(self.out, n))])

    def doc(self, block: str, md_path: str, command: str, extra_md: str = "", page: str | None = None) -> list[str]:
        """The table at md_path (and extra_md) into block `block` of the docs page (or of
        `page`, relative to the repository, e.g. README.md)."""
        if self.doc_page is None:
            return []
        from analysis import docblock

        page = os.path.join(ROOT, page) if page else self.doc_page
        with open(md_path, encoding="utf-8") as f:
            docblock.write_block(page, block, f.read() + extra_md, command, "fast")
        return [f"{page} ({block})"]

    def write(self, name: str, obj) -> str:
        """<out>/<name>: a text, or JSON of anything else."""
        path = os.path.join(self.out, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(obj) if isinstance(obj, str) else json.dump(obj, f, indent=2, sort_keys=True)
        return path


def pick(runs, group_keys: list[str], cand_keys: list[str], metric: str, split: str = "val") -> dict:
    """Per group (values of group_keys), the candidate (values of cand_keys) whose mean final
    `split` headline `metric` over its runs is best; a candidate with a run that did not
    complete is not one. Reads `split` only (validation users): never the test split.
    Returns {group: {"pick": candidate, "scores": {candidate: mean}, "unstable": [...]}}."""
    scores, unstable = defaultdict(lambda: defaultdict(list)), defaultdict(set)
    for run in runs:
        group = tuple(R.value(run, k) for k in group_keys)
        cand = tuple(R.value(run, k) for k in cand_keys)
        if run.status != "completed":
            unstable[group].add(cand)
            continue
        entries = R.entries(run, split)
        v = R.select(run, split, metric, "final", None, entries[0][0]) if entries else None
        if v is None:
            unstable[group].add(cand)
        else:
            scores[group][cand].append(v)
    sign = 1 if R.lower_is_better(metric) else -1
    out = {}
    for group, cands in scores.items():
        ok = {c: statistics.fmean(v) for c, v in cands.items() if c not in unstable[group]}
        if ok:
            out[group] = {"pick": min(ok, key=lambda c: sign * ok[c]), "scores": ok,
                          "unstable": sorted(unstable[group], key=str)}
    return out


def main(argv=None) -> int:
    import importlib

    ap = argparse.ArgumentParser(prog="python -m analysis.study", description=__doc__.splitlines()[0])
    ap.add_argument("name", choices=sorted(STUDIES))
    ap.add_argument("--out", help="where the sweeps, tables and plots go (default: studies/<name>)")
    ap.add_argument("--reduced", action="store_true", help="the study's documented smaller grid")
    ap.add_argument("--dry-run", action="store_true", help="print the sweeps' commands; run nothing")
    ap.add_argument("--extra", nargs="*", default=[], help="overrides added to every sweep (smoke runs: rounds=2)")
    ap.add_argument("--doc", default=DOC_PAGE, help=f"the docs page whose blocks take the tables (default "
                    f"{DOC_PAGE}; '' or --extra: none)")
    a = ap.parse_args(argv)
    try:
        doc = os.path.join(ROOT, a.doc) if a.doc and not a.extra and not a.dry_run else None
        study = Study(a.out or os.path.join("studies", a.name), a.dry_run, a.extra, doc)
        for path in importlib.import_module(STUDIES[a.name]).run(study, a):
            print(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
