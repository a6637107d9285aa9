"""``lfkit results`` on directories without runs: they are reported, and the exit code says so."""

from __future__ import annotations

from typer.testing import CliRunner

from lfkit.cli import app


def test_report_on_dirs_without_runs_lists_them_and_exits_1(tmp_path):
    saves = tmp_path / "saves"
    (saves / "never_started").mkdir(parents=True)
    (saves / "notes").mkdir()
    (saves / "notes" / "todo.txt").write_text("train more\n")
    out = tmp_path / "report.md"
    result = CliRunner().invoke(app, ["results", "report", str(saves), "--out", str(out)])
    assert result.exit_code == 1, result.output
    text = out.read_text()
    assert "No run directories found." in text
    assert "- `saves/never_started`: not a run: empty directory" in text
    assert "- `saves/notes`: not a run: no LlamaFactory output files (has: todo.txt)" in text


def test_missing_saves_dir_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["results", "plot", str(tmp_path / "nope")])
    assert result.exit_code == 2
    words = " ".join(result.output.replace("│", " ").split())  # rich wraps the message in a box
    assert "does not exist" in words


def test_plot_without_runs_exits_1(tmp_path):
    (tmp_path / "empty").mkdir()
    args = ["results", "plot", str(tmp_path / "empty"), "--out", str(tmp_path / "p")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    assert "empty: not a run: empty directory" in result.output
