"""``lfkit data convert dialogue`` and ``lfkit data stats dialogue``: options and summaries.

The commands only turn options into :class:`~lfkit.data_tools.dialogue.convert.ConvertOptions`
and print what the engine did; heavy imports happen inside them so ``lfkit --help`` stays
instant. ``lfkit data convert FILES`` (no kind) and ``--kind dialogue`` reach the same command
(see :mod:`lfkit.data_tools.cli`).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer
from lfkit.data_tools.core.cli import (
    Format,
    console,
    expand,
    interruptible,
    print_skipped,
    print_stale_work,
    single_threaded_blas,
)

from lfkit.cli_errors import expected_message


class ValBy(str, Enum):
    """How ``--val-ratio`` splits validation off."""

    conversation = "conversation"
    role = "role"


class Engine(str, Enum):
    """Where the conversion runs."""

    local = "local"
    ray = "ray"


class Dedup(str, Enum):
    """Which duplicates are dropped before sampling."""

    exact = "exact"
    near = "near"


INPUTS = typer.Argument(
    ...,
    help="JSONL / JSON-array files (optionally .gz), or directories of them (one file per character).",
)
ROLE_KEY = typer.Option(
    None, "--role-key", help="Record field holding the role / persona / user id (PIPPA: bot_id)."
)
ROLE_FROM_FILENAME = typer.Option(
    False,
    "--role-from-filename",
    help="Each file is one character: its name is the role and the character the model plays. "
    "Implied for directory inputs when --role-key is not given.",
)
VAL_BY = typer.Option(
    ValBy.conversation,
    "--val-by",
    help="conversation: a share of every role's conversations (stratified); role: whole roles, so "
    "no persona is in both splits.",
)
DEDUP = typer.Option(
    Dedup.exact,
    "--dedup",
    help="exact: drop conversations equal to an earlier one (whitespace aside), always; near: also "
    "drop near-copies within a role (MinHash, --near-threshold; costs ~1 ms per conversation).",
)
NEAR_THRESHOLD = typer.Option(
    0.8, "--near-threshold", min=0.05, max=1.0, help="Estimated Jaccard similarity for --dedup near."
)
MERGE = typer.Option(
    True,
    "--merge-consecutive/--no-merge-consecutive",
    help="Join consecutive turns of one side (double texts) into one; off: reject such records.",
)
GREETING = typer.Option(
    True,
    "--greeting-to-system/--no-greeting-to-system",
    help="Move an opening assistant message (a character's greeting) into the system text; off: "
    "reject assistant-first records.",
)
USER_NAME = typer.Option("User", "--user-name", help="Replaces {{user}} in PIPPA and per-character records.")
INTRO = typer.Option(
    "You are {name}.",
    "--character-intro",
    help="Put into the system text for a character (PIPPA bot_name, per-character file name) that "
    "it does not name yet; {name} is the character. Empty: add nothing.",
)
WORKERS_HELP = "Processes reading large inputs in chunks (default: CPUs up to 8); same output for any value."
RESAMPLE_HELP = (
    "Materialise E independent per-role draws (seed S, S+1, ... S+E-1) one after another as ONE "
    "training set, to train with num_train_epochs: 1, so each role shows different conversations "
    "in every virtual epoch (the HF Trainer cannot redraw between epochs). Trade-off: the file is "
    "~E times larger; LR schedule and save/eval steps span all virtual epochs; roles with <= N "
    "conversations repeat them each time; the trainer shuffles the whole set, so virtual epochs "
    "interleave unless the recipe sets disable_shuffling: true. Epoch 0 equals the plain draw; the "
    "validation split is drawn once and excluded from every epoch."
)


def _given(ctx: typer.Context, name: str) -> bool:
    """Whether the option ``name`` was given on the command line (not its default)."""
    from typer._click.core import ParameterSource

    return ctx.get_parameter_source(name) is ParameterSource.COMMANDLINE


def convert(
    ctx: typer.Context,
    inputs: list[Path] = INPUTS,
    out: Path = typer.Option(
        ..., "--out", "-o", help="Dataset directory (gets NAME.jsonl and dataset_info.json)."
    ),
    name: str = typer.Option(..., "--name", "-n", help="Dataset name to register in dataset_info.json."),
    role_key: str | None = ROLE_KEY,
    role_from_filename: bool = ROLE_FROM_FILENAME,
    max_per_role: int | None = typer.Option(
        None,
        "--max-per-role",
        min=1,
        help="Keep at most N conversations per role, drawn at random. Needs a role for every "
        "conversation (--role-key, PIPPA bot_id, or --role-from-filename).",
    ),
    seed: int = typer.Option(
        0, "--seed", help="Seed of the per-role draws: same inputs + seed = same bytes."
    ),
    val_ratio: float = typer.Option(
        0.0,
        "--val-ratio",
        min=0.0,
        max=0.99,
        help="Share of the sampled conversations for NAME_val, drawn after sampling (see --val-by). "
        "Without it, a NAME_val that an earlier lfkit run wrote into OUT is removed (it would overlap "
        "the new training set).",
    ),
    val_by: ValBy = VAL_BY,
    resample_epochs: int = typer.Option(1, "--resample-epochs", min=1, help=RESAMPLE_HELP),
    context_only: bool = typer.Option(
        False,
        "--context-only",
        help="One sample per user turn: persona/context + that turn and the assistant's answer "
        "(tool calls included), no earlier turns.",
    ),
    mask_history: bool = typer.Option(
        False,
        "--mask-history",
        help="Note in the dataset entry that the recipe should set LlamaFactory's mask_history: true "
        "(train on the last assistant turn only). It is a recipe key: LlamaFactory does not read it "
        "from dataset_info.json.",
    ),
    dedup: Dedup = DEDUP,
    near_threshold: float = NEAR_THRESHOLD,
    merge_consecutive: bool = MERGE,
    greeting_to_system: bool = GREETING,
    user_name: str = USER_NAME,
    character_intro: str = INTRO,
    fmt: Format = typer.Option(
        Format.jsonl,
        "--format",
        help="jsonl, or parquet (through pyarrow: a fraction of the size, loads faster); registered "
        "in dataset_info.json the same way.",
    ),
    strict: bool = typer.Option(
        False, "--strict", help="Exit non-zero if any record is rejected (showing the first reasons)."
    ),
    validate_all: bool = typer.Option(
        False,
        "--validate-all",
        help="With --max-per-role, convert every record, not only the drawn ones, and write the "
        "rejects of all of them (slower: every record is parsed). The dataset is the same.",
    ),
    workers: int | None = typer.Option(None, "--workers", min=1, help=WORKERS_HELP),
    engine: Engine = typer.Option(
        Engine.local,
        "--engine",
        help="local: this machine (worker processes); ray: a Ray cluster with Ray Data (pip install "
        "'lfkit[ray]'), the same picks, written as a folder of Parquet shards per split. Inputs and "
        "--out must be paths every node sees (a shared mount).",
    ),
    ray_address: str | None = typer.Option(
        None,
        "--ray-address",
        help="With --engine ray: the cluster to join (ray://... or HOST:PORT, as for ray.init); "
        "without it a local Ray starts in this process.",
    ),
    batch_size: int | None = typer.Option(
        None,
        "--batch-size",
        min=1,
        help="Effective batch (per-device x accumulation x devices): adds the optimizer steps of one "
        "pass over the written training set to the summary.",
    ),
    seconds_per_step: float | None = typer.Option(
        None,
        "--seconds-per-step",
        min=0.0,
        help="Measured seconds per optimizer step: with --batch-size, adds the hours of that pass.",
    ),
) -> None:
    """Convert conversations into a LlamaFactory dataset registered in OUT/dataset_info.json.

    Input layouts (detected per record; files may be JSON Lines or one JSON array):
    - OpenAI: **messages** [{role, content}] (roles system/developer, user, assistant, tool;
      assistant **tool_calls**; content parts), optional **system**, **tools**
    - ShareGPT: **conversations** [{from, value}] with human / gpt / system / function_call /
      observation, optional **tools** (LlamaFactory's tool-use demo layout)
    - multimodal: either of the above with **images** / **videos** / **audios** file lists and
      one `<image>` / `<video>` / `<audio>` placeholder per file (LlamaFactory's mllm demo layout)
    - PIPPA: **bot_id** (role), **bot_name**, **bot_description** + **bot_definitions** (persona),
      **conversation** [{message, is_human}]
    - Alpaca (LlamaFactory's default): **instruction**, **input**, **output**, optional
      **system**, **history** [[prompt, response], ...]
    - LlamaFactory v1 content parts {type, value}: text, reasoning (written as `<think>` text),
      tool_call, image_url / video_url / audio_url
    - a directory: one file per character, the file name is the character (any layout inside)

    Preference (chosen/rejected) and KTO (boolean label) records are rejected, not converted as
    SFT: register such files in dataset_info.json as they are.

    With --max-per-role only the drawn records are converted: the others are checked to be
    well-formed JSON with a role and counted as **not sampled** (converted + rejected + not
    sampled = read); --validate-all converts them all.

    Outputs in OUT:
    - NAME.jsonl / NAME.parquet (sharegpt format, role/content tags, system, tools and media
      columns where used) and NAME_val.*
    - NAME.rejects.jsonl: every rejected record with file, line, field and reason (duplicates
      too, with the line they repeat), in input order
    - dataset_info.json: NAME (and NAME_val) merged in; other entries are kept

    Train with `dataset: NAME` and `dataset_dir: OUT` in a llamafactory-cli recipe. A truncated
    or corrupt .gz input fails the whole run (file and last line read in the message); nothing
    is written then, nor when the run is interrupted.
    """
    single_threaded_blas()
    from lfkit.data_tools.core.inputs import CorruptInputError, total_bytes
    from lfkit.data_tools.core.output import OutputFormat
    from lfkit.data_tools.core.parallel import default_workers
    from lfkit.data_tools.core.progress import byte_progress
    from lfkit.data_tools.core.registry import RegistryError
    from lfkit.data_tools.core.summary import exit_if_strict
    from lfkit.data_tools.dialogue.build import Policy
    from lfkit.data_tools.dialogue.convert import (
        ConvertOptions,
        RepeatedInputError,
        RoleRequiredError,
        convert_dialogue,
    )

    out_console = console()
    files = expand(inputs)
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
        val_by=val_by.value,
        resample_epochs=resample_epochs,
        context_only=context_only,
        mask_history=mask_history,
        strict=strict,
        workers=workers or default_workers(),
        fmt=OutputFormat(fmt.value),
        dedup=dedup.value,
        near_threshold=near_threshold,
        validate_all=validate_all,
        policy=Policy(merge_consecutive, greeting_to_system, user_name, character_intro),
    )
    try:
        opts.validate()
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if ray_address is not None and engine is not Engine.ray:
        raise typer.BadParameter("--ray-address needs --engine ray", param_hint="--ray-address")
    if engine is Engine.ray and fmt is Format.jsonl and _given(ctx, "fmt"):
        raise typer.BadParameter(
            "--engine ray writes Parquet shards: leave out --format jsonl", param_hint="--format"
        )
    try:
        if engine is Engine.ray:
            result = _convert_on_ray(files, opts, ray_address)
        else:
            with interruptible(), byte_progress(out_console, "converting", total_bytes(files)) as advance:
                result = convert_dialogue(files, opts, on_progress=advance)
    except RoleRequiredError as err:
        hint = "--max-per-role" if opts.max_per_role is not None else "--val-by"
        raise typer.BadParameter(str(err), param_hint=hint) from None
    except RepeatedInputError as err:
        raise typer.BadParameter(str(err), param_hint="INPUTS") from None
    except (RegistryError, CorruptInputError, OSError) as err:
        typer.echo(
            f"error: {expected_message(err)}; nothing was written, previous outputs are unchanged", err=True
        )
        raise typer.Exit(code=1) from None
    print_convert_summary(out_console, result, opts, batch_size, seconds_per_step)
    exit_if_strict(out_console, strict, result.rejects)
    if result.counts.converted == 0:
        out_console.print("[red]no record was converted; nothing written except the rejects file[/]")
        raise typer.Exit(code=1)


def _convert_on_ray(files, opts, address: str | None):
    """``--engine ray``: the conversion on a Ray cluster (:mod:`lfkit.data_tools.dialogue.ray_engine`)."""
    from lfkit.data_tools.dialogue.convert import RepeatedInputError, RoleRequiredError
    from lfkit.data_tools.dialogue.ray_engine import RayUnavailableError, convert_on_ray

    try:
        with interruptible():
            return convert_on_ray(files, opts, address)
    except (RoleRequiredError, RepeatedInputError):
        raise
    except (RayUnavailableError, ValueError) as err:
        raise typer.BadParameter(str(err), param_hint="--engine") from None


def stats(
    inputs: list[Path] = INPUTS,
    role_key: str | None = ROLE_KEY,
    role_from_filename: bool = ROLE_FROM_FILENAME,
    tokenizer: Path | None = typer.Option(
        None,
        "--tokenizer",
        help="Tokenizer directory or hub id (AutoTokenizer.from_pretrained): adds token lengths "
        "(content only, no template).",
    ),
    max_per_role: str = typer.Option(
        "1,5,10,all", "--max-per-role", help="Comma-separated per-role caps for the planning table."
    ),
    batch_size: int = typer.Option(
        8, "--batch-size", min=1, help="Effective batch: per-device batch x gradient accumulation x devices."
    ),
    seconds_per_step: float | None = typer.Option(
        None,
        "--seconds-per-step",
        min=0.0,
        help="Measured seconds per optimizer step (gives the hours column).",
    ),
    epochs: float = typer.Option(1.0, "--epochs", min=0.0, help="num_train_epochs of the planned run."),
    seed: int = typer.Option(0, "--seed", help="Seed of the per-role draw (as in convert)."),
    val_ratio: float = typer.Option(0.0, "--val-ratio", min=0.0, max=0.99, help="As in convert."),
    val_by: ValBy = VAL_BY,
    resample_epochs: int = typer.Option(1, "--resample-epochs", min=1, help="As in convert."),
    context_only: bool = typer.Option(False, "--context-only", help="Count one sample per user turn."),
    dedup: Dedup = DEDUP,
    near_threshold: float = NEAR_THRESHOLD,
    merge_consecutive: bool = MERGE,
    greeting_to_system: bool = GREETING,
    user_name: str = USER_NAME,
    character_intro: str = INTRO,
    workers: int | None = typer.Option(
        None,
        "--workers",
        min=1,
        help="Processes reading large inputs (default: CPUs up to 8; 1 with --tokenizer).",
    ),
) -> None:
    """Conversations per role, turns, lengths, duplicates, and the N per role -> steps -> hours table.

    The samples column uses the same sampling as **convert** with the same seed, after dropping
    the same duplicates: it is exactly what a conversion with those options writes. Rejected
    records are counted, not written. With **--dedup near**, near-duplicates within a role are
    counted (and left out of the table, as convert would drop them).
    """
    single_threaded_blas()
    from lfkit.data_tools.core.inputs import CorruptInputError, total_bytes
    from lfkit.data_tools.core.parallel import default_workers
    from lfkit.data_tools.core.progress import byte_progress
    from lfkit.data_tools.core.rejects import RejectTally
    from lfkit.data_tools.core.summary import print_summary
    from lfkit.data_tools.dialogue.build import Policy
    from lfkit.data_tools.dialogue.convert import ConvertOptions, RepeatedInputError
    from lfkit.data_tools.dialogue.stats import dialogue_stats, distribution_rows, parse_caps, steps_table

    out_console = console()
    files = expand(inputs)
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
    opts = ConvertOptions(
        out_dir=Path("."),
        name="lfkit-stats",
        role_key=role_key,
        role_from_filename=role_from_filename,
        seed=seed,
        val_ratio=val_ratio,
        val_by=val_by.value,
        resample_epochs=resample_epochs,
        context_only=context_only,
        dedup=dedup.value,
        near_threshold=near_threshold,
        workers=workers or default_workers(),
        policy=Policy(merge_consecutive, greeting_to_system, user_name, character_intro),
    )
    tally = RejectTally()
    try:
        with interruptible(wrote=False), byte_progress(out_console, "reading", total_bytes(files)) as advance:
            result = dialogue_stats(
                files, opts, caps, batch_size, seconds_per_step, epochs, tally, tok, on_progress=advance
            )
    except (CorruptInputError, OSError) as err:
        typer.echo(f"error: {expected_message(err)}", err=True)
        raise typer.Exit(code=1) from None
    except RepeatedInputError as err:
        raise typer.BadParameter(str(err), param_hint="INPUTS") from None
    rows = distribution_rows(result.role_counts, result.turns, result.chars, result.tokens)
    rows += note_rows(
        result.role_names, result.role_spellings, result.notes, result.duplicates, result.near_duplicates,
        files.skipped,
    )  # fmt: skip
    print_summary(out_console, "Dialogue statistics", result.counts, tally, rows)
    print_skipped(out_console, files.skipped)
    if result.steps:
        out_console.print(steps_table(result.steps, batch_size, epochs))


def note_rows(
    role_names: list[str], spellings: set[str], notes: tuple[int, int, int], duplicates: int, near: int,
    skipped: list,
) -> list[tuple[str, str]]:  # fmt: skip
    """Summary rows for what the conversation rules and deduplication changed."""
    trimmed, greetings, merged = notes
    rows = []
    if role_names == [""]:
        rows.append(("note", "no --role-key: all conversations count as one role"))
    if spellings:
        example = sorted(spellings)[0]
        rows.append(
            ("role names merged by whitespace normalisation", f"{len(spellings):,} (e.g. {example!r})")
        )
    if greetings:
        rows.append(("assistant greetings moved into the system text", f"{greetings:,}"))
    if merged:
        rows.append(("consecutive turns of one side merged", f"{merged:,}"))
    if trimmed:
        rows.append(("trailing user turns trimmed", f"{trimmed:,}"))
    rows.append(("exact duplicates dropped", f"{duplicates:,}"))
    if near:
        rows.append(("near duplicates within a role dropped", f"{near:,}"))
    if skipped:
        rows.append(("files under input directories not read", f"{len(skipped):,}"))
    return rows


def print_convert_summary(
    out_console, result, opts, batch_size: int | None = None, seconds_per_step: float | None = None
) -> None:
    """The summary table of a conversion and where its outputs went."""
    from lfkit.data_tools.core.summary import print_summary
    from lfkit.data_tools.dialogue.stats import distribution_rows, pass_rows
    from rich.markup import escape

    rows = distribution_rows(result.role_counts, result.turns, result.chars, inputs=result.two_pass)
    rows += note_rows(
        result.role_names, result.role_spellings, result.notes, result.duplicates, result.near_duplicates,
        result.skipped,
    )  # fmt: skip
    if result.plan is not None:
        rows.append(("training conversations", f"{len(result.plan.train):,}"))
        rows.append(("training samples", f"{result.train_samples:,}"))
        if opts.val_ratio > 0:
            held = " (whole roles)" if opts.val_by == "role" else ""
            rows.append((f"validation conversations{held}", f"{len(result.plan.val):,}"))
            rows.append(("validation samples", f"{result.val_samples:,}"))
            if result.val_overlaps:
                rows.append(
                    ("validation samples equal to a training sample, left out", f"{result.val_overlaps:,}")
                )
        if batch_size is not None:
            rows.extend(pass_rows(result.train_samples, batch_size, seconds_per_step, opts.resample_epochs))
    print_summary(out_console, f"lfkit data convert: {opts.name}", result.counts, result.rejects, rows)
    print_skipped(out_console, result.skipped)
    print_stale_work(out_console, result.stale_work)
    if result.published:
        for dataset, path in result.written.items():
            out_console.print(f"dataset [bold]{dataset}[/] -> {path}", soft_wrap=True)
        out_console.print(f"registered in {result.dataset_info}", soft_wrap=True)
        if opts.val_ratio > 0 and result.val_samples == 0:
            out_console.print(
                "[yellow]warning: the validation split is empty (no role has 2+ sampled conversations)[/]"
            )
        if opts.resample_epochs > 1:
            out_console.print(
                f"train with num_train_epochs: 1 ({opts.resample_epochs} virtual epochs in the file)"
            )
        for note in result.removed:
            out_console.print(note, markup=False, highlight=False, soft_wrap=True)
        for warning in result.warnings:
            out_console.print(f"[yellow]warning: {escape(warning)}[/]", soft_wrap=True)
