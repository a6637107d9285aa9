"""lfkit.atomic: the one writer every lfkit output goes through."""

from __future__ import annotations

import os

import pytest

from lfkit.atomic import atomic_dir, write_text


def test_write_text_replaces_and_keeps_the_file_mode(tmp_path):
    target = tmp_path / "report.md"
    target.write_text("old")
    os.chmod(target, 0o640)
    write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert target.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["report.md"]  # no temporary left


def test_atomic_dir_publishes_only_a_complete_build(tmp_path):
    target = tmp_path / "model"
    with pytest.raises(RuntimeError), atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed half-way")
    assert list(tmp_path.iterdir()) == []  # neither the target nor the temporary

    with atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("{}")
    assert (target / "config.json").read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_atomic_dir_never_merges_into_an_existing_build(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "config.json").write_text("first")
    with pytest.raises(FileExistsError), atomic_dir(target) as tmp:
        (tmp / "config.json").write_text("second")
    with atomic_dir(target, exist_ok=True) as tmp:  # a concurrent builder won: keep its build
        (tmp / "config.json").write_text("second")
    assert (target / "config.json").read_text() == "first"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]
