"""Which encoder parameters train, for full, freeze and LoRA fine-tuning.

``train_timeseries_modules`` (default true, as in the ChatTS-Training fork) decides whether the
time-series encoder (``ts_encoder``) trains at all; false freezes it for every fine-tuning type,
so its weights stay bit-identical.

- ``finetuning_type: full``: the encoder trains with everything else (false: frozen).
- ``finetuning_type: freeze``: the encoder trains in full next to the unfrozen decoder layers
  (LlamaFactory alone would freeze it, since it is not a decoder layer).
- ``finetuning_type: lora``, two ways:
    * default: LoRA adapters on the encoder's linear layers (the fork's behaviour). They are
      named by full path (``ts_encoder.mlp.0``...), because ChatTS's encoder is an
      ``nn.Sequential`` whose layers are called ``0``, ``2``...: with ``lora_target: all``,
      LlamaFactory would target "0" and PEFT would try to wrap ``model.layers.0``.
    * ``additional_target: ts_encoder``: the encoder trains fully (PEFT ``modules_to_save``,
      saved with the adapter); no LoRA is put on it.
  ``train_timeseries_modules: false`` with ``additional_target: ts_encoder`` is refused as
  contradictory.
"""

from __future__ import annotations

from types import ModuleType

from lfkit.plugin.timeseries.spec import ENCODER_ATTR, is_encoder_param, is_timeseries_model

_PEFT_LAYER_TYPES = ("Linear", "Embedding", "Conv1d", "Conv2d", "Conv3d", "Conv1D")


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


def set_encoder_trainable(model, finetuning_args) -> str:
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
            if not (finetuning_args.pure_bf16 or finetuning_args.use_badam):
                p.data = p.data.to(torch.float32)
        return f"trained fully ({len(params)} tensors)"
    trainable = sum(1 for _, p in params if p.requires_grad)
    how = "fully via additional_target" if encoder_fully_trained_by_peft(finetuning_args) else "with LoRA"
    return f"trained {how} ({trainable} trainable tensors)"


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
        model = original_init(config, model, model_args, finetuning_args, is_trainable)
        from llamafactory.extras import logging

        summary = set_encoder_trainable(model, finetuning_args)
        logger = logging.get_logger("llamafactory.lfkit.timeseries")  # shown with LlamaFactory's own logs
        logger.info_rank0(f"lfkit: time-series encoder {summary}.")
        return model

    module.patch_target_modules = patch_target_modules
    module.init_adapter = init_adapter
    module._lfkit_timeseries = True
