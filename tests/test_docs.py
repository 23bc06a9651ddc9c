"""The docs as a newcomer uses them: every command in README.md and docs/ composes, every
relative link and anchor resolves, and the README stays short.

Commands come from fenced code blocks. `python -m fedrecon_bench ...` is checked as the CLI
checks it before Hydra starts (fedrecon_bench/cli_check.py), in this process and without
training: a single run's config is composed and validated; a sweep's jobs are expanded as
the dry run expands them and a set of jobs covering every swept value is checked. `make X`
must name a Makefile target; `python -m <module>` and `python benchmarks/<script>.py` must
answer --help with exit code 0 (one process per distinct module, run side by side).
"""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import HAVE_TFF, ROOT

README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]
LINKED = [*PAGES, ROOT / "CHANGELOG.md"]
README_MAX_LINES = 250
# Targets documented as the one command per paper table, built on another branch (#28);
# once they are in the Makefile this set may be emptied.
# A placeholder in a command stands for a value the reader supplies; these are examples.
PLACEHOLDERS = {"<sweep_dir>": "multirun/paper_table", "<sweep dirs>": "multirun/paper_table",
                "<run dir>": "runs/movielens/fedrecon/2026-01-01_00-00-00", "<name>": "paper-movielens"}
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _rel(p) -> str:
    return str(p.relative_to(ROOT))


def code_blocks(text: str) -> list[str]:
    return FENCE.findall(text)


def commands() -> list[tuple[str, str]]:
    """(page, command) for every shell command line of every fenced block."""
    out = []
    for page in PAGES:
        for block in code_blocks(page.read_text()):
            for line in block.splitlines():
                cmd = line.split(" #", 1)[0].strip()
                words = cmd.split()
                while words and re.fullmatch(r"[A-Z_]+=\S*", words[0]):  # FOO=bar env prefixes
                    words.pop(0)
                if words[:2] == ["uv", "run"]:
                    words = words[2:]
                if words and words[0] in ("python", "make"):
                    out.append((_rel(page), " ".join(words)))
    return out


def _argv(cmd: str) -> list[str]:
    for k, v in PLACEHOLDERS.items():
        cmd = cmd.replace(k, v)
    # [optional args] and args still holding a <placeholder> stand for what the reader adds
    cmd = re.sub(r"\[[^\]]*\]", " ", cmd)
    return [a for a in shlex.split(cmd) if "<" not in a and ">" not in a]


def covering(all_jobs: list[list[str]]) -> list[list[str]]:
    """As few jobs as hold every value of every swept key: job i takes each key's i-th value
    (its last one when it has fewer), so a grid of 4 x 5 x 2 x 3 needs 5 jobs, not 120."""
    axes = [list(dict.fromkeys(job[k] for job in all_jobs)) for k in range(len(all_jobs[0]))]
    return [[a[min(i, len(a) - 1)] for a in axes] for i in range(max(map(len, axes)))]


def check_run_command(argv: list[str]) -> int:
    """What `python -m fedrecon_bench` checks before Hydra starts (fedrecon_bench/__main__.py);
    returns the number of jobs composed."""
    from fedrecon_bench import cli_check
    from fedrecon_bench.cli_args import normalize
    from fedrecon_bench.sweep import split_flags

    if {"--help", "-h"} & set(argv):
        assert "usage: python -m fedrecon_bench" in cli_check.help_text()
        return 0
    flags, overrides = split_flags(normalize(argv))
    if {"-m", "--multirun"} & set(flags):
        picked = covering(cli_check.jobs(overrides, cli_check.preset_params(overrides)))
        for job in picked:
            cli_check.check(job)
        return len(picked)
    if not {"--info", "-i", "--cfg", "-c"} & set(flags):
        cli_check.check(cli_check.first_job(overrides), values=True)
    return 1


def test_every_page_has_commands_and_no_command_hides_outside_a_fence():
    assert len(commands()) > 50
    for page in PAGES:
        text = FENCE.sub("", page.read_text())
        stray = [ln for ln in text.splitlines() if re.match(r"^ {4,}(uv run )?(python|make) ", ln)]
        assert not stray, f"{_rel(page)}: commands in an indented block (use a ``` fence): {stray[:3]}"


def test_run_and_sweep_commands_compose(monkeypatch, tmp_path):
    from fedrecon_bench.errors import UserError

    import functools

    from fedrecon_bench import cli_check

    monkeypatch.setenv("FEDRECON_BENCH_DATA", str(tmp_path))  # composition never reads data
    monkeypatch.chdir(ROOT)
    # the same overrides compose to the same config: compose each once (a copy per caller)
    compose = cli_check._compose
    cached = functools.lru_cache(maxsize=None)(lambda o: compose(list(o)))
    monkeypatch.setattr(cli_check, "_compose", lambda o: cached(tuple(o)).copy())
    runs = sorted({(p, c) for p, c in commands() if c.split()[:3] == ["python", "-m", "fedrecon_bench"]})
    assert len(runs) > 30
    failed = []
    for page, cmd in runs:
        argv = _argv(cmd)[3:]
        if any(a.startswith("resume=") for a in argv) or argv == []:
            continue  # resume needs an existing run dir; a bare command is the missing-task example
        try:
            check_run_command(argv)
        except (UserError, SystemExit) as e:
            if not HAVE_TFF and "engine=tff needs tensorflow" in str(e):
                continue  # the TF-free environment refuses engine=tff in one line, as documented
            failed.append(f"{page}: {cmd}\n    -> {e}")
    assert not failed, "\n".join(failed)


def test_make_targets_exist():
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+):", (ROOT / "Makefile").read_text(), re.M))
    used = {c.split()[1] for _, c in commands() if c.startswith("make ") and len(c.split()) > 1}
    assert used >= {"env", "run", "test"}
    assert not used - targets, used - targets


def test_modules_and_scripts_answer_help():
    mods = set()
    for _, cmd in commands():
        w = _argv(cmd)
        if w[:2] == ["python", "-m"] and w[2] != "fedrecon_bench":
            mods.add(("-m", w[2]))
        elif len(w) > 1 and w[0] == "python" and w[1].endswith(".py"):
            mods.add(("", w[1]))
    assert ("-m", "analysis.table") in mods and any(m.startswith("benchmarks/") for _, m in mods)
    for flag, m in mods:
        path = ROOT / (m.replace(".", "/") + ".py" if flag else m)
        assert path.exists() or (ROOT / m.replace(".", "/") / "__main__.py").exists(), m
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    procs = {m: subprocess.Popen([sys.executable, *([flag] if flag else []), m, "--help"], cwd=ROOT, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for flag, m in sorted(mods)}
    bad = {}
    for m, p in procs.items():
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            bad[m] = err.strip().splitlines()[-1:] 
    assert not bad, bad


# --------------------------------------------------------------------------
# links and anchors
# --------------------------------------------------------------------------
def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces to '-'."""
    h = re.sub(r"`|\*\*|\*", "", heading.strip().lower())
    h = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h)
    return re.sub(r"[^\w\- ]", "", h).replace(" ", "-")


def anchors(path) -> set[str]:
    out, counts = set(), {}
    for line in FENCE.sub("", path.read_text()).splitlines():
        m = re.match(r"^#{1,6} (.+)$", line)
        if m:
            s = slug(m.group(1))
            n = counts.get(s, 0)
            counts[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


def test_slug_follows_github_rules():
    assert slug("Outputs (the run contract)") == "outputs-the-run-contract"
    assert slug("Baselines: the paper's MovieLens comparison") == "baselines-the-papers-movielens-comparison"
    assert slug("Privacy–utility study") == "privacyutility-study"
    assert slug("`fast.clients` and **DP**") == "fastclients-and-dp"


def links(path) -> list[str]:
    text = FENCE.sub("", path.read_text())
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_every_relative_link_and_anchor_resolves():
    bad = []
    for page in LINKED:
        for target in links(page):
            if re.match(r"[a-z]+:", target):
                continue  # https:, mailto:
            file, _, anchor = target.partition("#")
            dest = (page.parent / file).resolve() if file else page
            if not dest.exists():
                bad.append(f"{_rel(page)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                bad.append(f"{_rel(page)}: {target} (no heading with that anchor)")
    assert not bad, "\n".join(bad)


def test_docs_index_links_every_docs_page():
    index = set(links(README))
    missing = [_rel(p) for p in PAGES[1:] if _rel(p) not in index]
    assert not missing, f"README's documentation index lacks {missing}"


def test_results_page_holds_the_study_blocks_for_their_scripts():
    from analysis.docblock import read_block

    page = ROOT / "docs" / "results.md"
    text = page.read_text()
    for name, target in (("paper_movielens", "paper-movielens"), ("dp_study", "dp-study"),
                         ("participation", "participation-study"),
                         ("per_client_movielens", "paper-movielens")):
        assert read_block(str(page), name) is not None, name
        after = text[text.index(f"<!-- end:{name} -->"):].split("\n\n")[1]
        assert f"`make {target}`" in after, (name, after)


def test_readme_is_short():
    n = len(README.read_text().splitlines())
    assert n <= README_MAX_LINES, f"README.md has {n} lines (at most {README_MAX_LINES}); move detail to docs/"


def test_covering_holds_every_swept_value_in_the_fewest_jobs():
    from fedrecon_bench import cli_check

    grid = cli_check.jobs(["+task=movielens", "+algo=fedrecon,fedavg", "seed=0,1,2", "rounds=5"], {})
    assert len(grid) == 6
    assert covering(grid) == [["+task=movielens", "+algo=fedrecon", "seed=0", "rounds=5"],
                              ["+task=movielens", "+algo=fedavg", "seed=1", "rounds=5"],
                              ["+task=movielens", "+algo=fedavg", "seed=2", "rounds=5"]]
