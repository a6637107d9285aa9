"""The ``timeseries`` dataset column: declared in dataset_info.json, checked and carried per row.

LlamaFactory's ``DatasetAttr`` knows images, videos and audios only, and its converters drop
every column they do not know. This module teaches ``DatasetAttr`` a ``timeseries`` column
(``"columns": {"timeseries": "timeseries"}``, for alpaca, sharegpt and openai layouts alike)
and makes the alignment step carry it as ``_timeseries``. Each row is checked where its file
and row number are still known: values must be finite numbers, every series non-empty, the
number of ``<ts><ts/>`` placeholders in the user turns must equal the number of series (a
surplus placeholder would otherwise silently lose text), and no placeholder may sit in an
assistant turn or the system prompt. The series travel as a JSON string together with the
row's source, so that later errors (truncation) can still name the file and row, and so that
ragged float lists never meet Arrow's type inference (the fork's multi-turn crash).

A dataset without a ``timeseries`` column goes through LlamaFactory's own code unchanged.
"""

from __future__ import annotations

import json
import os
from types import ModuleType

from lfkit.plugin.timeseries.encoding import PLACEHOLDER, count_placeholders, validate_series

COLUMN = "_timeseries"


def patch_parser(module: ModuleType) -> None:
    """Add the ``timeseries`` column to ``DatasetAttr`` (read from ``columns`` in dataset_info.json)."""
    cls = module.DatasetAttr
    if getattr(cls, "_lfkit_timeseries", False):
        return
    cls.timeseries = None
    original_join = cls.join

    def join(self, attr):
        original_join(self, attr)
        if "columns" in attr:
            self.set_attr("timeseries", attr["columns"])

    cls.join = join
    cls._lfkit_timeseries = True


def encode_payload(series: list[list[float]], source: str) -> str:
    return json.dumps({"source": source, "series": series}) if series else ""


def decode_payload(payload: str | None) -> tuple[list[list[float]], str]:
    """``(series, source)`` of a ``_timeseries`` / ``timeseries`` value ("" = no series)."""
    if not payload:
        return [], ""
    data = json.loads(payload)
    return data["series"], data["source"]


def check_row(converted: dict, raw_series, column: str, where: str) -> str:
    """Validate one converted row against its series; returns the ``_timeseries`` payload."""
    series = validate_series(raw_series, where)
    if not converted["_prompt"] and not converted["_response"]:
        return ""  # LlamaFactory already rejected this row (and said why)
    if PLACEHOLDER in (converted.get("_system") or ""):
        raise ValueError(f"{where}: '{PLACEHOLDER}' in the system prompt; put series in user turns.")
    placeholders = 0
    for turn, message in enumerate(converted["_prompt"] + converted["_response"]):
        n = count_placeholders(message["content"], f"{where} turn {turn}")
        if n and message["role"] != "user":
            raise ValueError(
                f"{where} turn {turn}: '{PLACEHOLDER}' in a {message['role']} turn; "
                "only user turns can carry series."
            )
        placeholders += n
    if placeholders != len(series):
        raise ValueError(
            f"{where}: {placeholders} '{PLACEHOLDER}' placeholder(s) in the messages but {len(series)} "
            f"series in field '{column}'; they must match one to one, in order."
        )
    return encode_payload(series, where)


def patch_converter(module: ModuleType) -> None:
    """Make ``align_dataset`` carry and check the ``timeseries`` column when a dataset declares one."""
    if getattr(module, "_lfkit_timeseries", False):
        return
    original = module.align_dataset

    def align_dataset(dataset, dataset_attr, data_args, training_args):
        column = getattr(dataset_attr, "timeseries", None)
        if column is None:
            return original(dataset, dataset_attr, data_args, training_args)

        column_names = list(next(iter(dataset)).keys())
        kwargs = {}
        if not data_args.streaming:
            kwargs = dict(
                num_proc=data_args.preprocessing_num_workers,
                load_from_cache_file=(not data_args.overwrite_cache)
                or (training_args.local_process_index != 0),
                desc="Converting format of dataset (with time series)",
            )
        if dataset_attr.load_from == "file" and isinstance(data_args.dataset_dir, str):
            source = os.path.join(data_args.dataset_dir, dataset_attr.dataset_name)
        else:
            source = str(dataset_attr)
        converter = module.get_dataset_converter(dataset_attr.formatting, dataset_attr, data_args)

        def convert(example, index):
            converted = converter(example)
            converted[COLUMN] = check_row(converted, example.get(column), column, f"{source}: row {index}")
            return converted

        return dataset.map(convert, with_indices=True, batched=False, remove_columns=column_names, **kwargs)

    module.align_dataset = align_dataset
    module._lfkit_timeseries = True
