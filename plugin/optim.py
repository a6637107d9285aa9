"""Optimizer parameter groups: the encoder's own learning rate, and an audit file per run.

``timeseries_sft_lr`` (the ChatTS-Training fork's key) gives the time-series encoder's trainable
parameters their own learning rate. The optimizer LlamaFactory/transformers built is taken as
is and every group holding encoder parameters is split in two: the encoder's share moves to a
new group with the same options (so the weight-decay split stays: ``timeseries_decay`` and
``timeseries_no_decay``) and ``lr = timeseries_sft_lr``. The split happens before the scheduler
exists, so the scheduler records each group's own base lr and warms up / decays the encoder's
lr from ``timeseries_sft_lr`` exactly as it does the global one. Unset, nothing is split: the
encoder trains at ``learning_rate`` in the usual groups.

Every run (with or without the key) writes ``lfkit_param_groups.json`` into ``output_dir``: for
each group its name, number of tensors and parameters, lr and weight decay, as built.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from lfkit.plugin.params import param_numel
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


def apply_timeseries_lr(optimizer, model, finetuning_args, decay: set[int]) -> int:
    """Move encoder parameters into their own groups at ``timeseries_sft_lr``; returns how many tensors.

    ``decay`` holds the ids of weight-decayed parameters (:func:`decay_ids`), used to name groups.
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
        optimizer.add_param_group({**options, "params": encoder, "lr": lr})
        moved += len(encoder)
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
    output_dir: str | os.PathLike, optimizer, finetuning_args, learning_rate: float, decay: set[int]
) -> Path:
    """Write ``lfkit_param_groups.json`` atomically (temp file + rename) and return its path."""
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    payload = {
        "optimizer": type(optimizer).__name__,
        "learning_rate": float(learning_rate),
        "timeseries_sft_lr": getattr(finetuning_args, "timeseries_sft_lr", None),
        "train_timeseries_modules": getattr(finetuning_args, "train_timeseries_modules", True),
        "groups": describe_groups(optimizer, decay),
    }
    return write_text(out / PARAM_GROUPS_FILE, json.dumps(payload, indent=2) + "\n")
