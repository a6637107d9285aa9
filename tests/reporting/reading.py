"""Helpers that read a generated report back (tables, footnotes, sections) and a run's own files."""

from __future__ import annotations

import json
from pathlib import Path


def table_rows(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``| first_header |``, as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").replace("\\|", "\0").split(" | ")]
        cells = [c.replace("\0", "\\|") for c in cells]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def rows_by_label(markdown: str, first_header: str = "run") -> dict[str, dict[str, str]]:
    return {row[first_header].strip("`"): row for row in table_rows(markdown, first_header)}


def footnotes(markdown: str) -> dict[str, str]:
    """``{"[^1]": "reason", ...}`` from the footnote definitions."""
    notes = {}
    for line in markdown.splitlines():
        if line.startswith("[^") and "]: " in line:
            ref, text = line.split(": ", 1)
            notes[ref] = text
    return notes


def section(markdown: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = markdown.splitlines()
    start = lines.index(heading)
    out = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and len(line.split(" ")[0]) <= len(level):
            break
        out.append(line)
    return "\n".join(out)


def history(run_dir: Path) -> list[dict]:
    return json.loads((run_dir / "trainer_state.json").read_text())["log_history"]


def loss_entries(run_dir: Path, key: str = "eval_loss") -> tuple[list[dict], list[dict]]:
    """Training-loss entries and ``key`` entries of trainer_state.json's log_history."""
    entries = history(run_dir)
    return [h for h in entries if "loss" in h], [h for h in entries if key in h]


def jsonl_entries(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "trainer_log.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def report(roots: list[Path], out_dir: Path, *, plots: bool = False, **options) -> str:
    from lfkit.reporting.report import build_report

    out = out_dir / "README.md"
    build_report(roots, out, out_dir / "plots" if plots else None, **options)
    return out.read_text()
