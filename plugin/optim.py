"""Optimizer parameter groups: the encoder's own learning rate, and an audit file per run.

``timeseries_sft_lr`` (the ChatTS-Training fork's key) gives the time-series encoder's trainable
parameters their own learning rate. The optimizer LlamaFactory/transformers built is taken as
is and every group holding encoder parameters is split in two: the encoder's share moves to a
new group with the same options (so the weight-decay split stays: ``timeseries_decay`` and
``timeseries_no_decay``) and the group's lr scaled by ``timeseries_sft_lr / learning_rate``. A
plain group runs at ``learning_rate``, so its encoder share gets ``timeseries_sft_lr``; a LoRA+
group (``loraplus_lr_ratio``: ``lora_B`` at ``ratio * learning_rate``) keeps its ratio, at
``ratio * timeseries_sft_lr``. The split happens before the scheduler exists, so the scheduler
records each group's own base lr and warms up / decays the encoder's lr from it exactly as it
does the global one. Unset, nothing is split: the encoder trains at ``learning_rate`` in the
usual groups.

The split needs an optimizer that transformers builds from named parameters. It is refused,
with what to change, where that is not so (:func:`check_timeseries_lr_supported`): a DeepSpeed
config with an ``optimizer`` block (DeepSpeed then builds its own and ``create_optimizer`` never
runs) and FSDP with flat parameters (``use_orig_params: false``: one tensor mixes encoder and
decoder weights).

Every run (with or without the key) writes ``lfkit_param_groups.json`` into ``output_dir``: for
each group its name, number of tensors and parameters, lr and weight decay, as built, and for
a ChatTS model how each encoder module trains (``lora``, ``full`` or ``frozen``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lfkit.plugin.params import param_numel
from lfkit.plugin.timeseries.adapter import encoder_training
from lfkit.plugin.timeseries.spec import is_encoder_param

from lfkit.atomic import write_text

PARAM_GROUPS_FILE = "lfkit_param_groups.json"
ENCODER_GROUP_PREFIX = "timeseries_"
_NAME_KEY = "lfkit_group"


def _base_name(group: dict, decay: set[int]) -> str:
    """``decay`` / ``no_decay`` by the group's members (transformers puts biases and norms in no_decay)."""
    params = group["params"]
    if params:
        return "decay" if sum(id(p) in decay for p in params) * 2 >= len(params) else "no_decay"
    return "decay" if group.get("weight_decay", 0.0) else "no_decay"


def decay_ids(model, decay_names) -> set[int]:
    """Ids of the parameters transformers' Trainer would put in weight-decay groups."""
    names = set(decay_names)
    return {id(p) for n, p in model.named_parameters() if n in names}


def check_timeseries_lr_supported(
    timeseries_sft_lr: float | None,
    deepspeed_config: dict | None,
    deepspeed_source: str = "the DeepSpeed config",
    fsdp_flat_params: bool = False,
) -> None:
    """Refuse a ``timeseries_sft_lr`` that the run's optimizer setup would silently ignore."""
    if timeseries_sft_lr is None:
        return
    if deepspeed_config is not None and "optimizer" in deepspeed_config:
        raise ValueError(
            f'timeseries_sft_lr is set but {deepspeed_source} has an "optimizer" block: DeepSpeed then '
            "builds the optimizer itself, one lr for all parameters, and the encoder's groups are never "
            'made. Remove the "optimizer" block (transformers then builds AdamW with lfkit\'s groups and '
            "DeepSpeed wraps it; LlamaFactory's examples/deepspeed configs have none) or unset "
            "timeseries_sft_lr."
        )
    if fsdp_flat_params:
        raise ValueError(
            "timeseries_sft_lr is set but FSDP runs with use_orig_params: false, whose flat parameters mix "
            "encoder and decoder weights in one tensor, so the encoder cannot get its own lr. Set "
            "fsdp_config: {use_orig_params: true} (fsdp_use_orig_params: true in an accelerate config) or "
            "unset timeseries_sft_lr."
        )


def check_trainer_supports_timeseries_lr(trainer) -> None:
    """:func:`check_timeseries_lr_supported` for a Trainer's DeepSpeed and FSDP settings."""
    args = trainer.args
    ds_config, source = None, "the DeepSpeed config"
    if getattr(args, "deepspeed", None):
        hf_config = getattr(args, "hf_deepspeed_config", None)
        if hf_config is not None:
            ds_config = hf_config.config
        elif isinstance(args.deepspeed, dict):
            ds_config = args.deepspeed
        else:
            ds_config = json.loads(Path(args.deepspeed).read_text(encoding="utf-8"))
        if isinstance(args.deepspeed, str):
            source = f"the DeepSpeed config {args.deepspeed}"
    flat = False
    if getattr(trainer, "is_fsdp_enabled", False):
        plugin = trainer.accelerator.state.fsdp_plugin
        flat = getattr(plugin, "fsdp_version", 1) == 1 and not getattr(plugin, "use_orig_params", False)
    check_timeseries_lr_supported(
        getattr(trainer.finetuning_args, "timeseries_sft_lr", None), ds_config, source, fsdp_flat_params=flat
    )


def apply_timeseries_lr(optimizer, model, finetuning_args, decay: set[int], learning_rate: float) -> int:
    """Move encoder parameters into their own groups (see module docstring); returns how many tensors.

    ``decay`` holds the ids of weight-decayed parameters (:func:`decay_ids`), used to name groups;
    ``learning_rate`` is the global one, against which each group's own lr ratio is kept.
    """
    lr = getattr(finetuning_args, "timeseries_sft_lr", None)
    if lr is None:
        return 0
    if getattr(finetuning_args, "use_badam", False):
        raise ValueError("timeseries_sft_lr cannot be combined with use_badam (BAdam builds its own blocks).")
    names = {id(p): n for n, p in model.named_parameters()}
    moved = 0
    for group in list(optimizer.param_groups):
        encoder = [p for p in group["params"] if is_encoder_param(names.get(id(p), ""))]
        if not encoder:
            continue
        rest = [p for p in group["params"] if not is_encoder_param(names.get(id(p), ""))]
        options = {k: v for k, v in group.items() if k not in ("params", "initial_lr")}
        options[_NAME_KEY] = ENCODER_GROUP_PREFIX + _base_name(group, decay)
        if rest:
            group["params"] = rest
        else:
            optimizer.param_groups.remove(group)
        optimizer.add_param_group({**options, "params": encoder, "lr": group["lr"] * lr / learning_rate})
        moved += len(encoder)
    if not moved and any("flat_param" in n for n in names.values()):
        raise ValueError(
            "timeseries_sft_lr cannot find the time-series encoder among FSDP flat parameters; set "
            "fsdp_config: {use_orig_params: true} or unset timeseries_sft_lr."
        )
    if not moved:
        from llamafactory.extras import logging

        logging.get_logger("llamafactory.lfkit.optim").warning_rank0(
            f"timeseries_sft_lr={lr} is set but the optimizer holds no time-series encoder parameters "
            "(no ts_encoder, or train_timeseries_modules: false); it has no effect."
        )
    return moved


def describe_groups(optimizer, decay: set[int]) -> list[dict]:
    """One entry per optimizer group: name, tensors, parameters, lr, weight_decay."""
    rows, seen = [], {}
    for group in optimizer.param_groups:
        name = group.get(_NAME_KEY) or _base_name(group, decay)
        seen[name] = seen.get(name, 0) + 1
        if seen[name] > 1:
            name = f"{name}_{seen[name]}"
        rows.append(
            {
                "group": name,
                "tensors": len(group["params"]),
                "parameters": sum(param_numel(p) for p in group["params"]),
                "lr": float(group["lr"]),
                "weight_decay": float(group.get("weight_decay", 0.0)),
            }
        )
    return rows


def write_param_groups(
    output_dir: str | os.PathLike,
    optimizer,
    finetuning_args,
    learning_rate: float,
    decay: set[int],
    model=None,
) -> Path:
    """Write ``lfkit_param_groups.json`` atomically (temp file + rename) and return its path.

    With ``model``, a ChatTS model's ``timeseries_encoder`` entry maps each encoder module to how it trains.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "optimizer": type(optimizer).__name__,
        "learning_rate": float(learning_rate),
        "timeseries_sft_lr": getattr(finetuning_args, "timeseries_sft_lr", None),
        "train_timeseries_modules": getattr(finetuning_args, "train_timeseries_modules", True),
        "groups": describe_groups(optimizer, decay),
    }
    if model is not None and (encoder := encoder_training(model)):
        payload["timeseries_encoder"] = encoder
    return write_text(out / PARAM_GROUPS_FILE, json.dumps(payload, indent=2) + "\n")
