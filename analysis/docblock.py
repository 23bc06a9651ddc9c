"""Measured tables written into the docs by the script that measured them, never by hand.

    write_block("docs/results.md", "paper_movielens", table_md, command="make paper-movielens",
                engine="fast")

replaces the text between `<!-- begin:NAME -->` and `<!-- end:NAME -->` in a Markdown page
(the markers are appended at the end of the page when absent) with one provenance line
(engine, command, date in UTC, machine) and the table. Only the block changes, so the prose
around a table stays the author's.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import re


def machine() -> str:
    """This machine in a few words, e.g. "Linux x86_64, 2 CPUs, 24 GiB"."""
    mem = ""
    try:
        gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem = f", {gib:.0f} GiB"
    except (ValueError, OSError, AttributeError):  # not POSIX: memory unknown
        pass
    return f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs{mem}"


def provenance(command: str, engine: str, machine_desc: str | None = None, date: str | None = None) -> str:
    """The line above every measured table: how, when and where it was measured."""
    date = date or _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")
    return (f"*Measured {date} (UTC) on engine={engine}, {machine_desc or machine()}; "
            f"command: `{command}`.*")


def _markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise ValueError(f"block name {name!r}: use letters, digits, '_', '-', '.'")
    return f"<!-- begin:{name} -->", f"<!-- end:{name} -->"


def write_block(path: str, name: str, markdown: str, command: str, engine: str,
                machine: str | None = None) -> str:
    """Replaces block NAME of the page at path (appends it when absent); returns the new text."""
    begin, end = _markers(name)
    text = open(path, encoding="utf-8").read() if os.path.exists(path) else ""
    body = f"{begin}\n{provenance(command, engine, machine)}\n\n{markdown.strip()}\n{end}"
    i, j = text.find(begin), text.find(end)
    if i >= 0 and j > i:
        text = text[:i] + body + text[j + len(end):]
    elif i >= 0 or j >= 0:
        raise ValueError(f"{path}: block {name} has only one of its two markers")
    else:
        text = text.rstrip("\n") + ("\n\n" if text.strip() else "") + body + "\n"
    tmp = f"{path}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
    return text


def read_block(path: str, name: str) -> str | None:
    """The text between block NAME's markers (None when the page has no such block)."""
    begin, end = _markers(name)
    text = open(path, encoding="utf-8").read()
    i, j = text.find(begin), text.find(end)
    return text[i + len(begin):j].strip("\n") if 0 <= i < j else None


def add_doc_args(p) -> None:
    """--doc/--doc-name for an analysis script whose table may go into a docs page."""
    p.add_argument("--doc", metavar="PAGE", help="also write the table into this Markdown page "
                   "(e.g. docs/results.md), between <!-- begin:NAME --> and <!-- end:NAME -->")
    p.add_argument("--doc-name", metavar="NAME", help="the block's NAME (required with --doc)")


def write_doc(args, markdown: str, runs, prog: str, argv) -> str | None:
    """Writes the table into args.doc's block when asked; the engine is the runs' own."""
    if not getattr(args, "doc", None):
        return None
    from fedrecon_bench.errors import UserError

    if not args.doc_name:
        raise UserError("--doc needs --doc-name NAME (the block to replace, e.g. paper_movielens)")
    engines = sorted({str(r.summary.get("engine", "unknown")) for r in runs}) or ["unknown"]
    write_block(args.doc, args.doc_name, markdown, command=" ".join([prog, *argv]),
                engine="/".join(engines))
    return args.doc
