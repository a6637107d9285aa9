"""``lfkit results``: loss-curve plots and a markdown results report from LlamaFactory runs.

Bad input (a path that does not exist, a file where a folder is needed, an output place that
cannot be written) ends in one line on stderr saying what to do, never a traceback.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import NoReturn

import typer

app = typer.Typer(
    help="Plot loss curves and write a markdown report from LlamaFactory output directories.",
    no_args_is_help=True,
)

SAVES_HELP = (
    "Directories to search for LlamaFactory runs (output_dir of llamafactory-cli train), recursively. "
    "A directory given twice is read once."
)


class XAxis(str, Enum):
    step = "step"
    epoch = "epoch"
    tokens = "tokens"


X_HELP = (
    "x axis of the comparison plots: optimizer step, epoch, or input tokens seen (needs "
    "include_num_input_tokens_seen: true). Repeat for several."
)
NAME_HELP = (
    "Base name of the comparison PNGs (default: compare_STAGE_RUNS_by_X.png, after the runs compared)."
)
LOG_Y_HELP = "Log-scale loss axes (symmetric log where a loss reaches 0 or below, as PPO's can)."
DPI_HELP = "Resolution of the PNGs (100 = 800 pixels wide)."


def _fail(message: str, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def _check_saves(saves: list[Path]) -> None:
    for path in saves:
        if not path.exists():
            _fail(f"{path} does not exist: give the output_dir of a run or a folder that holds runs")
        if not path.is_dir():
            _fail(
                f"{path} is a file, not a folder: give the output_dir of a run (the folder holding "
                "trainer_state.json) or a folder that holds runs"
            )


def _check_folder(path: Path, option: str) -> None:
    """``path`` is a folder to write into: it may not exist yet, but it may not be a file."""
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                _fail(f"{option} {path}: {parent} is a file, not a folder; give a folder to write into")
            return


def _check_file(path: Path, option: str) -> None:
    if path.is_dir():
        _fail(f"{option} {path} is a folder: give the file to write, e.g. {path / 'README.md'}")
    _check_folder(path.parent, option)


def _write_error(err: OSError) -> NoReturn:
    target = Path(err.filename) if err.filename else None
    if target is not None and target.name.startswith(".") and target.name.endswith(".tmp"):
        target = target.parent  # the atomic writer's temporary file: name the folder instead
    where = f" {target}" if target is not None else ""
    _fail(f"cannot write{where}: {err.strerror or err}; choose a writable place for the output", code=1)


def _count(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


@app.command("report")
def report_command(
    saves: list[Path] = typer.Argument(..., help=SAVES_HELP, show_default=False),
    out: Path = typer.Option(Path("results/README.md"), "--out", "-o", help="Markdown file to write."),
    plots_dir: Path = typer.Option(
        None, "--plots-dir", help="Where the PNGs go. Default: plots/ next to --out."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write the markdown only."),
    title: str = typer.Option("Training results", help="Title of the report."),
    csv_path: Path = typer.Option(None, "--csv", help="Also write the runs table as CSV to this file."),
    json_path: Path = typer.Option(None, "--json", help="Also write the runs table as JSON to this file."),
    x: list[XAxis] = typer.Option([XAxis.step, XAxis.epoch], "--x", help=X_HELP),
    name: str = typer.Option(None, "--name", help=NAME_HELP),
    log_y: bool = typer.Option(False, "--log-y", help=LOG_Y_HELP),
    dpi: int = typer.Option(100, "--dpi", min=30, max=600, help=DPI_HELP),
) -> None:
    """Write a markdown report of every run below SAVES: runs, resources, settings, findings, plots.

    Each training run gets its stage (SFT, PT, DPO, ORPO, SimPO, KTO, PPO, RM), its final
    losses and stage metric, and a verdict: diverged at step N, unstable, in progress (N of M
    steps) or unfinished, else its trend (still decreasing / plateaued / fluctuating / eval loss
    rising; rules in lfkit/reporting/health.py and trends.py). The resources table holds train
    and wall time, samples/s, tokens/s, tokens, parameters and peak memory per device; the
    settings table the recipe keys that differ between the runs. Every eval set is listed, and
    prediction runs (do_predict) get their BLEU-4/ROUGE and example generations. Numbers come
    only from the runs' files; an empty cell has a footnote saying why. Broken directories are
    listed under "Problems". Unless --no-plots, one PNG per run (loss, stage metrics, learning
    rate, grad norm) and comparisons of the runs of each stage are written and linked.
    Exits 1 when no run was found (the report still lists what was there).
    """
    from rich.progress import Progress

    from lfkit.reporting.plots import PlotOptions
    from lfkit.reporting.report import build_report, write_table_csv, write_table_json

    _check_saves(saves)
    _check_file(out, "--out")
    for path, option in ((csv_path, "--csv"), (json_path, "--json")):
        if path is not None:
            _check_file(path, option)
    plots = None if no_plots else (plots_dir or out.parent / "plots")
    if plots is not None:
        _check_folder(plots, "--plots-dir")
    try:
        with Progress(transient=True) as progress:
            task = progress.add_task("plotting", total=None)
            result = build_report(
                saves,
                out,
                plots,
                title=title,
                progress=lambda label: progress.update(task, description=label),
                compare_axes=[a.value for a in x],
                compare_name=name,
                plot_options=PlotOptions(log_y=log_y, dpi=dpi),
            )
        if csv_path is not None:
            write_table_csv(csv_path, result.table)
        if json_path is not None:
            write_table_json(json_path, result.table)
    except OSError as err:
        _write_error(err)
    broken = sum(1 for r in result.runs if r.problems)
    parts = [_count(len(result.runs), "run")]
    if broken:
        parts.append(f"{broken} with problems")
    if result.not_runs:
        parts.append(_count(len(result.not_runs), "folder") + " without a run")
    summary = f"{out}: " + ", ".join(parts)
    if plots is not None:
        summary += f"; {_count(len(result.plots), 'plot')} in {plots}"
    typer.echo(summary)
    if not result.runs:
        raise typer.Exit(1)


@app.command("plot")
def plot_command(
    saves: list[Path] = typer.Argument(..., help=SAVES_HELP, show_default=False),
    out: Path = typer.Option(Path("plots"), "--out", "-o", help="Directory to write the PNGs into."),
    compare: bool = typer.Option(
        False, "--compare", help="Also overlay the runs of each stage (needs two runs of one stage)."
    ),
    x: list[XAxis] = typer.Option([XAxis.step, XAxis.epoch], "--x", help=X_HELP),
    name: str = typer.Option(None, "--name", help=NAME_HELP),
    log_y: bool = typer.Option(False, "--log-y", help=LOG_Y_HELP),
    dpi: int = typer.Option(100, "--dpi", min=30, max=600, help=DPI_HELP),
) -> None:
    """One PNG per run below SAVES: loss, the stage's own metrics, learning rate and grad norm.

    The loss panel shows raw and EMA-smoothed training loss, every eval set, the end of each
    epoch (where the report's per-epoch table puts it) and a marker where the run diverged or
    became unstable. Panels below show logged loss terms (ce_loss and kl_loss of lfkit's
    kl_beta), the stage's metrics (DPO/ORPO/SimPO reward accuracy and rewards, KTO rewards and
    KL, PPO reward, RM eval accuracy), the learning rate and the grad norm. Files:
    `<run>_loss.png`; with --compare, `compare_<stage>_<runs>_by_<x>.png` per stage with two
    or more runs (runs of different stages are never overlaid).
    """
    from lfkit.reporting.plots import PlotOptions, plot_comparisons, plot_run
    from lfkit.reporting.runs import find_runs

    _check_saves(saves)
    _check_folder(out, "--out")
    options = PlotOptions(log_y=log_y, dpi=dpi)
    runs, not_runs = find_runs(saves)
    written = []
    try:
        for run in runs:
            if run.is_predict_only:
                typer.echo(f"{run.label}: a prediction run (no training loss), no plot")
                continue
            path = plot_run(run, out, options=options)
            if path is None:
                problems = "; ".join(map(str, run.problems)) or "empty log"
                typer.echo(f"{run.label}: no loss logged, no plot ({problems})")
            else:
                written.append(path)
        for other in not_runs:
            typer.echo(f"{other.label}: not a run: {other.reason}")
        if compare:
            trained = [r for r in runs if r.train_log]
            if len(trained) < 2:
                found = ", ".join(r.label for r in trained) or "none"
                _fail(
                    f"--compare needs two runs with a training loss; found {len(trained)} ({found})", code=1
                )
            comparisons = plot_comparisons(
                trained, out, axes=[a.value for a in x], name=name, options=options
            )
            for note in comparisons.notes:
                typer.echo(note)
            if not comparisons.paths:
                _fail(
                    "--compare: no two runs of one stage to overlay (runs of different stages never share "
                    "a loss axis)",
                    code=1,
                )
            written += comparisons.paths
    except OSError as err:
        _write_error(err)
    for path in written:
        typer.echo(str(path))
    if not written:
        raise typer.Exit(1)
