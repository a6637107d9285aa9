"""Tokenising rows that carry series: sft (supervised) and prediction (unsupervised) processors.

For a row with series the plugin (1) writes each series' offset/scaling text in front of its
``<ts><ts/>`` with the template's :class:`TimeSeriesPlugin`, (2) tokenises with LlamaFactory's
own ``_encode_data_example`` (same masking of prompt tokens, ``mask_history`` and
``train_on_prompt`` rules) under a ``cutoff_len`` reduced by the positions the series will
take in the model (``ceil(len / patch_size) - 2`` each), so ``cutoff_len`` bounds the real
sequence length, and (3) marks a row whose truncation would cut a placeholder as over-long.
The series go on as the ``timeseries`` feature, which the collator turns into the model's tensor.

A series is never silently dropped or cut. Once the whole dataset is tokenised
(:func:`resolve_overlong`, after LlamaFactory's ``_get_preprocessed_dataset``), the over-long
rows are reported all at once: how many, the first few by file and row, and the ``cutoff_len``
that fits them all; with ``timeseries_drop_overlong: true`` they are dropped instead and the
count is logged. The mark travels as a column so this works with ``preprocessing_num_workers``
and LlamaFactory's dataset cache.

Before tokenising, :func:`check_processor` refuses a dataset with series when the checkpoint's
own ChatTS processor did not load (LlamaFactory then passes ``processor=None``): the scaling
text would silently fall back to the paper-era ``[Value Offset: ..|Value Scaling: ..]`` form,
which current checkpoints were not trained with, unless ``timeseries_legacy_prompt: true``
asks for exactly that.

Rows without series, and datasets without the column, are tokenised by LlamaFactory's code.
Packing (``packing`` / ``neat_packing``) is refused for rows with series.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from types import ModuleType

from lfkit.plugin.timeseries.dataset import COLUMN, decode_payload
from lfkit.plugin.timeseries.encoding import extra_positions
from lfkit.plugin.timeseries.mm_plugin import is_chatts_processor, is_timeseries_plugin
from lfkit.plugin.timeseries.spec import spec_for_tokenizer

FEATURE = "timeseries"
OVERLONG = "_timeseries_overlong"  # "" or {"source", "needed"} of a row cutoff_len would cut
SHOWN = 5  # over-long rows named in the error


def _placeholders_intact(input_ids: list[int], spec, n_series: int) -> bool:
    starts = [i for i, t in enumerate(input_ids) if t == spec.start_id]
    ends = sum(1 for t in input_ids if t == spec.end_id)
    paired = all(i + 1 < len(input_ids) and input_ids[i + 1] == spec.end_id for i in starts)
    return len(starts) == n_series and ends == n_series and paired


def _with_cutoff(proc, cutoff: int):
    worker = copy.copy(proc)
    worker.data_args = copy.copy(proc.data_args)
    worker.data_args.cutoff_len = cutoff
    return worker


def encode_row(proc, encode, prompt, response, system, tools, images, videos, audios, payload):
    """``(input_ids, labels, feature, overlong)`` for one row; ``encode`` is LlamaFactory's method.

    ``overlong`` is "" or the JSON ``{"source", "needed"}`` of a row whose placeholders
    ``cutoff_len`` would cut; ``needed`` is its untruncated length including the patches.
    """
    series, source = decode_payload(payload)
    if not series:
        ids, labels = encode(proc, prompt, response, system, tools, images, videos, audios)
        return ids, labels, "", ""
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
    if cutoff - extra > 0:
        ids, labels = encode(
            _with_cutoff(proc, cutoff - extra), prompt, response, system, tools, images, videos, audios
        )
        if _placeholders_intact(ids, spec, len(series)):
            return ids, labels, payload, ""
    ids, labels = encode(_with_cutoff(proc, 1 << 30), prompt, response, system, tools, images, videos, audios)
    return ids, labels, payload, json.dumps({"source": source, "needed": len(ids) + extra})


def _preprocess(proc, examples, encode, supervised: bool):
    from llamafactory.extras import logging

    logger = logging.get_logger("llamafactory.lfkit.timeseries")
    model_inputs = defaultdict(list)
    for i in range(len(examples["_prompt"])):
        prompt, response = examples["_prompt"][i], examples["_response"][i]
        if len(prompt) % 2 != 1 or (supervised and len(response) != 1):
            logger.warning_rank0(f"Dropped invalid example: {prompt + response}")
            continue
        ids, labels, feature, overlong = encode_row(
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
        model_inputs[OVERLONG].append(overlong)
    return model_inputs


def resolve_overlong(dataset, cutoff_len: int, drop: bool, what: str):
    """Report (or, with ``drop``, remove) every over-long row at once; returns the dataset unmarked."""
    from datasets import IterableDataset
    from llamafactory.extras import logging

    if isinstance(dataset, IterableDataset):  # streaming: rows exist only while iterating
        if drop:
            dataset = dataset.filter(lambda mark: not mark, input_columns=[OVERLONG])
        else:
            dataset = dataset.map(_refuse_streamed_row, fn_kwargs={"cutoff_len": cutoff_len})
        return dataset.remove_columns(OVERLONG)
    marks = dataset[OVERLONG]
    rows = [json.loads(m) for m in marks if m]
    dataset = dataset.remove_columns(OVERLONG)
    if not rows:
        return dataset
    needed = max(r["needed"] for r in rows)
    if drop:
        dataset = dataset.select([i for i, m in enumerate(marks) if not m])
        logging.get_logger("llamafactory.lfkit.timeseries").warning_rank0(
            f"lfkit: dropped {len(rows)} of {len(marks)} ChatTS {what} rows whose time-series placeholders "
            f"cutoff_len {cutoff_len} would cut (timeseries_drop_overlong: true); cutoff_len {needed} "
            "keeps them."
        )
        return dataset
    first = "; ".join(r["source"] for r in rows[:SHOWN]) + ("; ..." if len(rows) > SHOWN else "")
    raise ValueError(
        f"{len(rows)} of {len(marks)} ChatTS {what} rows do not fit cutoff_len {cutoff_len} (truncation "
        f"would cut their time-series placeholders): {first}. cutoff_len {needed} fits all of them; or set "
        "timeseries_drop_overlong: true to drop them (the count is logged)."
    )


def check_series_lengths(payloads, spec, what: str) -> None:
    """Refuse, all at once, rows with a series longer than the encoder's position embedding reaches.

    ChatTS encoders with a position embedding (``ts.use_position_embedding``) have no position
    beyond ``ts.max_sequence_length``: a longer series would stop the run at its first batch with
    an ``IndexError`` deep in the remote code, after the model has loaded.
    """
    if spec.max_length is None:
        return

    rows = []
    for payload in payloads:
        series, source = decode_payload(payload)
        longest = max((len(s) for s in series), default=0)
        if longest > spec.max_length:
            rows.append((source, longest))
    if rows:
        first = "; ".join(f"{source} ({length} points)" for source, length in rows[:SHOWN])
        raise ValueError(
            f"{len(rows)} of {len(payloads)} ChatTS {what} rows have a series longer than the model's "
            f"ts.max_sequence_length {spec.max_length}, beyond which its encoder has no position: "
            f"{first}{'; ...' if len(rows) > SHOWN else ''}. Convert the data with "
            f"`lfkit data convert timeseries --max-series-length {spec.max_length}`, which rejects such "
            "records with their file and line, or shorten (downsample) those series."
        )


def _refuse_streamed_row(row, cutoff_len: int):
    if row[OVERLONG]:
        mark = json.loads(row[OVERLONG])
        raise ValueError(
            f"{mark['source']}: does not fit cutoff_len {cutoff_len} (truncation would cut its time-series "
            f"placeholders; it needs {mark['needed']}). With streaming, rows are checked one by one; set "
            "timeseries_drop_overlong: true to drop such rows."
        )
    return row


def check_processor(processor, tokenizer, legacy_ok: bool) -> None:
    """Refuse series without the checkpoint's ChatTS processor unless the legacy text is asked for."""
    if is_chatts_processor(processor):
        return
    from llamafactory.extras import logging

    loaded = "no processor" if processor is None else f"a {type(processor).__name__}, not a ChatTS processor"
    if legacy_ok:
        logging.get_logger("llamafactory.lfkit.timeseries").warning_rank0(
            f"lfkit: {tokenizer.name_or_path}: {loaded} loaded; writing the paper-era "
            "'[Value Offset: ..|Value Scaling: ..]' series text (timeseries_legacy_prompt: true)."
        )
        return
    raise ValueError(
        f"{tokenizer.name_or_path}: {loaded} loaded, so the series' scaling text cannot be written the way "
        "the checkpoint was trained (its processor's). Make AutoProcessor load it (trust_remote_code: true, "
        "processor_config.json with its auto_map, the processing_*.py file) or set timeseries_legacy_prompt: "
        "true to write the paper-era '[Value Offset: ..|Value Scaling: ..]' text."
    )


def patch_loader(module: ModuleType) -> None:
    """Check the processor before, and resolve over-long ChatTS rows after, each dataset's tokenising."""
    if getattr(module, "_lfkit_timeseries", False):
        return
    original = module._get_preprocessed_dataset

    def _get_preprocessed_dataset(
        dataset, data_args, training_args, stage, template, tokenizer, processor=None, is_eval=False
    ):
        from lfkit.plugin.hparams import parsed_finetuning_args

        keys = parsed_finetuning_args()
        series = (
            dataset is not None
            and template is not None
            and is_timeseries_plugin(template.mm_plugin)
            and COLUMN in (dataset.column_names or list(next(iter(dataset)).keys()))
        )
        if series:
            check_processor(processor, tokenizer, bool(getattr(keys, "timeseries_legacy_prompt", False)))
        out = original(
            dataset, data_args, training_args, stage, template, tokenizer, processor, is_eval=is_eval
        )
        what = "evaluation" if is_eval else "training"
        if series and (data_args.streaming or OVERLONG in out.column_names):
            drop = bool(getattr(keys, "timeseries_drop_overlong", False))
            out = resolve_overlong(out, data_args.cutoff_len, drop, what)
        if series and not data_args.streaming and FEATURE in (out.column_names or ()):
            check_series_lengths(out[FEATURE], spec_for_tokenizer(tokenizer), what)
        return out

    module._get_preprocessed_dataset = _get_preprocessed_dataset
    module._lfkit_timeseries = True


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
