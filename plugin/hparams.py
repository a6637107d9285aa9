"""The recipe keys lfkit adds to LlamaFactory, each documented where it is declared.

They extend LlamaFactory's ``FinetuningArguments`` through a dataclass subclass that
:mod:`lfkit.plugin.patches` hands to LlamaFactory's own parser. Every key defaults to
LlamaFactory's behaviour, so a recipe that sets none of them trains exactly as it would
without lfkit. The timeseries keys carry the names and meaning of the ChatTS-Training
fork, so its users' recipes work unchanged.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from types import ModuleType

from lfkit.plugin.errors import ConfigError
from llamafactory.hparams.finetuning_args import FinetuningArguments


@dataclass
class LfkitFinetuningArguments(FinetuningArguments):
    """LlamaFactory's fine-tuning arguments plus lfkit's keys."""

    timeseries_sft_lr: float | None = field(
        default=None,
        metadata={
            "help": (
                "Learning rate for the time-series encoder's trainable parameters (ChatTS ts_encoder, "
                "its LoRA adapters or its additional_target copy), as their own optimizer parameter groups "
                "(timeseries_decay / timeseries_no_decay) that keep the weight-decay split and follow the "
                "scheduler from this base lr. Unset = the global learning_rate. Must be > 0. The groups "
                "built are written to lfkit_param_groups.json in output_dir."
            )
        },
    )
    train_timeseries_modules: bool = field(
        default=True,
        metadata={
            "help": (
                "Whether the time-series encoder (ChatTS ts_encoder) is trained; false freezes it for full, "
                "freeze and LoRA tuning (its weights stay bit-identical). With LoRA, true puts LoRA on the "
                "encoder's linear layers, or trains it fully when additional_target names ts_encoder."
            )
        },
    )
    # --- ChatTS data keys (read by lfkit.plugin.timeseries through parsed_finetuning_args()) ---
    timeseries_drop_overlong: bool = field(
        default=False,
        metadata={
            "help": (
                "What to do with ChatTS rows whose time-series placeholders cutoff_len would cut (a series "
                "is never cut silently). false (default): stop before training with one error that counts "
                "them, names the first few (file and row) and gives the cutoff_len that fits them all. "
                "true: drop them and log how many were dropped, per dataset."
            )
        },
    )
    timeseries_legacy_prompt: bool = field(
        default=False,
        metadata={
            "help": (
                "Allow ChatTS series to be written with the paper-era text "
                "'[Value Offset: ..|Value Scaling: ..]' when the checkpoint's own processor cannot be "
                "loaded. false (default): that is an error, since current ChatTS checkpoints were trained "
                "with their processor's longer '[offset=..|scaling=..|length=..|...]' text and a model must "
                "see the format it was trained on."
            )
        },
    )
    # --- end of ChatTS data keys ---
    kl_beta: float = field(
        default=0.0,
        metadata={
            "help": (
                "Weight of KL(reference || trained) added to the sft cross-entropy, both per response token "
                "(lfkit.plugin.kl_loss says why this direction). 0 = LlamaFactory's plain cross-entropy. "
                "Larger keeps the model closer to the reference: more of its fluency kept, less style "
                "learned. Config guide bands: 0.05-0.08 light, 0.1-0.15 balanced, 0.15-0.2 strong. Logs "
                "ce_loss and kl_loss (loss = ce_loss + kl_beta * kl_loss). sft only; not with "
                "use_dft_loss/use_eaft_loss/use_asft_loss."
            )
        },
    )
    kl_ref_model: str | None = field(
        default=None,
        metadata={
            "help": (
                "Reference model for kl_beta (a path or hub id), loaded frozen: one more copy of the weights "
                "in memory (2 bytes per parameter in bf16/fp16, per GPU unless ZeRO-3/FSDP shards it). "
                "Unset: with LoRA the reference is the same model with its adapters disabled (no copy); "
                "with freeze/full a frozen copy of model_name_or_path is loaded."
            )
        },
    )
    lfkit_run_record: bool = field(
        default=True,
        metadata={
            "help": "Write lfkit_run.json (hardware, peak memory, versions, wall time, recipe) at the end."
        },
    )
    lfkit_summary: bool = field(
        default=True,
        metadata={
            "help": (
                "When the run ends, write lfkit's plots (loss with eval, the stage's own metrics, learning "
                "rate, grad norm) into output_dir/lfkit_plots/ and a one-run summary, lfkit_summary.md (the "
                "report of `lfkit results report`), for every stage; on the process that writes output_dir. "
                "A summary that fails is a warning, never a failed run. false: LlamaFactory's files only."
            )
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.timeseries_sft_lr is not None and not (
            math.isfinite(self.timeseries_sft_lr) and self.timeseries_sft_lr > 0
        ):
            raise ValueError(f"timeseries_sft_lr must be > 0 (or unset), got {self.timeseries_sft_lr}.")
        if not (math.isfinite(self.kl_beta) and self.kl_beta >= 0):
            raise ValueError(f"kl_beta must be >= 0, got {self.kl_beta}.")
        if self.kl_beta > 0 and self.stage != "sft":
            raise ValueError(f"kl_beta applies to stage: sft only, got stage: {self.stage}.")
        if self.kl_beta > 0 and self.pissa_init and self.kl_ref_model is None:
            raise ConfigError(
                "kl_beta with pissa_init needs kl_ref_model: PiSSA moves each weight's principal "
                "components into the adapters, so the model with its adapters disabled is the PiSSA "
                "residual, not the base model. Set kl_ref_model to the base model (one more frozen copy) "
                "or drop pissa_init."
            )
        _PARSED["finetuning_args"] = self  # for the data pipeline, see parsed_finetuning_args()


# LlamaFactory hands its data pipeline DataArguments only; the ChatTS data keys above are read
# there from the arguments this process parsed last (the parser builds them before any dataset).
_PARSED: dict[str, LfkitFinetuningArguments] = {}


def parsed_finetuning_args() -> LfkitFinetuningArguments | None:
    """The LfkitFinetuningArguments this process parsed last, or None before any parse."""
    return _PARSED.get("finetuning_args")


def install_into_parser(parser: ModuleType) -> None:
    """Make LlamaFactory's parser module build :class:`LfkitFinetuningArguments`.

    The parser stays LlamaFactory's own HfArgumentParser with ``allow_extra_keys=False``,
    so a misspelt key is still rejected; only the declared lfkit keys become valid.
    Idempotent: classes already swapped stay swapped.
    """
    for name in ("_TRAIN_ARGS", "_INFER_ARGS", "_EVAL_ARGS", "_TRAIN_MCA_ARGS"):
        classes = getattr(parser, name, None)
        if classes:
            swapped = [LfkitFinetuningArguments if c is FinetuningArguments else c for c in classes]
            setattr(parser, name, swapped)


# Importing this module first imports llamafactory.hparams, whose parser the hook patches while
# this module is still half-initialised; the patch then leaves the swap to this line.
if "llamafactory.hparams.parser" in sys.modules:
    install_into_parser(sys.modules["llamafactory.hparams.parser"])
