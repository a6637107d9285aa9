"""``lfkit data convert timeseries`` and ``lfkit data stats timeseries``: options and summaries.

:func:`convert` and :func:`stats` declare the options (typer); :func:`convert_command` and
:func:`stats_command` turn them into :class:`~lfkit.data_tools.timeseries.convert.TsOptions`,
run the pass with a progress bar and print the summary shared with the dialogue converter.
``lfkit data convert FILES --kind timeseries`` reaches the same command (see
:mod:`lfkit.data_tools.cli`). Heavy imports happen inside the commands.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from lfkit.data_tools.core.cli import (
    Format,
    expand,
    interruptible,
    print_skipped,
    print_stale_work,
    single_threaded_blas,
)

from lfkit.cli_errors import expected_message

if TYPE_CHECKING:
    from lfkit.data_tools.timeseries.convert import TsOptions
    from rich.console import Console


class TsFormat(str, Enum):
    """How the series are written."""

    encoder = "encoder"
    text = "text"


INPUTS = typer.Argument(..., help="ChatTS JSONL / JSON-array files (optionally .gz), or directories of them.")
TS_FORMAT = typer.Option(
    TsFormat.encoder,
    "--ts-format",
    help="encoder: raw values in a timeseries column and bare `<ts><ts/>` placeholders, for "
    "a ChatTS model with the lfkit plugin; text: each series written as compact comma-joined values "
    "in place of its placeholder and no timeseries column, for a plain LLM with stock LlamaFactory.",
)
MAX_LEN = typer.Option(
    None,
    "--max-series-length",
    min=1,
    help="Reject records with a series longer than this. Use the model's ts.max_sequence_length "
    "(ts.max_length in older configs): ChatTS encoders with position embeddings have none beyond it.",
)
CUTOFF = typer.Option(
    None,
    "--cutoff-len",
    min=1,
    help="The recipe's cutoff_len: convert rejects samples whose sequence budget exceeds it "
    "(reason over_cutoff) instead of letting LlamaFactory cut them; stats counts them.",
)
PATCH = typer.Option(
    16,
    "--patch-size",
    min=1,
    help="The model's ts.patch_size (16 in ChatTS-14B): each series takes "
    "ceil(length / patch_size) positions in place of its 2 placeholder tokens.",
)
DECIMALS = typer.Option(2, "--ts-decimals", min=0, max=12, help="Decimals of each value in --ts-format text.")
TOKENIZER = typer.Option(
    None,
    "--tokenizer",
    help="Tokenizer directory or hub id (AutoTokenizer.from_pretrained): exact token counts for "
    "--cutoff-len (else a characters / 4 estimate).",
)
TEMPLATE = typer.Option(
    "qwen", "--template", help="LlamaFactory template used with --tokenizer to count text tokens exactly."
)


def convert(
    inputs: list[Path] = INPUTS,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset directory (gets NAME.jsonl and dataset_info.json)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name to register in dataset_info.json."),
    strict: bool = typer.Option(
        False, "--strict", help="Exit non-zero if any record is rejected (showing the first reasons)."
    ),
    fmt: Format = typer.Option(Format.jsonl, "--format", help="jsonl, or parquet (through pyarrow)."),
    ts_format: TsFormat = TS_FORMAT,
    max_series_length: int | None = MAX_LEN,
    cutoff_len: int | None = CUTOFF,
    patch_size: int = PATCH,
    ts_decimals: int = DECIMALS,
    tokenizer: Path | None = TOKENIZER,
    template: str = TEMPLATE,
) -> None:
    """Convert ChatTS time-series records into a LlamaFactory dataset registered in OUT/dataset_info.json.

    Input records: single-turn **input** / **output** / **timeseries**, or multi-turn
    **messages** + **timeseries** (one `<ts><ts/>` placeholder per series, in order).
    Outputs: NAME.jsonl (or .parquet) with a timeseries column (encoder form) read by the lfkit
    plugin, NAME.rejects.jsonl, and the entry in dataset_info.json.
    """
    ts = TsCliOptions(
        ts_format.value, max_series_length, cutoff_len, patch_size, ts_decimals, tokenizer, template
    )
    ts.fmt = fmt.value
    convert_command(expand(inputs), out, name, strict, ts)


def stats(
    inputs: list[Path] = INPUTS,
    ts_format: TsFormat = TS_FORMAT,
    max_series_length: int | None = MAX_LEN,
    cutoff_len: int | None = CUTOFF,
    patch_size: int = PATCH,
    ts_decimals: int = DECIMALS,
    tokenizer: Path | None = TOKENIZER,
    template: str = TEMPLATE,
) -> None:
    """The true sequence budget of ChatTS records (text tokens + series patches), without writing."""
    ts = TsCliOptions(
        ts_format.value, max_series_length, cutoff_len, patch_size, ts_decimals, tokenizer, template
    )
    stats_command(expand(inputs), ts)


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
    fmt: str = "jsonl"

    def build(self, console: Console) -> TsOptions:
        """Check the values and load the tokenizer (if any) into :class:`TsOptions`."""
        from lfkit.data_tools.core.output import OutputFormat
        from lfkit.data_tools.timeseries.budget import CharEstimate, TemplateTokens
        from lfkit.data_tools.timeseries.convert import TsOptions

        opts = TsOptions(
            fmt=OutputFormat(self.fmt),
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


def convert_command(files, out: Path, name: str, strict: bool, cli: TsCliOptions) -> None:
    """Run ``lfkit data convert timeseries`` with checked options and print its summary."""
    single_threaded_blas()
    from lfkit.data_tools.core.inputs import CorruptInputError, total_bytes
    from lfkit.data_tools.core.progress import byte_progress
    from lfkit.data_tools.core.registry import RegistryError
    from lfkit.data_tools.core.summary import exit_if_strict, print_summary
    from lfkit.data_tools.timeseries.convert import convert_timeseries, stats_rows
    from rich.console import Console

    console = Console(highlight=False)
    opts = cli.build(console)
    try:
        with interruptible(), byte_progress(console, "converting", total_bytes(files)) as advance:
            result = convert_timeseries(files, out, name, opts, strict=strict, on_progress=advance)
    except (RegistryError, CorruptInputError, OSError) as err:  # before ValueError: both are ValueErrors
        typer.echo(
            f"error: {expected_message(err)}; nothing was written, previous outputs are unchanged", err=True
        )
        raise typer.Exit(code=1) from None
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    title = f"lfkit data convert timeseries: {name} ({opts.ts_format} form)"
    print_summary(console, title, result.scan.counts, result.rejects, stats_rows(result.scan, opts))
    print_skipped(console, files.skipped)
    print_stale_work(console, result.stale_work)
    if result.dataset_info is not None:
        console.print(f"dataset [bold]{name}[/] -> {result.dataset}")
        console.print(f"registered in {result.dataset_info}")
    exit_if_strict(console, strict, result.rejects)
    if result.scan.counts.converted == 0:
        console.print("[red]no record was converted; nothing written except the rejects file[/]")
        raise typer.Exit(code=1)


def stats_command(files, cli: TsCliOptions) -> None:
    """Run ``lfkit data stats timeseries``: the sequence budget, without writing anything."""
    single_threaded_blas()
    from lfkit.data_tools.core.inputs import CorruptInputError, total_bytes
    from lfkit.data_tools.core.progress import byte_progress
    from lfkit.data_tools.core.summary import print_summary
    from lfkit.data_tools.timeseries.convert import stats_rows, timeseries_stats
    from rich.console import Console

    console = Console(highlight=False)
    opts = cli.build(console)
    try:
        with interruptible(wrote=False), byte_progress(console, "reading", total_bytes(files)) as advance:
            result, tally = timeseries_stats(files, opts, on_progress=advance)
    except (CorruptInputError, OSError) as err:
        typer.echo(f"error: {expected_message(err)}", err=True)
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
