"""The ``--kind timeseries`` branch of ``lfkit data convert`` and ``lfkit data stats``.

``lfkit.data_tools.cli`` declares the options and calls :func:`convert_command` or
:func:`stats_command`; this module turns them into :class:`~lfkit.data_tools.timeseries.TsOptions`,
runs the pass with a progress bar and prints the summary shared with the dialogue converter.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer
from lfkit.data_tools.jsonl import CorruptInputError, total_bytes
from lfkit.data_tools.progress import byte_progress
from lfkit.data_tools.registry import RegistryError
from lfkit.data_tools.summary import exit_if_strict, print_summary
from lfkit.data_tools.timeseries import TsOptions, convert_timeseries, stats_rows, timeseries_stats
from lfkit.data_tools.timeseries_budget import CharEstimate, TemplateTokens
from rich.console import Console


@dataclass
class TsCliOptions:
    """The raw values of the time-series options, as typed on the command line."""

    ts_format: str = "encoder"
    max_series_length: int | None = None
    cutoff_len: int | None = None
    patch_size: int = 16
    decimals: int = 2
    tokenizer: Path | None = None
    template: str = "qwen"

    def build(self, console: Console) -> TsOptions:
        """Check the values and load the tokenizer (if any) into :class:`TsOptions`."""
        opts = TsOptions(
            ts_format=self.ts_format,
            max_series_length=self.max_series_length,
            cutoff_len=self.cutoff_len,
            patch_size=self.patch_size,
            decimals=self.decimals,
        )
        try:
            opts.validate()
        except ValueError as err:
            raise typer.BadParameter(str(err)) from None
        if self.tokenizer is not None:
            try:
                opts.counter = TemplateTokens(str(self.tokenizer), self.template)
            except (OSError, ValueError) as err:
                raise typer.BadParameter(
                    f"cannot load {self.tokenizer}: {err}", param_hint="--tokenizer"
                ) from None
        else:
            opts.counter = CharEstimate()
            if self.cutoff_len is not None:
                console.print(
                    "[yellow]warning: no --tokenizer, so --cutoff-len is checked against an ESTIMATE "
                    "(characters / 4); pass --tokenizer for exact counts[/]"
                )
        return opts


def convert_command(files: list[Path], out: Path, name: str, strict: bool, cli: TsCliOptions) -> None:
    """``lfkit data convert --kind timeseries``."""
    console = Console(highlight=False)
    opts = cli.build(console)
    try:
        with byte_progress(console, "converting", total_bytes(files)) as advance:
            result = convert_timeseries(files, out, name, opts, strict=strict, on_progress=advance)
    except (RegistryError, CorruptInputError, OSError) as err:  # before ValueError: both are ValueErrors
        typer.echo(f"error: {err}; nothing was written, previous outputs are unchanged", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    title = f"lfkit data convert --kind timeseries: {name} ({opts.ts_format} form)"
    print_summary(console, title, result.scan.counts, result.rejects, stats_rows(result.scan, opts))
    if result.dataset_info is not None:
        console.print(f"dataset [bold]{name}[/] -> {result.dataset}")
        console.print(f"registered in {result.dataset_info}")
    exit_if_strict(console, strict, result.rejects)
    if result.scan.counts.converted == 0:
        console.print("[red]no record was converted; nothing written except the rejects file[/]")
        raise typer.Exit(code=1)


def stats_command(files: list[Path], cli: TsCliOptions) -> None:
    """``lfkit data stats --kind timeseries``: the sequence budget, without writing anything."""
    console = Console(highlight=False)
    opts = cli.build(console)
    try:
        with byte_progress(console, "reading", total_bytes(files)) as advance:
            result, tally = timeseries_stats(files, opts, on_progress=advance)
    except (CorruptInputError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    title = f"Time-series statistics ({opts.ts_format} form)"
    print_summary(console, title, result.counts, tally, stats_rows(result, opts))
    if opts.ts_format == "encoder":
        text = (
            "text tokens (chat template, messages, the processor's scaling text, 2 placeholder tokens"
            " a series)"
            if opts.counter.exact
            else "text tokens ESTIMATED as characters / 4 (messages and scaling text, no chat template) "
            "+ 2 placeholder tokens a series"
        )
        console.print(f"sequence budget = {text} + per series ceil(length / {opts.patch_size}) - 2 positions")
