"""Which encoder parameters train, for full, freeze and LoRA fine-tuning.

``train_timeseries_modules`` (default true, as in the ChatTS-Training fork) decides whether the
time-series encoder (``ts_encoder``) trains at all; false freezes it for every fine-tuning type,
so its weights stay bit-identical.

- ``finetuning_type: full``: the encoder trains with everything else (false: frozen).
- ``finetuning_type: freeze``: the encoder trains in full next to the unfrozen decoder layers
  (LlamaFactory alone would freeze it, since it is not a decoder layer).
- ``finetuning_type: lora``, two ways:
    * default: LoRA adapters on the encoder's linear layers (the fork's behaviour), and every
      other encoder module that holds parameters (ChatTS's ``position_embedding``, an
      ``nn.Embedding``; a ``LayerNorm`` where the config asks for one) trained in full as a PEFT
      ``modules_to_save`` copy, saved with the adapter. They are small (ChatTS-14B's position
      embedding is ``(max_sequence_length + 1) x embedding_dim``), and an adapter on an
      embedding of positions would only restrict it. The linears are named by full path
      (``ts_encoder.mlp.0``...), because ChatTS's encoder is an ``nn.Sequential`` whose layers
      are called ``0``, ``2``...: with ``lora_target: all``, LlamaFactory would target "0" and
      PEFT would try to wrap ``model.layers.0``.
    * ``additional_target: ts_encoder``: the encoder trains fully (PEFT ``modules_to_save``,
      saved with the adapter); no LoRA is put on it.
  ``train_timeseries_modules: false`` with ``additional_target: ts_encoder`` is refused as
  contradictory.

Full and freeze tuning cast the encoder's trainable weights to float32 by LlamaFactory's own
rule (:func:`cast_to_fp32`): not with ``pure_bf16`` or BAdam, and not under DeepSpeed ZeRO-3
(without quantization), whose parameters are partitioned placeholders while the real shards
stay in the training dtype and DeepSpeed keeps fp32 master weights itself.

:func:`encoder_training` says how each encoder module trains (``lora``, ``full`` or ``frozen``);
``lfkit_param_groups.json`` records it.
"""

from __future__ import annotations

import copy
import re
from types import ModuleType

from lfkit.plugin.timeseries.spec import ENCODER_ATTR, is_encoder_param, is_timeseries_model

_PEFT_LAYER_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")
# PEFT's infixes inside a wrapped module's parameter names, and its wrapper's prefix
_PEFT_INFIX = re.compile(
    r"\.(base_layer|original_module|modules_to_save\.[^.]+|lora_(A|B|embedding_A|embedding_B|magnitude_vector)(\.[^.]+)?)"
    r"(?=\.|$)"
)
_PEFT_PREFIX = "base_model.model."


def _train_encoder(finetuning_args) -> bool:
    return bool(getattr(finetuning_args, "train_timeseries_modules", True))


def encoder_fully_trained_by_peft(finetuning_args) -> bool:
    return any(t.split(".")[-1] == ENCODER_ATTR for t in (finetuning_args.additional_target or []))


def lora_targets(model, finetuning_args, targets: list[str]) -> list[str]:
    """LoRA target modules with the encoder handled explicitly (see module docstring)."""
    modules = dict(model.named_modules())
    resolved: list[str] = []
    for target in targets:
        matches = [n for n in modules if n == target or n.endswith("." + target)]
        in_encoder = [n for n in matches if is_encoder_param(n)]
        if not in_encoder:
            resolved.append(target)
            continue
        resolved += [
            n for n in matches if not is_encoder_param(n) and type(modules[n]).__name__ in _PEFT_LAYER_TYPES
        ]
    if _train_encoder(finetuning_args) and not encoder_fully_trained_by_peft(finetuning_args):
        resolved += [n for n, m in modules.items() if is_encoder_param(n) and type(m).__name__ == "Linear"]
    return list(dict.fromkeys(resolved))


def encoder_modules_to_save(model) -> list[str]:
    """Encoder modules that hold parameters of their own but are not linears: trained in full under LoRA."""
    return [
        name
        for name, module in model.named_modules()
        if is_encoder_param(name)
        and type(module).__name__ != "Linear"
        and any(True for _ in module.parameters(recurse=False))
    ]


def cast_to_fp32(model_args, finetuning_args, zero3: bool | None = None) -> bool:
    """LlamaFactory's rule for upcasting trainable weights (``init_adapter``), for the encoder too."""
    if finetuning_args.pure_bf16 or finetuning_args.use_badam:
        return False
    if zero3 is None:
        from transformers.integrations import is_deepspeed_zero3_enabled

        zero3 = is_deepspeed_zero3_enabled()
    return not (getattr(model_args, "quantization_bit", None) is None and zero3)


def set_encoder_trainable(model, finetuning_args, cast: bool) -> str:
    """Apply ``train_timeseries_modules`` after LlamaFactory set up the adapter; returns a summary."""
    import torch

    params = [(n, p) for n, p in model.named_parameters() if is_encoder_param(n)]
    if not _train_encoder(finetuning_args):
        for _, p in params:
            p.requires_grad_(False)
        return f"frozen ({len(params)} tensors)"
    if finetuning_args.finetuning_type in ("full", "freeze"):
        for _, p in params:
            p.requires_grad_(True)
            if cast:
                p.data = p.data.to(torch.float32)
        kept = "" if cast else ", kept in the loaded dtype"
        return f"trained fully ({len(params)} tensors{kept})"
    trainable = sum(1 for _, p in params if p.requires_grad)
    if encoder_fully_trained_by_peft(finetuning_args):
        return f"trained fully via additional_target ({trainable} trainable tensors)"
    return f"trained with LoRA on its linears, the rest in full ({trainable} trainable tensors)"


def encoder_training(model) -> dict[str, str]:
    """How each encoder module trains: ``lora`` (adapters), ``full`` (its own weights) or ``frozen``."""
    how: dict[str, str] = {}
    for name, p in model.named_parameters():
        if not is_encoder_param(name):
            continue
        module = _PEFT_INFIX.sub("", name.removeprefix(_PEFT_PREFIX)).rsplit(".", 1)[0]
        kind = "lora" if ".lora_" in name else "full"
        if p.requires_grad and how.get(module) != "lora":
            how[module] = kind
        else:
            how.setdefault(module, "frozen")
    return how


def _with_encoder_modules_to_save(model, finetuning_args):
    """``finetuning_args`` whose ``additional_target`` also names the encoder's non-linear modules."""
    if (
        finetuning_args.finetuning_type != "lora"
        or not _train_encoder(finetuning_args)
        or encoder_fully_trained_by_peft(finetuning_args)
    ):
        return finetuning_args
    extra = [m for m in encoder_modules_to_save(model) if m not in (finetuning_args.additional_target or [])]
    if not extra:
        return finetuning_args
    args = copy.copy(finetuning_args)
    args.additional_target = list(finetuning_args.additional_target or []) + extra
    return args


def patch_adapter(module: ModuleType) -> None:
    if getattr(module, "_lfkit_timeseries", False):
        return
    original_targets, original_init = module.patch_target_modules, module.init_adapter

    def patch_target_modules(model, finetuning_args, target_modules):
        targets = original_targets(model, finetuning_args, target_modules)
        return lora_targets(model, finetuning_args, list(targets)) if is_timeseries_model(model) else targets

    def init_adapter(config, model, model_args, finetuning_args, is_trainable):
        if not (is_trainable and is_timeseries_model(model)):
            return original_init(config, model, model_args, finetuning_args, is_trainable)
        if not _train_encoder(finetuning_args) and encoder_fully_trained_by_peft(finetuning_args):
            raise ValueError(
                "train_timeseries_modules: false freezes the time-series encoder but additional_target "
                f"names {ENCODER_ATTR} (train it fully); choose one."
            )
        adapter_args = _with_encoder_modules_to_save(model, finetuning_args)
        model = original_init(config, model, model_args, adapter_args, is_trainable)
        from llamafactory.extras import logging

        summary = set_encoder_trainable(model, finetuning_args, cast_to_fp32(model_args, finetuning_args))
        logger = logging.get_logger("llamafactory.lfkit.timeseries")  # shown with LlamaFactory's own logs
        logger.info_rank0(f"lfkit: time-series encoder {summary}.")
        return model

    module.patch_target_modules = patch_target_modules
    module.init_adapter = init_adapter
    module._lfkit_timeseries = True
