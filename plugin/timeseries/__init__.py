"""The time-series (ChatTS) modality for LlamaFactory, added by patches instead of a fork.

How a ChatTS row travels (each step in its own module):

1. ``dataset_info.json`` declares ``"columns": {"timeseries": "timeseries"}`` on an alpaca,
   sharegpt or openai dataset; :mod:`.dataset` checks each row (finite values, non-empty series,
   placeholder count == series count, placeholders in user turns only) and carries it along.
2. :mod:`.processing` writes each series' offset/scaling text before its bare ``<ts><ts/>``
   (with the checkpoint's own processor; the paper-era fallback text only when
   ``timeseries_legacy_prompt`` asks for it, see :mod:`.mm_plugin`), tokenises with a
   ``cutoff_len`` that accounts for the patches, and never cuts a placeholder: rows it would
   cut are reported all at once, or dropped and counted (``timeseries_drop_overlong``).
3. :mod:`.collator` pads the batch's series into the ``[series, 2*max_len, 1]`` value+mask
   tensor passed to the model as ``timeseries``; text-only batches (training and generation)
   get a masked dummy series so the encoder runs on every rank (ZeRO-3 / DDP).
4. The model's own forward (``trust_remote_code: true``) replaces each ``<ts>`` ``<ts/>`` pair by
   ``ceil(valid_length / patch_size)`` encoder embeddings; token ids come from its config
   (:mod:`.spec`).
5. :mod:`.adapter` applies ``train_timeseries_modules`` for full, freeze and LoRA;
   :mod:`lfkit.plugin.optim` gives the encoder its ``timeseries_sft_lr`` parameter groups.
6. Loading: the published checkpoints' remote code was written for transformers 4;
   :mod:`.compat` (and :mod:`.generation`) fix what breaks on transformers 5 right after
   LlamaFactory loads the model.

Use ``template: chatts``. Nothing here changes a run whose data has no ``timeseries`` column and
whose template is not ``chatts``. This package's ``__init__`` stays import-light: the patch
entry points below import their module only when LlamaFactory's module is imported.
"""

from __future__ import annotations

from types import ModuleType


def patch_parser(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.dataset import patch_parser as patch

    patch(module)


def patch_converter(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.dataset import patch_converter as patch

    patch(module)


def patch_mm_plugin(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.mm_plugin import patch_mm_plugin as patch

    patch(module)


def patch_template(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.mm_plugin import patch_template as patch

    patch(module)


def patch_supervised(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.processing import patch_supervised as patch

    patch(module)


def patch_unsupervised(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.processing import patch_unsupervised as patch

    patch(module)


def patch_loader(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.processing import patch_loader as patch

    patch(module)


def patch_collator(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.collator import patch_collator as patch

    patch(module)


def patch_model_loader(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.compat import patch_model_loader as patch

    patch(module)


def patch_adapter(module: ModuleType) -> None:
    from lfkit.plugin.timeseries.adapter import patch_adapter as patch

    patch(module)


PATCHES = {
    "llamafactory.data.parser": [patch_parser],
    "llamafactory.data.converter": [patch_converter],
    "llamafactory.data.mm_plugin": [patch_mm_plugin],
    "llamafactory.data.template": [patch_template],
    "llamafactory.data.processor.supervised": [patch_supervised],
    "llamafactory.data.processor.unsupervised": [patch_unsupervised],
    "llamafactory.data.loader": [patch_loader],
    "llamafactory.data.collator": [patch_collator],
    "llamafactory.model.adapter": [patch_adapter],
    "llamafactory.model.loader": [patch_model_loader],
}
