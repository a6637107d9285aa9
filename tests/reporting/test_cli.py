"""``lfkit results`` at its edges: no runs, bad paths, unwritable output, one run to compare, duplicates.

Every error is one line on stderr that says what to do, never a traceback. The run directories
here are written by hand in LlamaFactory's ``trainer_log.jsonl`` format (no training needed).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfkit.cli import app


def invoke(*args: str):
    return CliRunner().invoke(app, ["results", *map(str, args)])


def error_line(result) -> str:
    """The whole error output, which must be a single line."""
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    assert "Traceback" not in result.output
    return lines[0]


def write_run(directory: Path, steps: int = 6, loss: float = 2.0) -> Path:
    """A finished run as LlamaFactory leaves it: trainer_log.jsonl (its LogCallback's lines),
    trainer_state.json and the results files."""
    directory.mkdir(parents=True)
    lines = [
        {
            "current_steps": s,
            "total_steps": steps,
            "loss": loss - 0.1 * s,
            "lr": 1e-3,
            "epoch": s / steps,
            "percentage": round(100 * s / steps, 2),
            "elapsed_time": "0:00:01",
            "remaining_time": "0:00:01",
        }
        for s in range(1, steps + 1)
    ]
    (directory / "trainer_log.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    history = [{"step": s["current_steps"], "epoch": s["epoch"], "loss": s["loss"]} for s in lines]
    state = {"log_history": history, "global_step": steps, "epoch": 1.0, "max_steps": steps}
    (directory / "trainer_state.json").write_text(json.dumps(state))
    results = {"epoch": 1.0, "train_runtime": 3.0, "train_samples_per_second": 4.0, "train_loss": 1.7}
    (directory / "train_results.json").write_text(json.dumps(results))
    (directory / "all_results.json").write_text(json.dumps(results))
    return directory


def test_report_on_dirs_without_runs_lists_them_and_exits_1(tmp_path):
    saves = tmp_path / "saves"
    (saves / "never_started").mkdir(parents=True)
    (saves / "notes").mkdir()
    (saves / "notes" / "todo.txt").write_text("train more\n")
    out = tmp_path / "report.md"
    result = invoke("report", saves, "--out", out)
    assert result.exit_code == 1, result.output
    assert result.output.strip() == f"{out}: 0 runs, 3 folders without a run; 0 plots in {tmp_path / 'plots'}"
    text = out.read_text()
    assert "No run directories found." in text
    assert "- `saves/never_started`: not a run: empty directory" in text
    assert "- `saves/notes`: not a run: no LlamaFactory output files (has: todo.txt)" in text


def test_summary_line_counts_in_words(tmp_path):
    write_run(tmp_path / "saves" / "a")
    out = tmp_path / "r" / "README.md"
    result = invoke("report", tmp_path / "saves" / "a", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{out}: 1 run"


def test_missing_saves_dir_is_one_line(tmp_path):
    result = invoke("plot", tmp_path / "nope")
    assert result.exit_code == 2
    assert error_line(result) == (
        f"error: {tmp_path / 'nope'} does not exist: give the output_dir of a run or a folder that holds runs"
    )


def test_a_file_given_for_a_folder_is_one_line(tmp_path):
    state = tmp_path / "trainer_state.json"
    state.write_text("{}")
    result = invoke("report", state, "--out", tmp_path / "r.md")
    assert result.exit_code == 2
    assert error_line(result).startswith(
        f"error: {state} is a file, not a folder: give the output_dir of a run"
    )
    write_run(tmp_path / "run")
    result = invoke("report", tmp_path / "run", "--out", tmp_path)
    assert (
        error_line(result)
        == f"error: --out {tmp_path} is a folder: give the file to write, e.g. {tmp_path / 'README.md'}"
    )
    result = invoke("plot", tmp_path / "run", "--out", state / "plots")
    assert (
        error_line(result)
        == f"error: --out {state / 'plots'}: {state} is a file, not a folder; give a folder to write into"
    )


def _unwritable(tmp_path: Path) -> Path:
    """A folder this process cannot write into (root ignores permission bits: /sys is read-only for all)."""
    if os.geteuid() != 0:
        folder = tmp_path / "read_only"
        folder.mkdir()
        folder.chmod(0o555)
        return folder
    folder = Path("/sys/lfkit-test-read-only")
    try:
        folder.mkdir()
    except OSError:
        return folder
    folder.rmdir()
    pytest.skip("no unwritable place on this machine")


def test_unwritable_output_is_one_line(tmp_path):
    write_run(tmp_path / "run")
    place = _unwritable(tmp_path)
    result = invoke("report", tmp_path / "run", "--out", place / "README.md")
    assert result.exit_code == 1
    line = error_line(result)
    assert line.startswith(f"error: cannot write {place}") and line.endswith(
        "choose a writable place for the output"
    )
    result = invoke("plot", tmp_path / "run", "--out", place / "plots")
    assert result.exit_code == 1 and error_line(result).startswith(f"error: cannot write {place}")


def test_compare_needs_two_runs_of_one_stage(tmp_path):
    write_run(tmp_path / "saves" / "only")
    result = invoke("plot", tmp_path / "saves", "--compare", "--out", tmp_path / "p")
    assert result.exit_code == 1
    assert "error: --compare needs two runs with a training loss; found 1 (saves/only)" in result.output
    assert (tmp_path / "p" / "saves_only_loss.png").is_file()  # the run's own plot is still made


def test_the_same_directory_twice_is_read_once(tmp_path):
    run = write_run(tmp_path / "saves" / "a")
    write_run(tmp_path / "saves" / "b", loss=2.5)
    out = tmp_path / "r.md"
    result = invoke("report", tmp_path / "saves", run, tmp_path / "saves", "--out", out, "--no-plots")
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{out}: 2 runs"
    assert out.read_text().count("| `saves/a` |") == 2  # its row in the runs table and in the resources table


def test_comparison_names_carry_the_runs_and_do_not_overwrite(tmp_path):
    for name, loss in (("a", 2.0), ("b", 2.0), ("c", 2.4)):
        write_run(tmp_path / "saves" / name, loss=loss)
    out = tmp_path / "p"
    first = invoke(
        "plot", tmp_path / "saves" / "a", tmp_path / "saves" / "b", "--compare", "--out", out, "--x", "step"
    )
    second = invoke(
        "plot", tmp_path / "saves" / "a", tmp_path / "saves" / "c", "--compare", "--out", out, "--x", "step"
    )
    named = invoke(
        "plot",
        tmp_path / "saves",
        "--compare",
        "--out",
        out,
        "--x",
        "epoch",
        "--name",
        "sweep",
        "--dpi",
        "50",
    )
    assert first.exit_code == second.exit_code == named.exit_code == 0, (
        first.output + second.output + named.output
    )
    names = sorted(p.name for p in out.glob("compare_*")) + sorted(p.name for p in out.glob("sweep*"))
    assert names == [
        "compare_sft-pt_a+b_by_step.png",
        "compare_sft-pt_a+c_by_step.png",
        "sweep_by_epoch.png",
    ]
    from matplotlib import image

    assert image.imread(out / "sweep_by_epoch.png").shape[1] == 400  # --dpi 50: half of 800 pixels


def test_tokens_axis_without_token_counts_says_which_runs_it_left_out(tmp_path):
    for name in ("a", "b"):
        write_run(tmp_path / "saves" / name)
    result = invoke("plot", tmp_path / "saves", "--compare", "--x", "tokens", "--out", tmp_path / "p")
    assert result.exit_code == 1
    assert (
        "by tokens: left out saves/a, saves/b (no token counts (include_num_input_tokens_seen))"
        in result.output
    )
    assert "error: --compare: no two runs of one stage to overlay" in result.output


def test_overlapping_runs_get_distinct_styles(tmp_path):
    """Two identical curves: the second stays visible through its own line style and marker."""
    from lfkit.reporting.health import assess
    from lfkit.reporting.plots import PlotOptions, comparison_figure
    from lfkit.reporting.runs import load_run
    from lfkit.reporting.stages import stage_of

    runs = [load_run(write_run(tmp_path / n), n) for n in ("a", "b")]
    fig = comparison_figure([(r, assess(r)) for r in runs], stage_of(runs[0]), "step", PlotOptions())
    lines = [line for line in fig.axes[0].lines if line.get_label().endswith("train (EMA)")]
    assert [list(line.get_ydata()) for line in lines][0] == list(lines[1].get_ydata())  # identical curves
    styles = {(line.get_linestyle(), line.get_marker()) for line in lines}
    assert len(styles) == 2


def test_log_y_puts_loss_axes_on_a_log_scale(tmp_path):
    from lfkit.reporting.health import assess
    from lfkit.reporting.plots import PlotOptions, comparison_figure, run_figure
    from lfkit.reporting.runs import load_run
    from lfkit.reporting.stages import stage_of

    runs = [load_run(write_run(tmp_path / n), n) for n in ("a", "b")]
    options = PlotOptions(log_y=True)
    assert run_figure(runs[0], options=options).axes[0].get_yscale() == "log"
    assert run_figure(runs[0]).axes[0].get_yscale() == "linear"
    members = [(r, assess(r)) for r in runs]
    assert comparison_figure(members, stage_of(runs[0]), "epoch", options).axes[0].get_yscale() == "log"
    result = invoke("plot", tmp_path / "a", "--log-y", "--out", tmp_path / "p")
    assert result.exit_code == 0 and (tmp_path / "p" / "a_loss.png").is_file(), result.output
