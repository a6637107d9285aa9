"""The summary the plugin writes into a run's ``output_dir`` when the run ends (``lfkit_summary``).

LlamaFactory ends a run with at most its own ``training_loss.png`` (and only with
``plot_loss: true``). With ``lfkit_summary`` (on by default) the plugin adds what
``lfkit results report`` would write for this one directory, from the run's own files, with
the same code: ``lfkit_summary.md`` (verdict, stage-aware losses and metrics, per-epoch
table, settings, evaluation and prediction metrics) and its plots in ``lfkit_plots/`` (loss
with eval, the stage's own metrics, learning rate and grad norm).

It runs after LlamaFactory's workflow has written every file (see
:mod:`lfkit.plugin.workflows`), on the process that writes ``output_dir`` only. A summary
that cannot be written is a warning in the training log, never a failed run: the model and
LlamaFactory's files are already saved by then.
"""

from __future__ import annotations

from pathlib import Path

SUMMARY_FILE = "lfkit_summary.md"
PLOTS_DIR = "lfkit_plots"


def write_run_summary(output_dir: Path) -> list[Path]:
    """Write ``lfkit_summary.md`` and ``lfkit_plots/`` into ``output_dir``; the paths written, or none."""
    from llamafactory.extras import logging

    logger = logging.get_logger("llamafactory.lfkit.summary")  # shown with LlamaFactory's own logs
    output_dir = Path(output_dir)
    try:
        from lfkit.reporting.report import build_report

        report = build_report(
            [output_dir],
            output_dir / SUMMARY_FILE,
            output_dir / PLOTS_DIR,
            title=f"Run summary: {output_dir.name}",
        )
    except Exception as err:  # the run is complete; its summary is a convenience
        logger.warning(
            f"lfkit: no run summary written ({type(err).__name__}: {err}); the run's own files are complete. "
            f"`lfkit results report {output_dir}` makes the same report later."
        )
        return []
    logger.info(f"lfkit: run summary {output_dir / SUMMARY_FILE} ({len(report.plots)} plots in {PLOTS_DIR}/)")
    return [output_dir / SUMMARY_FILE, *report.plots]
