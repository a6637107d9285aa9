"""``lfkit results``: loss-curve plots and a markdown results report from LlamaFactory runs."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(
    help="Plot loss curves and write a markdown report from LlamaFactory output directories.",
    no_args_is_help=True,
)

SAVES_HELP = (
    "Directories to search for LlamaFactory runs (output_dir of llamafactory-cli train), recursively."
)


@app.command("report")
def report_command(
    saves: list[Path] = typer.Argument(..., help=SAVES_HELP, exists=True, file_okay=False),
    out: Path = typer.Option(Path("results/README.md"), "--out", "-o", help="Markdown file to write."),
    plots_dir: Path = typer.Option(
        None, "--plots-dir", help="Where the loss-curve PNGs go. Default: plots/ next to --out."
    ),
    no_plots: bool = typer.Option(False, "--no-plots", help="Write the markdown only."),
    title: str = typer.Option("Training results", help="Title of the report."),
) -> None:
    """Write a markdown report of every run below SAVES: runs table, key findings, per-epoch loss, trends.

    The runs table holds directory, model, method, quantization, hardware, peak memory, steps,
    epochs, train time, final losses and samples/s. Numbers come only from the runs' files;
    an empty cell has a footnote saying why. Hardware and memory come from the lfkit_run.json
    the lfkit plugin writes at the end of training. Empty or broken run directories are
    listed under "Problems". Each run gets a trend verdict (still decreasing / plateaued /
    fluctuating / eval loss rising; rules in lfkit/reporting/trends.py) and key findings compare
    runs (speed ratios across hardware and model sizes, which method converged best). Unless
    --no-plots, one loss-curve PNG per run and comparison plots are written and linked.
    Exits 1 when no run was found (the report still lists what was there).
    """
    from rich.progress import Progress

    from lfkit.reporting.report import build_report

    plots = None if no_plots else (plots_dir or out.parent / "plots")
    with Progress(transient=True) as progress:
        task = progress.add_task("plotting", total=None)
        result = build_report(
            saves, out, plots, title=title, progress=lambda label: progress.update(task, description=label)
        )
    broken = sum(1 for r in result.runs if r.problems) + len(result.not_runs)
    typer.echo(
        f"{out}: {len(result.runs)} runs ({broken} with problems or not runs), {len(result.plots)} plots"
        + (f" in {plots}" if plots else "")
    )
    if not result.runs:
        raise typer.Exit(1)


@app.command("plot")
def plot_command(
    saves: list[Path] = typer.Argument(..., help=SAVES_HELP, exists=True, file_okay=False),
    out: Path = typer.Option(Path("plots"), "--out", "-o", help="Directory to write the PNGs into."),
    compare: bool = typer.Option(
        False, "--compare", help="Also overlay all runs in compare_by_step.png and compare_by_epoch.png."
    ),
) -> None:
    """One loss-curve PNG per run below SAVES: raw and EMA-smoothed training loss, eval loss, epoch marks.

    Runs that logged extra loss terms (ce_loss and kl_loss of lfkit's kl_beta) get one more panel
    per term. Dotted vertical lines mark the end of each epoch; eval loss is drawn where it was
    evaluated. Files: `<run>_loss.png`, and with --compare `compare_by_step.png` / `compare_by_epoch.png`.
    """
    from lfkit.reporting.plots import plot_comparison, plot_run
    from lfkit.reporting.runs import find_runs

    runs, not_runs = find_runs(saves)
    written = []
    for run in runs:
        path = plot_run(run, out)
        if path is None:
            typer.echo(
                f"{run.label}: no loss logged, no plot ({'; '.join(map(str, run.problems)) or 'empty log'})"
            )
        else:
            written.append(path)
    for other in not_runs:
        typer.echo(f"{other.label}: not a run: {other.reason}")
    if compare:
        written += plot_comparison(runs, out)
    for path in written:
        typer.echo(str(path))
    if not written:
        raise typer.Exit(1)
