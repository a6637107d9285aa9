"""Tokenising rows that carry series: sft (supervised) and prediction (unsupervised) processors.

For a row with series the plugin (1) writes each series' offset/scaling text in front of its
``<ts><ts/>`` with the template's :class:`TimeSeriesPlugin`, (2) tokenises with LlamaFactory's
own ``_encode_data_example`` (same masking of prompt tokens, ``mask_history`` and
``train_on_prompt`` rules) under a ``cutoff_len`` reduced by the positions the series will
take in the model (``ceil(len / patch_size) - 2`` each), so ``cutoff_len`` bounds the real
sequence length, and (3) refuses a row whose truncation would cut a placeholder, naming its
file and row: a series is never silently dropped or cut. The series go on as the
``timeseries`` feature, which the collator turns into the model's tensor.

Rows without series, and datasets without the column, are tokenised by LlamaFactory's code.
Packing (``packing`` / ``neat_packing``) is refused for rows with series.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from types import ModuleType

from lfkit.plugin.timeseries.dataset import COLUMN, decode_payload
from lfkit.plugin.timeseries.encoding import extra_positions
from lfkit.plugin.timeseries.mm_plugin import is_timeseries_plugin
from lfkit.plugin.timeseries.spec import spec_for_tokenizer

FEATURE = "timeseries"


def _check_placeholders(
    input_ids: list[int], spec, n_series: int, source: str, cutoff: int, extra: int
) -> None:
    starts = [i for i, t in enumerate(input_ids) if t == spec.start_id]
    ends = sum(1 for t in input_ids if t == spec.end_id)
    paired = all(i + 1 < len(input_ids) and input_ids[i + 1] == spec.end_id for i in starts)
    if len(starts) != n_series or ends != n_series or not paired:
        raise ValueError(
            f"{source}: cutoff_len {cutoff} keeps {len(starts)} of {n_series} time-series placeholders "
            f"intact ({extra} positions go to the series' patches); raise cutoff_len or shorten this sample "
            "(`lfkit data stats --kind timeseries` shows each sample's true length)."
        )


def encode_row(proc, encode, prompt, response, system, tools, images, videos, audios, payload):
    """``(input_ids, labels, feature)`` for one row; ``encode`` is LlamaFactory's method."""
    series, source = decode_payload(payload)
    if not series:
        ids, labels = encode(proc, prompt, response, system, tools, images, videos, audios)
        return ids, labels, ""
    plugin = proc.template.mm_plugin
    if not is_timeseries_plugin(plugin):
        raise ValueError(
            f"{source}: the row has time series but template '{proc.data_args.template}' cannot place them; "
            "use `template: chatts` (or a template built on lfkit's chatts plugin)."
        )
    spec = spec_for_tokenizer(proc.tokenizer)
    messages = plugin.expand_timeseries(prompt + response, series, proc.processor, source)
    prompt, response = messages[: len(prompt)], messages[len(prompt) :]
    cutoff = proc.data_args.cutoff_len
    extra = extra_positions([len(s) for s in series], spec.patch_size)
    if cutoff - extra <= 0:
        raise ValueError(
            f"{source}: the series alone take {extra + 2 * len(series)} positions, over cutoff_len {cutoff}."
        )
    worker = copy.copy(proc)
    worker.data_args = copy.copy(proc.data_args)
    worker.data_args.cutoff_len = cutoff - extra
    ids, labels = encode(worker, prompt, response, system, tools, images, videos, audios)
    _check_placeholders(ids, spec, len(series), source, cutoff, extra)
    return ids, labels, payload


def _preprocess(proc, examples, encode, supervised: bool):
    from llamafactory.extras import logging

    logger = logging.get_logger("llamafactory.lfkit.timeseries")
    model_inputs = defaultdict(list)
    for i in range(len(examples["_prompt"])):
        prompt, response = examples["_prompt"][i], examples["_response"][i]
        if len(prompt) % 2 != 1 or (supervised and len(response) != 1):
            logger.warning_rank0(f"Dropped invalid example: {prompt + response}")
            continue
        ids, labels, feature = encode_row(
            proc,
            encode,
            prompt,
            response,
            examples["_system"][i],
            examples["_tools"][i],
            examples["_images"][i] or [],
            examples["_videos"][i] or [],
            examples["_audios"][i] or [],
            examples[COLUMN][i],
        )
        model_inputs["input_ids"].append(ids)
        model_inputs["attention_mask"].append([1] * len(ids))
        model_inputs["labels"].append(labels)
        model_inputs["images"].append(examples["_images"][i])
        model_inputs["videos"].append(examples["_videos"][i])
        model_inputs["audios"].append(examples["_audios"][i])
        model_inputs[FEATURE].append(feature)
    return model_inputs


def patch_supervised(module: ModuleType) -> None:
    """sft rows with series (and a clear refusal of packing with series)."""
    if not _route_series_rows(module.SupervisedDatasetProcessor, supervised=True):
        return

    packed = module.PackedSupervisedDatasetProcessor
    original_packed = packed.preprocess_dataset

    def preprocess_packed(self, examples):
        if COLUMN in examples and any(examples[COLUMN]):
            raise ValueError(
                "packing / neat_packing is not supported with time series; unset it for ChatTS data."
            )
        return original_packed(self, examples)

    packed.preprocess_dataset = preprocess_packed


def patch_unsupervised(module: ModuleType) -> None:
    """Prediction / generation rows with series (the fork ignored them)."""
    _route_series_rows(module.UnsupervisedDatasetProcessor, supervised=False)


def _route_series_rows(cls: type, supervised: bool) -> bool:
    """Send batches that carry a timeseries column through :func:`_preprocess`; others stay stock.

    Returns False when ``cls`` was patched already.
    """
    if getattr(cls, "_lfkit_timeseries", False):
        return False
    original, encode = cls.preprocess_dataset, cls._encode_data_example

    def preprocess_dataset(self, examples):
        if COLUMN not in examples:
            return original(self, examples)
        return _preprocess(self, examples, encode, supervised=supervised)

    cls.preprocess_dataset = preprocess_dataset
    cls._lfkit_timeseries = True
    return True
