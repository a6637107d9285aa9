"""The recipe keys lfkit adds to LlamaFactory, each documented where it is declared.

They extend LlamaFactory's ``FinetuningArguments`` through a dataclass subclass that
:mod:`lfkit.plugin.patches` hands to LlamaFactory's own parser. Every key defaults to
LlamaFactory's behaviour, so a recipe that sets none of them trains exactly as it would
without lfkit. The timeseries keys carry the names and meaning of the ChatTS-Training
fork, so its users' recipes work unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from llamafactory.hparams.finetuning_args import FinetuningArguments


@dataclass
class LfkitFinetuningArguments(FinetuningArguments):
    """LlamaFactory's fine-tuning arguments plus lfkit's keys."""

    timeseries_sft_lr: float | None = field(
        default=None,
        metadata={
            "help": (
                "Learning rate for the time-series encoder's parameters (ChatTS), as their own optimizer "
                "parameter groups that keep the weight-decay split and follow the scheduler from this base lr. "
                "Unset = the global learning_rate. Must be > 0."
            )
        },
    )
    train_timeseries_modules: bool = field(
        default=True,
        metadata={"help": "Whether the time-series encoder is trained (false freezes it: its weights stay bit-identical)."},
    )
    kl_beta: float = field(
        default=0.0,
        metadata={
            "help": (
                "Weight of the KL(trained || reference) penalty on response tokens added to the sft loss. "
                "0 = LlamaFactory's plain cross-entropy. 0.05-0.08 light style, 0.1-0.15 balanced, "
                "0.15-0.2 strong style at some risk to fluency."
            )
        },
    )
    kl_ref_model: str | None = field(
        default=None,
        metadata={
            "help": (
                "Reference model for kl_beta with freeze/full tuning (a path or hub id). Unset = a frozen copy "
                "of model_name_or_path (one more copy of the weights in memory). With LoRA the reference is "
                "the same model with adapters disabled and this key is ignored."
            )
        },
    )
    lfkit_run_record: bool = field(
        default=True,
        metadata={"help": "Write lfkit_run.json (hardware, peak memory, versions, wall time, recipe) at the end."},
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
