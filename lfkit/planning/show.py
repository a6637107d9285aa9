"""``lfkit recipe show RECIPE [key=value ...]``: the configuration LlamaFactory will run.

The recipe is read and the ``key=value`` words merged over it exactly as ``llamafactory-cli
train RECIPE key=value ...`` does (OmegaConf, ``llamafactory.hparams.parser.read_args``), then
parsed by LlamaFactory's own ``get_train_args`` with the lfkit plugin active, so every shown value
is the one the run gets: LlamaFactory's and transformers' defaults filled in and their
adjustments made (``compute_dtype`` from ``fp16``/``bf16``, ``warmup_ratio`` moved to
``warmup_steps``, ...). Each value says where it came from: the recipe, an override, or the
default.

Four keys cannot be parsed as given on a machine without the recipe's GPUs, and are shown as
the recipe sets them (marked "as written"), the parse using what ``lfkit recipe check`` uses
(:mod:`lfkit.planning.check` says why): ``deepspeed`` (removed), ``use_cpu`` (true),
``pure_bf16`` (false) and ``output_dir`` (a temporary directory). The model is never loaded:
``model_name_or_path`` is reported with where it would come from (:mod:`lfkit.model_source`).
"""

from __future__ import annotations

import enum
import tempfile
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import typer

AS_WRITTEN = ("deepspeed", "use_cpu", "pure_bf16", "output_dir")
"""Keys the parse replaces (see the module docstring); shown as the recipe and overrides set them."""

# The settings that decide what a run does and costs, in the order shown. Plugin keys follow.
SECTIONS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("model", ("model_name_or_path", "trust_remote_code", "template", "quantization_bit", "flash_attn")),
    (
        "method",
        (
            "stage",
            "finetuning_type",
            "lora_rank",
            "lora_alpha",
            "lora_dropout",
            "lora_target",
            "use_dora",
            "use_rslora",
            "additional_target",
            "freeze_trainable_layers",
            "freeze_trainable_modules",
        ),
    ),
    ("precision", ("bf16", "fp16", "pure_bf16", "compute_dtype", "disable_gradient_checkpointing")),
    ("batch", ("per_device_train_batch_size", "gradient_accumulation_steps", "per_device_eval_batch_size")),
    (
        "schedule",
        (
            "learning_rate",
            "lr_scheduler_type",
            "warmup_ratio",
            "warmup_steps",
            "num_train_epochs",
            "max_steps",
            "weight_decay",
            "max_grad_norm",
            "optim",
            "seed",
        ),
    ),
    (
        "data",
        (
            "dataset",
            "eval_dataset",
            "dataset_dir",
            "cutoff_len",
            "val_size",
            "max_samples",
            "packing",
            "mask_history",
            "preprocessing_num_workers",
        ),
    ),
    (
        "output",
        (
            "output_dir",
            "overwrite_output_dir",
            "logging_steps",
            "save_strategy",
            "eval_strategy",
            "report_to",
        ),
    ),
    ("distributed", ("deepspeed", "use_cpu", "ddp_timeout")),
)
# Shown only when set by the recipe or an override (their defaults say nothing).
ONLY_WHEN_SET = frozenset(
    {"quantization_bit", "additional_target", "max_samples", "eval_dataset", "ddp_timeout", "use_cpu"}
)
METHOD_KEYS = {
    "lora": ("lora_rank", "lora_alpha", "lora_dropout", "lora_target", "use_dora", "use_rslora"),
    "freeze": ("freeze_trainable_layers", "freeze_trainable_modules"),
}


@dataclass(frozen=True)
class Setting:
    """One key of the run: its value and where the value came from."""

    section: str
    key: str
    value: Any
    source: str
    """'recipe', 'override', 'default', 'derived' (computed here) or 'as written' (see AS_WRITTEN)."""


@dataclass(frozen=True)
class EffectiveConfig:
    """What ``llamafactory-cli train RECIPE OVERRIDES`` would run, as LlamaFactory parsed it."""

    recipe: Path
    settings: tuple[Setting, ...]
    model_source: str
    """Where model_name_or_path loads from (local directory, hub id and which hub or mirror)."""
    all_values: dict[str, Any]
    """Every parsed key (for --all)."""


class RecipeShowError(ValueError):
    """The recipe or an override cannot be read or LlamaFactory rejects it (message says which)."""


def merged_recipe(recipe: Path, overrides: list[str]) -> tuple[dict[str, Any], set[str], set[str]]:
    """The recipe with ``key=value`` overrides merged as llamafactory-cli merges them.

    Returns the merged mapping, the keys the recipe file sets and the keys the overrides set.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    bad = [word for word in overrides if "=" not in word or word.startswith("=")]
    if bad:
        raise RecipeShowError(f"overrides are key=value words; not one: {' '.join(bad)}")
    try:
        base = OmegaConf.load(recipe.absolute())
        extra = OmegaConf.from_cli(list(overrides))
        merged = OmegaConf.to_container(OmegaConf.merge(base, extra))
        from_recipe = set(OmegaConf.to_container(base))
        from_overrides = set(OmegaConf.to_container(extra))
    except OmegaConfBaseException as err:
        raise RecipeShowError(f"{recipe}: LlamaFactory's loader (OmegaConf) cannot read it: {err}") from None
    if not isinstance(merged, dict):
        raise RecipeShowError(f"{recipe}: a recipe must be a YAML mapping of keys to values")
    return merged, from_recipe, from_overrides


def _plain(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if type(value).__module__ == "torch":  # torch.dtype
        return str(value).removeprefix("torch.")
    if isinstance(value, list) and len(value) == 1:
        return value[0]
    return value


def parse(recipe: Path, overrides: list[str]) -> EffectiveConfig:
    """Merge and parse the recipe with LlamaFactory's ``get_train_args`` (plugin active)."""
    import shutil

    from lfkit.model_source import describe
    from lfkit.planning.check import _quiet, activate_plugin

    merged, from_recipe, from_overrides = merged_recipe(recipe, overrides)
    activate_plugin()
    from llamafactory.hparams import get_train_args

    args = dict(merged)
    args.pop("deepspeed", None)
    args["use_cpu"] = True
    args["pure_bf16"] = False
    out_dir = tempfile.mkdtemp(prefix="lfkit-recipe-show-")
    args["output_dir"] = out_dir
    try:
        with _quiet():
            parsed = get_train_args(args)
    except Exception as err:  # ValueError / AssertionError from LlamaFactory's dataclasses, mostly
        message = str(err) or type(err).__name__
        raise RecipeShowError(f"LlamaFactory rejects {recipe}: {message}") from None
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)

    values: dict[str, Any] = {}
    declared: dict[str, Any] = {}  # each key's default as its dataclass declares it
    for obj in parsed:  # model, data, training, finetuning, generating arguments
        for f in fields(obj):
            values.setdefault(f.name, _plain(getattr(obj, f.name, None)))
            declared.setdefault(f.name, f.default)
    values["compute_dtype"] = _plain(parsed[0].compute_dtype)

    def source(key: str) -> str:
        if key in from_overrides:
            return "override"
        if key in from_recipe:
            return "recipe"
        return "default"

    settings: list[Setting] = []
    method = values.get("finetuning_type")
    hidden = {k for m, keys in METHOD_KEYS.items() if m != method for k in keys}
    for section, keys in SECTIONS:
        for key in keys:
            if key in hidden or (key in ONLY_WHEN_SET and key not in merged):
                continue
            if key in AS_WRITTEN:
                if key in merged:
                    settings.append(Setting(section, key, merged[key], "as written"))
                else:
                    settings.append(Setting(section, key, _plain(declared.get(key)), "default"))
            elif key == "compute_dtype":
                settings.append(Setting(section, key, values[key], "derived"))
            else:
                settings.append(Setting(section, key, values.get(key), source(key)))
        if section == "batch":
            per_gpu = values["per_device_train_batch_size"] * values["gradient_accumulation_steps"]
            settings.append(Setting(section, "samples per optimizer step, per GPU", per_gpu, "derived"))
    for key in plugin_keys():
        settings.append(Setting("lfkit plugin", key, values.get(key), source(key)))
    model = str(merged.get("model_name_or_path", ""))
    return EffectiveConfig(recipe, tuple(settings), describe(model) if model else "(not set)", values)


def plugin_keys() -> list[str]:
    """The recipe keys the lfkit plugin adds to LlamaFactory's fine-tuning arguments."""
    from llamafactory.hparams.finetuning_args import FinetuningArguments

    from lfkit.plugin.hparams import LfkitFinetuningArguments

    stock = {f.name for f in fields(FinetuningArguments)}
    return [f.name for f in fields(LfkitFinetuningArguments) if f.name not in stock]


def show_command(
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="A LlamaFactory YAML recipe."),
    overrides: list[str] = typer.Argument(
        None, help="key=value overrides, as given to llamafactory-cli train (e.g. learning_rate=1e-4)."
    ),
    show_all: bool = typer.Option(False, "--all", help="Also list every other key LlamaFactory parsed."),
    as_json: bool = typer.Option(False, "--json", help="Print the settings as JSON."),
) -> None:
    """Print the configuration **llamafactory-cli train RECIPE key=value ...** will actually run.

    The recipe and overrides are merged and parsed by LlamaFactory's own parser with the lfkit
    plugin active: method, precision, batch and accumulation, learning-rate schedule, cutoff,
    data, output and the plugin's keys, each marked recipe, override or default, and where the
    model comes from (a local directory, or a hub id from huggingface.co, an HF_ENDPOINT mirror,
    or ModelScope with USE_MODELSCOPE_HUB=1). Nothing is loaded or trained.
    """
    import json

    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    try:
        config = parse(recipe, list(overrides or []))
    except RecipeShowError as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if as_json:
        payload = {
            "recipe": str(config.recipe),
            "model_source": config.model_source,
            "settings": [s.__dict__ for s in config.settings],
        }
        if show_all:
            payload["all"] = config.all_values
        typer.echo(json.dumps(payload, indent=2, default=str))
        return
    console = Console(highlight=False)
    console.print(
        f"[bold]{escape(str(recipe))}[/] as LlamaFactory parses it (bold: set by the recipe or an override)"
    )
    table = Table.grid(padding=(0, 2))
    table.add_column(style="cyan", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_column(style="dim", no_wrap=True)
    previous = None
    for s in config.settings:
        if s.section != previous:
            table.add_row(f"[bold]{s.section}[/]", "", "")
            previous = s.section
        value = escape(str(s.value))
        if s.source in ("recipe", "override"):
            value = f"[bold]{value}[/]"
        table.add_row(f"  {s.key}", value, s.source)
    console.print(table)
    console.print(f"model: {escape(config.model_source)}")
    console.print(
        "[dim]deepspeed, use_cpu, pure_bf16 and output_dir are shown as written: the parse here "
        "replaces them (no GPU); lfkit recipe check checks the DeepSpeed file.[/]"
    )
    if show_all:
        shown = {s.key for s in config.settings}
        rest = Table(title="every other key", title_justify="left", show_edge=False)
        rest.add_column("key", style="cyan")
        rest.add_column("value", overflow="fold")
        for key in sorted(k for k in config.all_values if k not in shown and k not in AS_WRITTEN):
            rest.add_row(key, escape(str(config.all_values[key])))
        console.print(rest)
