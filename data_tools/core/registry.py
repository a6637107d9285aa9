"""Registering datasets in ``dataset_info.json`` without clobbering anyone else's entries.

LlamaFactory finds a dataset by name in ``<dataset_dir>/dataset_info.json``. Users keep many
datasets in one directory, so a conversion merges its entries into the existing file: only the
names it writes are replaced, every other entry is kept as it was, and the file is rewritten
atomically. A file that is not valid JSON (or not a JSON object) is an error that names the
file and position rather than something to overwrite.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from lfkit.atomic import atomic_write

DATASET_INFO = "dataset_info.json"

# The tags of LlamaFactory's sharegpt formatting for OpenAI-style role/content messages, which
# every lfkit converter writes (DatasetAttr's defaults are ShareGPT's from/value/human/gpt).
SHAREGPT_TAGS = {
    "role_tag": "role",
    "content_tag": "content",
    "user_tag": "user",
    "assistant_tag": "assistant",
    "system_tag": "system",
}
# Added for datasets with tool use: the assistant's tool calls and the tool results. These are
# DatasetAttr's own default names, written out so the entry says what the file holds.
TOOL_TAGS = {
    "function_tag": "function_call",
    "observation_tag": "observation",
}


class RegistryError(ValueError):
    """``dataset_info.json`` exists but cannot be merged into (invalid JSON, not an object)."""


def read_dataset_info(dataset_dir: str | os.PathLike[str]) -> dict[str, Any]:
    """The entries of ``dataset_dir/dataset_info.json`` ({} when the file does not exist)."""
    path = Path(dataset_dir) / DATASET_INFO
    if not path.exists():
        return {}
    text = path.read_text(encoding="utf-8")
    if not text.strip():
        return {}
    try:
        info = json.loads(text)
    except json.JSONDecodeError as err:
        raise RegistryError(
            f"{path}:{err.lineno}:{err.colno}: not valid JSON ({err.msg}); fix or move it, "
            "lfkit will not overwrite it"
        ) from None
    if not isinstance(info, dict):
        raise RegistryError(f"{path}: expected a JSON object mapping dataset names to entries")
    return info


def merged_info(
    dataset_dir: str | os.PathLike[str], entries: dict[str, dict[str, Any]], remove: Iterable[str] = ()
) -> str:
    """The text of ``dataset_info.json`` with ``entries`` merged in and the ``remove`` names dropped.

    Replaces only the given names and keeps every other entry and their order. Raises
    :class:`RegistryError` if the existing file is broken.
    """
    info = read_dataset_info(dataset_dir)
    for name in remove:
        info.pop(name, None)
    info.update(entries)
    return json.dumps(info, indent=2, ensure_ascii=False) + "\n"


def register_datasets(
    dataset_dir: str | os.PathLike[str], entries: dict[str, dict[str, Any]], remove: Iterable[str] = ()
) -> Path:
    """Merge ``entries`` (name -> LlamaFactory dataset entry) into ``dataset_info.json`` atomically.

    See :func:`merged_info`; returns the file's path.
    """
    text = merged_info(dataset_dir, entries, remove)
    path = Path(dataset_dir) / DATASET_INFO
    with atomic_write(path, "w") as fh:
        fh.write(text)
    return path


def is_lfkit_split(entry: Any, file_name: str, split: str) -> bool:
    """Whether ``entry`` is lfkit's for ``file_name`` as split ``split`` (its ``lfkit`` metadata says so)."""
    if not isinstance(entry, dict) or entry.get("file_name") != file_name:
        return False
    meta = entry.get("lfkit")
    return isinstance(meta, dict) and meta.get("split") == split
