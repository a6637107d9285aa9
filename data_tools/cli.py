"""``lfkit data``: convert JSONL into LlamaFactory datasets and report their statistics.

Two commands, ``convert`` and ``stats``, each with ``--kind dialogue`` (default, implemented in
``lfkit.data_tools.dialogue_*``) or ``--kind timeseries`` (ChatTS data, implemented in
``lfkit.data_tools.timeseries*``). Heavy imports happen inside the commands so ``lfkit --help``
stays instant.
"""

from __future__ import annotations

import tempfile
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console

app = typer.Typer(
    help="Convert dialogue and ChatTS time-series JSONL into LlamaFactory datasets; report statistics.",
    no_args_is_help=True,
    rich_markup_mode="markdown",
)


class Kind(str, Enum):
    """Which converter handles the input."""

    dialogue = "dialogue"
    timeseries = "timeseries"


def _console() -> Console:
    return Console(stderr=False, highlight=False)


class TsFormat(str, Enum):
    """How ``--kind timeseries`` writes the series."""

    encoder = "encoder"
    text = "text"


# Options of one kind only sit in that kind's help panel; giving one with the other --kind is a
# usage error (_refuse_other_kind), so no option is silently ignored.
TS_PANEL = "Time series (--kind timeseries)"
DIALOGUE_PANEL = "Dialogue (--kind dialogue)"
KIND_PANELS = {"dialogue": DIALOGUE_PANEL, "timeseries": TS_PANEL}


def _refuse_other_kind(ctx: typer.Context, kind: Kind) -> None:
    """A usage error for options of the other kind given on the command line (see KIND_PANELS)."""
    other = [panel for k, panel in KIND_PANELS.items() if k != kind.value]
    given = [
        param.opts[0]
        for param in ctx.command.params
        if getattr(param, "rich_help_panel", None) in other and _given(ctx, param.name)
    ]
    if given:
        other_kind = next(k for k in KIND_PANELS if k != kind.value)
        verb = "applies" if len(given) == 1 else "apply"
        raise typer.BadParameter(
            f"{', '.join(given)} {verb} to --kind {other_kind} only, not to --kind {kind.value}; "
            f"leave {'it' if len(given) == 1 else 'them'} out (or choose the other --kind)",
            ctx=ctx,
        )


def _given(ctx: typer.Context, name: str | None) -> bool:
    """Whether the option was set by the user (command line or environment), not left at its default.

    Compared by name: typer ships its own copy of click, whose ``ParameterSource`` is not click's.
    """
    source = ctx.get_parameter_source(name) if name else None
    return source is not None and source.name in ("COMMANDLINE", "ENVIRONMENT")


# Options of --kind timeseries, shared by convert and stats (see lfkit.data_tools.timeseries_cli).
TS_FORMAT_OPT = typer.Option(
    TsFormat.encoder,
    "--ts-format",
    rich_help_panel=TS_PANEL,
    help="encoder: raw values in a timeseries column and bare `<ts><ts/>` placeholders, for "
    "a ChatTS model with the lfkit plugin; text: each series written as compact comma-joined values "
    "in place of its placeholder and no timeseries column, for a plain LLM with stock LlamaFactory.",
)
TS_MAX_LEN_OPT = typer.Option(
    None,
    "--max-series-length",
    min=1,
    rich_help_panel=TS_PANEL,
    help="Reject records with a series longer than this. Use the model's ts.max_sequence_length "
    "(ts.max_length in older configs): ChatTS encoders with position embeddings have none beyond it.",
)
TS_CUTOFF_OPT = typer.Option(
    None,
    "--cutoff-len",
    min=1,
    rich_help_panel=TS_PANEL,
    help="The recipe's cutoff_len: convert rejects samples whose sequence budget exceeds it "
    "(reason over_cutoff) instead of letting LlamaFactory cut them; stats counts them.",
)
TS_PATCH_OPT = typer.Option(
    16,
    "--patch-size",
    min=1,
    rich_help_panel=TS_PANEL,
    help="The model's ts.patch_size (16 in ChatTS-14B): each series takes "
    "ceil(length / patch_size) positions in place of its 2 placeholder tokens.",
)
TS_DECIMALS_OPT = typer.Option(
    2,
    "--ts-decimals",
    min=0,
    max=12,
    rich_help_panel=TS_PANEL,
    help="Decimals of each value in --ts-format text.",
)
TS_TEMPLATE_OPT = typer.Option(
    "qwen",
    "--template",
    rich_help_panel=TS_PANEL,
    help="LlamaFactory template used with --tokenizer to count text tokens exactly.",
)


RESAMPLE_HELP = (
    "Materialise E independent per-role draws (seed S, S+1, ... S+E-1) one after another as ONE "
    "training set, to train with num_train_epochs: 1, so each role shows different conversations "
    "in every virtual epoch (the HF Trainer cannot redraw between epochs). Trade-off: the file is "
    "~E times larger; LR schedule and save/eval steps span all virtual epochs; roles with <= N "
    "conversations repeat them each time; the trainer shuffles the whole set, so virtual epochs "
    "interleave unless the recipe sets disable_shuffling: true. Epoch 0 equals the plain draw; the "
    "validation split is drawn once and excluded from every epoch."
)


@app.command("convert")
def convert(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(
        ...,
        help="JSONL / JSONL.gz files, or directories of them (one file per character).",
    ),
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset directory (gets NAME.jsonl and dataset_info.json)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name to register in dataset_info.json."),
    kind: Kind = typer.Option(Kind.dialogue, "--kind", help="Input kind."),
    role_key: str | None = typer.Option(
        None,
        "--role-key",
        rich_help_panel=DIALOGUE_PANEL,
        help="Record field holding the role / persona / user id (PIPPA default: bot_id).",
    ),
    role_from_filename: bool = typer.Option(
        False,
        "--role-from-filename",
        rich_help_panel=DIALOGUE_PANEL,
        help="Take each record's role from its file name (one-file-per-character collections). "
        "Implied for directory inputs when --role-key is not given.",
    ),
    max_per_role: int | None = typer.Option(
        None,
        "--max-per-role",
        min=1,
        rich_help_panel=DIALOGUE_PANEL,
        help="Keep at most N conversations per role, drawn at random. Needs a role for every "
        "conversation (--role-key, PIPPA bot_id, or --role-from-filename).",
    ),
    seed: int = typer.Option(
        0,
        "--seed",
        rich_help_panel=DIALOGUE_PANEL,
        help="Seed of the per-role draws: same inputs + seed = same bytes.",
    ),
    val_ratio: float = typer.Option(
        0.0,
        "--val-ratio",
        min=0.0,
        max=0.99,
        rich_help_panel=DIALOGUE_PANEL,
        help="Share of the sampled conversations for NAME_val, drawn per role after sampling "
        "(roles with one conversation stay in training). Without it, a NAME_val that an earlier "
        "lfkit run wrote into OUT is removed (it would overlap the new training set).",
    ),
    resample_epochs: int = typer.Option(
        1, "--resample-epochs", min=1, rich_help_panel=DIALOGUE_PANEL, help=RESAMPLE_HELP
    ),
    context_only: bool = typer.Option(
        False,
        "--context-only",
        rich_help_panel=DIALOGUE_PANEL,
        help="One sample per assistant turn: persona/context + the user turn it answers, no earlier turns.",
    ),
    mask_history: bool = typer.Option(
        False,
        "--mask-history",
        rich_help_panel=DIALOGUE_PANEL,
        help="Note in the dataset entry that the recipe should set LlamaFactory's mask_history: true "
        "(train on the last assistant turn only). It is a recipe key: LlamaFactory does not read it "
        "from dataset_info.json.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit non-zero if any record is rejected (showing the first reasons)."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        rich_help_panel=DIALOGUE_PANEL,
        help="Processes reading large inputs in chunks (default: CPUs up to 8); same output for any value.",
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        rich_help_panel=DIALOGUE_PANEL,
        help="Effective batch (per-device x accumulation x devices): adds the optimizer steps of one "
        "pass over the written training set to the summary.",
    ),
    seconds_per_step: float | None = typer.Option(
        None,
        "--seconds-per-step",
        min=0.0,
        rich_help_panel=DIALOGUE_PANEL,
        help="Measured seconds per optimizer step: with --batch-size, adds the hours of that pass.",
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        rich_help_panel=TS_PANEL,
        help="Tokenizer directory or hub id (AutoTokenizer.from_pretrained): exact token counts for "
        "--cutoff-len (else a characters / 4 estimate).",
    ),
    ts_format: TsFormat = TS_FORMAT_OPT,
    max_series_length: int | None = TS_MAX_LEN_OPT,
    cutoff_len: int | None = TS_CUTOFF_OPT,
    patch_size: int = TS_PATCH_OPT,
    ts_decimals: int = TS_DECIMALS_OPT,
    template: str = TS_TEMPLATE_OPT,
) -> None:
    """Convert JSONL conversations into a LlamaFactory dataset registered in OUT/dataset_info.json.

    Input records (one JSON object per line, layout detected per record):
    - OpenAI: **messages** [{role, content}], optional **system**
    - ShareGPT: **conversations** [{from, value}] with human / gpt / system
    - PIPPA: **bot_id** (role), **bot_description** + **bot_definitions** (persona),
      **conversation** [{message, is_human}]

    Outputs in OUT:
    - NAME.jsonl (sharegpt format, role/content tags, system column) and NAME_val.jsonl
    - NAME.rejects.jsonl: every rejected line with file, line, field and reason
    - dataset_info.json: NAME (and NAME_val) merged in; other entries are kept

    Train with `dataset: NAME` and `dataset_dir: OUT` in a llamafactory-cli recipe.
    Options of the other --kind's panel are refused. A truncated or corrupt .gz input fails the
    whole run (file and last line read in the message); nothing is written then.
    """
    _refuse_other_kind(ctx, kind)
    if kind is Kind.timeseries:
        from lfkit.data_tools.jsonl import expand_inputs
        from lfkit.data_tools.timeseries_cli import TsCliOptions, convert_command

        ts = TsCliOptions(
            ts_format.value, max_series_length, cutoff_len, patch_size, ts_decimals, tokenizer, template
        )
        convert_command(_expand(inputs, expand_inputs), out, name, strict, ts)
        return
    from lfkit.data_tools.dialogue_convert import ConvertOptions, RoleRequiredError, convert_dialogue
    from lfkit.data_tools.dialogue_scan import default_workers
    from lfkit.data_tools.jsonl import CorruptInputError, expand_inputs, total_bytes
    from lfkit.data_tools.progress import byte_progress
    from lfkit.data_tools.registry import RegistryError
    from lfkit.data_tools.summary import exit_if_strict

    console = _console()
    files = _expand(inputs, expand_inputs)
    if role_key is None and not role_from_filename and any(p.is_dir() for p in inputs):
        role_from_filename = True
    opts = ConvertOptions(
        out_dir=out,
        name=name,
        role_key=role_key,
        role_from_filename=role_from_filename,
        max_per_role=max_per_role,
        seed=seed,
        val_ratio=val_ratio,
        resample_epochs=resample_epochs,
        context_only=context_only,
        mask_history=mask_history,
        strict=strict,
        workers=workers or default_workers(),
    )
    try:
        opts.validate()
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    try:
        with byte_progress(console, "converting", total_bytes(files)) as advance:
            result = convert_dialogue(files, opts, on_progress=advance)
    except RoleRequiredError as err:
        raise typer.BadParameter(str(err), param_hint="--max-per-role") from None
    except (RegistryError, CorruptInputError, OSError) as err:
        typer.echo(f"error: {err}; nothing was written, previous outputs are unchanged", err=True)
        raise typer.Exit(code=1) from None
    _print_convert_summary(console, result, opts, batch_size, seconds_per_step)
    exit_if_strict(console, strict, result.rejects)
    if result.counts.converted == 0:
        console.print("[red]no record was converted; nothing written except the rejects file[/]")
        raise typer.Exit(code=1)


@app.command("stats")
def stats(
    ctx: typer.Context,
    inputs: list[Path] = typer.Argument(..., help="JSONL / JSONL.gz files, or directories of them."),
    kind: Kind = typer.Option(Kind.dialogue, "--kind", help="Input kind."),
    role_key: str | None = typer.Option(
        None, "--role-key", rich_help_panel=DIALOGUE_PANEL, help="Record field holding the role id."
    ),
    role_from_filename: bool = typer.Option(
        False,
        "--role-from-filename",
        rich_help_panel=DIALOGUE_PANEL,
        help="Role = file name (implied for directory inputs without --role-key).",
    ),
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="Tokenizer directory or hub id (AutoTokenizer.from_pretrained). Dialogue: adds token "
        "lengths (content only, no template); time series: exact text tokens with --template.",
    ),
    max_per_role: str = typer.Option(
        "1,5,10,all",
        "--max-per-role",
        rich_help_panel=DIALOGUE_PANEL,
        help="Comma-separated per-role caps for the planning table.",
    ),
    batch_size: int = typer.Option(
        8,
        "--batch-size",
        min=1,
        rich_help_panel=DIALOGUE_PANEL,
        help="Effective batch: per-device batch x gradient accumulation x devices.",
    ),
    seconds_per_step: float | None = typer.Option(
        None,
        "--seconds-per-step",
        min=0.0,
        rich_help_panel=DIALOGUE_PANEL,
        help="Measured seconds per optimizer step (gives the hours column).",
    ),
    epochs: float = typer.Option(
        1.0, "--epochs", min=0.0, rich_help_panel=DIALOGUE_PANEL, help="num_train_epochs of the planned run."
    ),
    seed: int = typer.Option(
        0, "--seed", rich_help_panel=DIALOGUE_PANEL, help="Seed of the per-role draw (as in convert)."
    ),
    val_ratio: float = typer.Option(
        0.0, "--val-ratio", min=0.0, max=0.99, rich_help_panel=DIALOGUE_PANEL, help="As in convert."
    ),
    resample_epochs: int = typer.Option(
        1, "--resample-epochs", min=1, rich_help_panel=DIALOGUE_PANEL, help="As in convert."
    ),
    context_only: bool = typer.Option(
        False, "--context-only", rich_help_panel=DIALOGUE_PANEL, help="Count one sample per assistant turn."
    ),
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        rich_help_panel=DIALOGUE_PANEL,
        help="Processes reading large inputs (default: CPUs up to 8; 1 with --tokenizer).",
    ),
    ts_format: TsFormat = TS_FORMAT_OPT,
    max_series_length: int | None = TS_MAX_LEN_OPT,
    cutoff_len: int | None = TS_CUTOFF_OPT,
    patch_size: int = TS_PATCH_OPT,
    ts_decimals: int = TS_DECIMALS_OPT,
    template: str = TS_TEMPLATE_OPT,
) -> None:
    """Conversations per role, turns, lengths, and the N per role -> samples -> steps -> hours table.

    The samples column uses the same sampling as **convert** with the same seed:
    it is exactly what a conversion with those options writes.
    Rejected records are counted, not written.
    """
    _refuse_other_kind(ctx, kind)
    if kind is Kind.timeseries:
        from lfkit.data_tools.jsonl import expand_inputs
        from lfkit.data_tools.timeseries_cli import TsCliOptions, stats_command

        ts = TsCliOptions(
            ts_format.value, max_series_length, cutoff_len, patch_size, ts_decimals, tokenizer, template
        )
        stats_command(_expand(inputs, expand_inputs), ts)
        return
    from lfkit.data_tools.dialogue import RoleSource
    from lfkit.data_tools.dialogue_scan import default_workers, scan
    from lfkit.data_tools.dialogue_stats import distribution_rows, parse_caps, steps_rows, steps_table
    from lfkit.data_tools.jsonl import CorruptInputError, expand_inputs, total_bytes
    from lfkit.data_tools.progress import byte_progress
    from lfkit.data_tools.rejects import RejectTally
    from lfkit.data_tools.summary import print_summary

    console = _console()
    files = _expand(inputs, expand_inputs)
    if role_key is None and not role_from_filename and any(p.is_dir() for p in inputs):
        role_from_filename = True
    if role_key and role_from_filename:
        raise typer.BadParameter("give either --role-key or --role-from-filename, not both")
    try:
        caps = parse_caps(max_per_role)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--max-per-role") from None
    tok = None
    if tokenizer is not None:
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(str(tokenizer))
        except (OSError, ValueError) as err:
            raise typer.BadParameter(f"cannot load {tokenizer}: {err}", param_hint="--tokenizer") from None
    tally = RejectTally()
    try:
        with (
            tempfile.TemporaryDirectory(prefix="lfkit-stats-") as work_dir,
            byte_progress(console, "reading", total_bytes(files)) as advance,
        ):
            index, counts = scan(
                files,
                RoleSource(role_key, role_from_filename),
                context_only,
                tally,
                work_dir,
                spool=False,
                tokenizer=tok,
                on_progress=advance,
                workers=workers or default_workers(),
            )
    except (CorruptInputError, OSError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=1) from None
    print_summary(console, "Dialogue statistics", counts, tally, distribution_rows(index))
    if len(index):
        rows = steps_rows(index, caps, batch_size, seconds_per_step, epochs, seed, val_ratio, resample_epochs)
        console.print(steps_table(rows, batch_size, epochs))


def _expand(inputs: list[Path], expand_inputs) -> list[Path]:
    try:
        return expand_inputs(inputs)
    except (OSError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="INPUTS") from None


def _print_convert_summary(
    console: Console, result, opts, batch_size: int | None = None, seconds_per_step: float | None = None
) -> None:
    from lfkit.data_tools.dialogue_stats import distribution_rows, pass_rows
    from lfkit.data_tools.summary import print_summary
    from rich.markup import escape

    rows = distribution_rows(result.index)
    if result.index.role_names == [""]:
        rows.append(("note", "no --role-key: all conversations count as one role"))
    if result.index.trimmed_user_turns:
        rows.append(("trailing user turns trimmed", f"{result.index.trimmed_user_turns:,}"))
    if result.index.moved_greetings:
        rows.append(("PIPPA greetings moved into the context", f"{result.index.moved_greetings:,}"))
    if result.plan is not None:
        rows.append(("training conversations", f"{len(result.plan.train):,}"))
        rows.append(("training samples", f"{result.train_samples:,}"))
        if opts.val_ratio > 0:
            rows.append(("validation conversations", f"{len(result.plan.val):,}"))
            rows.append(("validation samples", f"{result.val_samples:,}"))
        if batch_size is not None:
            rows.extend(pass_rows(result.train_samples, batch_size, seconds_per_step, opts.resample_epochs))
    print_summary(console, f"lfkit data convert: {opts.name}", result.counts, result.rejects, rows)
    if result.published:
        for dataset, path in result.written.items():
            console.print(f"dataset [bold]{dataset}[/] -> {path}", soft_wrap=True)
        console.print(f"registered in {result.dataset_info}", soft_wrap=True)
        if opts.val_ratio > 0 and result.val_samples == 0:
            console.print(
                "[yellow]warning: the validation split is empty (no role has 2+ sampled conversations)[/]"
            )
        if opts.resample_epochs > 1:
            console.print(
                f"train with num_train_epochs: 1 ({opts.resample_epochs} virtual epochs in the file)"
            )
        for note in result.removed:
            console.print(note, markup=False, highlight=False, soft_wrap=True)
        for warning in result.warnings:
            console.print(f"[yellow]warning: {escape(warning)}[/]", soft_wrap=True)
