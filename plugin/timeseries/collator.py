"""Batching series: the padded value+mask tensor, and a dummy series for text-only batches.

LlamaFactory's ``MultiModalDataCollatorForSeq2Seq`` would hand the raw ``timeseries`` lists to
the tokenizer's padding and fail. The patch takes them out of each feature first, lets
LlamaFactory pad the tokens, then adds ``batch["timeseries"]``: every series of the batch in
order, normalised and zero-padded to the longest one, ``[series, 2*max_len, 1]`` (odd rows are
the mask channel, so padding is marked 0), in the trainer's compute dtype.

Text-only batches and ZeRO-3: with ``template: chatts``, a batch with no series gets one dummy
series (``2 * patch_size`` zeros) and a ``<ts><ts/>`` pair with attention mask 0 and labels
ignored in its first row, the way LlamaFactory injects a fake image for VLMs. The encoder then
runs on every rank for every batch, so under ZeRO-3 each rank joins the same parameter
all-gathers (a rank skipping the encoder would leave the others waiting forever) and under DDP
the encoder's parameters always get a (zero) gradient. The dummy's 2 patches replace exactly
its 2 tokens, and it sits where padding goes, masked:

* right padding (training, evaluation): after the row's last token. Causal attention: no real
  token can see it, and its labels are ignored, so the loss is unchanged.
* left padding (generation, ``predict_with_generate``): before the row's first token, inside
  the left padding, so the generated tokens still follow the prompt directly; masked keys are
  invisible to every query and position ids count only attended positions, so the output is
  unchanged. The series reach the model only in the generation's first forward
  (:mod:`lfkit.plugin.timeseries.generation`), so every rank runs the encoder exactly once per
  batch there too; the dummy is part of the prompt that LlamaFactory strips from predictions.
"""

from __future__ import annotations

from types import ModuleType

from lfkit.plugin.timeseries.dataset import decode_payload
from lfkit.plugin.timeseries.mm_plugin import is_timeseries_plugin
from lfkit.plugin.timeseries.processing import FEATURE
from lfkit.plugin.timeseries.spec import spec_for_tokenizer

IGNORE_INDEX = -100


def add_dummy_series(features: list[dict], spec, left: bool = False) -> list[list[float]]:
    """Put a masked ``<ts><ts/>`` pair at the padding end of the first row; returns its dummy series."""
    first = features[0]

    def extend(values, extra):
        return list(extra) + list(values) if left else list(values) + list(extra)

    first["input_ids"] = extend(first["input_ids"], [spec.start_id, spec.end_id])
    first["attention_mask"] = extend(first["attention_mask"], [0, 0])
    if "labels" in first:
        first["labels"] = extend(first["labels"], [IGNORE_INDEX, IGNORE_INDEX])
    return [[0.0] * (2 * spec.patch_size)]


def collate(collator, features: list[dict], original):
    import torch

    plugin = collator.template.mm_plugin if collator.template is not None else None
    payloads = [f.pop(FEATURE, None) for f in features]
    series = [s for p in payloads for s in decode_payload(p)[0]]
    if not is_timeseries_plugin(plugin):
        if series:
            raise ValueError(
                "The batch has time series but the template cannot place them; use `template: chatts`."
            )
        return original(collator, features)
    if not series:
        left = collator.tokenizer.padding_side == "left"
        series = add_dummy_series(features, spec_for_tokenizer(collator.tokenizer), left=left)
    batch = original(collator, features)
    if series:
        tensor = plugin.encode_timeseries(series, collator.processor)
        dtype = getattr(collator, "compute_dtype", None)
        batch[FEATURE] = tensor.to(
            dtype if isinstance(dtype, torch.dtype) and dtype.is_floating_point else torch.float32
        )
    return batch


def patch_collator(module: ModuleType) -> None:
    cls = module.MultiModalDataCollatorForSeq2Seq
    if getattr(cls, "_lfkit_timeseries", False):
        return
    original = cls.__call__

    def __call__(self, features):
        plugin = self.template.mm_plugin if self.template is not None else None
        if not is_timeseries_plugin(plugin) and not any(FEATURE in f for f in features):
            return original(self, features)
        return collate(self, features, original)

    cls.__call__ = __call__
    cls._lfkit_timeseries = True
