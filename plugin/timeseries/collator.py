"""Batching series: the padded value+mask tensor, and a dummy series for text-only batches.

LlamaFactory's ``MultiModalDataCollatorForSeq2Seq`` would hand the raw ``timeseries`` lists to
the tokenizer's padding and fail. The patch takes them out of each feature first, lets
LlamaFactory pad the tokens, then adds ``batch["timeseries"]``: every series of the batch in
order, normalised and zero-padded to the longest one, ``[series, 2*max_len, 1]`` (odd rows are
the mask channel, so padding is marked 0), in the trainer's compute dtype.

Text-only batches and ZeRO-3: with ``template: chatts``, a batch with no series gets one dummy
series (``2 * patch_size`` zeros) and a ``<ts><ts/>`` pair appended after the last token of its
first row with attention mask 0 and labels ignored, the way LlamaFactory injects a fake image
for VLMs. The encoder then runs on every rank for every batch, so under ZeRO-3 each rank joins
the same parameter all-gathers (a rank skipping the encoder would leave the others waiting
forever) and under DDP the encoder's parameters always get a (zero) gradient. The dummy adds
nothing to the loss: its 2 patches replace exactly its 2 tokens, they sit after every real
token of the row (causal attention: no real token can see them) and their labels are ignored.
This is done only with right padding (training and evaluation); for left-padded generation
batches no dummy is added.
"""

from __future__ import annotations

from types import ModuleType

from lfkit.plugin.timeseries.dataset import decode_payload
from lfkit.plugin.timeseries.mm_plugin import is_timeseries_plugin
from lfkit.plugin.timeseries.processing import FEATURE
from lfkit.plugin.timeseries.spec import spec_for_tokenizer

IGNORE_INDEX = -100


def add_dummy_series(features: list[dict], spec) -> list[list[float]]:
    """Append a masked ``<ts><ts/>`` pair to the first row; returns the dummy series for it."""
    first = features[0]
    first["input_ids"] = list(first["input_ids"]) + [spec.start_id, spec.end_id]
    first["attention_mask"] = list(first["attention_mask"]) + [0, 0]
    if "labels" in first:
        first["labels"] = list(first["labels"]) + [IGNORE_INDEX, IGNORE_INDEX]
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
    if not series and collator.tokenizer.padding_side == "right":
        series = add_dummy_series(features, spec_for_tokenizer(collator.tokenizer))
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
