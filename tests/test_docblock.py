"""analysis.docblock: a measured table replaces its block in a docs page, with its provenance."""
from __future__ import annotations

import datetime as dt
import os
import re

import pytest

from analysis import docblock
from analysis import table as table_mod
from fedrecon_bench.errors import UserError
from test_analysis import make_run

PAGE = """# Results

Prose before.

<!-- begin:paper -->
old table
<!-- end:paper -->
Filled by `make paper-movielens`.

<!-- begin:other -->
keep me
<!-- end:other -->
"""


def test_block_replaced_in_place_with_provenance(tmp_path):
    page = tmp_path / "results.md"
    page.write_text(PAGE)
    docblock.write_block(str(page), "paper", "| a | b |\n|--|--|\n| 1 | 2 |\n", command="make paper-movielens",
                         engine="fast", machine="Linux x86_64, 2 CPUs, 24 GiB")
    text = page.read_text()
    today = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
    assert text == PAGE.replace("old table", f"*Measured {today} (UTC) on engine=fast, Linux x86_64, 2 CPUs, "
                                             "24 GiB; command: `make paper-movielens`.*\n\n| a | b |\n|--|--|\n| 1 | 2 |")
    assert docblock.read_block(str(page), "other") == "keep me"
    # a second write replaces the first, never stacks
    docblock.write_block(str(page), "paper", "new", command="c", engine="tff", machine="m")
    assert text.count("<!-- begin:paper -->") == 1 and "| 1 | 2 |" not in page.read_text()
    assert docblock.read_block(str(page), "paper").endswith("\n\nnew")


def test_missing_markers_are_appended_and_a_lone_marker_refused(tmp_path):
    page = tmp_path / "p.md"
    page.write_text("# Page\n")
    docblock.write_block(str(page), "dp_study", "T", command="make dp-study", engine="fast", machine="m")
    assert page.read_text().startswith("# Page\n\n<!-- begin:dp_study -->\n*Measured ")
    assert page.read_text().endswith("\n\nT\n<!-- end:dp_study -->\n")
    page.write_text("<!-- begin:x -->\nno end\n")
    with pytest.raises(ValueError, match="only one of its two markers"):
        docblock.write_block(str(page), "x", "T", command="c", engine="fast")
    with pytest.raises(ValueError, match="block name"):
        docblock.write_block(str(page), "bad name", "T", command="c", engine="fast")


def test_machine_names_the_platform_cpus_and_memory():
    m = docblock.machine()
    assert re.fullmatch(r"\S+ \S+, \d+ CPUs(, \d+ GiB)?", m), m
    assert f"{os.cpu_count()} CPUs" in m


def test_analysis_table_writes_its_table_into_a_doc_block(tmp_path):
    root = tmp_path / "sweep"
    for seed, acc in ((0, 0.5), (1, 0.6)):
        make_run(root, f"a-{seed}", algo="a", seed=seed, final={"test": {"accuracy": acc}}, engine="fast")
    page = tmp_path / "results.md"
    page.write_text(PAGE)
    args = [str(root), "--out", str(tmp_path / "out"), "--doc", str(page), "--doc-name", "paper"]
    assert table_mod.main(args) == 0
    block = docblock.read_block(str(page), "paper")
    first, _, table = block.partition("\n\n")
    assert "on engine=fast" in first and f"command: `python -m analysis.table {' '.join(args)}`" in first
    assert table == (tmp_path / "out" / "table.md").read_text().strip()
    assert "| a | **0.550 ± 0.071** (n=2) |" in table
    assert table_mod.main([str(root), "--out", str(tmp_path / "o2"), "--doc", str(page)]) == 2  # no --doc-name


def test_doc_name_required_error_is_one_line(tmp_path):
    class A:
        doc, doc_name = "x.md", None
    with pytest.raises(UserError, match="--doc needs --doc-name"):
        docblock.write_doc(A(), "T", [], "python -m analysis.table", [])
