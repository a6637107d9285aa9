"""Images, videos and audios: kept as LlamaFactory's media columns, checked against the text.

LlamaFactory's multimodal layout (its ``mllm_demo``) is a conversation plus ``images`` /
``videos`` / ``audios`` lists of file paths, and one ``<image>`` / ``<video>`` / ``<audio>``
placeholder in the messages per file, in order. Its multimodal templates refuse a sample whose
placeholder count differs from its file count (``_validate_messages`` in
``data/mm_plugin.py``), which stops the whole training run; here such a record is rejected
(``media_placeholder_mismatch``) with both counts, and so is a placeholder in the system text,
which LlamaFactory never expands.

Paths are resolved relative to the input file's directory (LlamaFactory resolves them against
``media_dir``, by default the dataset directory, which is usually not where the input was), and
where no file is there, relative to the current directory (LlamaFactory's v1 demo files name
their media from the repository root: ``data/mllm_demo_data/1.jpg``). Each file must exist (else
``missing_media`` names the paths tried), and the absolute path is written, so the dataset
trains from any ``dataset_dir``. URLs and inline data are rejected
(``unsupported_media``): LlamaFactory 0.9.5 opens local files.

OpenAI-style content parts are read too: ``text`` / ``input_text`` / ``output_text`` parts
(``text``, or LlamaFactory's ``value``) are text, and ``image_url`` / ``input_image`` /
``image``, ``video_url`` / ``video`` and ``audio_url`` / ``audio`` parts with a local path (OpenAI's
``{"image_url": {"url"}}``, or LlamaFactory v1's ``value``) become a placeholder at that point of
the text plus the file in the media list. v1's ``reasoning`` and ``tool_call`` parts of an
assistant turn are read by :mod:`.v1_parts`.
"""

from __future__ import annotations

import os
from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.model import NO_MEDIA, Media

KINDS = ("images", "videos", "audios")
PLACEHOLDERS = {"images": "<image>", "videos": "<video>", "audios": "<audio>"}
TEXT_PARTS = frozenset(("text", "input_text", "output_text"))
MEDIA_PARTS = {
    "image_url": "images",
    "input_image": "images",
    "image": "images",
    "video_url": "videos",
    "video": "videos",
    "audio_url": "audios",
    "audio": "audios",
}
_REMOTE = ("http://", "https://", "data:", "s3://", "gs://")


def has_media_columns(record: dict[str, Any]) -> bool:
    """Whether the record has any media column (even an empty one)."""
    return "images" in record or "videos" in record or "audios" in record


class PartsMedia:
    """Media found in content parts while a layout reads the turns, in placeholder order."""

    def __init__(self) -> None:
        self.found: dict[str, list[str]] = {}

    def add(self, kind: str, path: str) -> str:
        self.found.setdefault(kind, []).append(path)
        return PLACEHOLDERS[kind]


def content_text(value: Any, field: str, base_dir: str, parts_media: PartsMedia) -> str:
    """A turn's content as text: a string, or a list of content parts (see the module docstring)."""
    if isinstance(value, str):
        return value
    if not isinstance(value, list) or not value:
        got = "an empty list" if isinstance(value, list) else _kind(value)
        raise RecordError("non_text_content", f"content must be text or content parts, got {got}", field)
    return "".join(part_text(part, f"{field}[{i}]", base_dir, parts_media) for i, part in enumerate(value))


def part_text(part: Any, where: str, base_dir: str, parts_media: PartsMedia) -> str:
    """One content part as text: its text, or the placeholder of its media file (noted in ``parts_media``)."""
    kind = part.get("type") if isinstance(part, dict) else None
    if kind in TEXT_PARTS:
        text = part.get("text", part.get("value"))
        if not isinstance(text, str):
            raise RecordError("non_text_content", f"a {kind} part needs a 'text' string", where)
        return text
    if kind in MEDIA_PARTS:
        return parts_media.add(MEDIA_PARTS[kind], resolve(_part_path(part, kind, where), base_dir, where))
    shown = repr(kind) if kind is not None else _kind(part)
    raise RecordError("non_text_content", f"content part of type {shown} is not understood", where)


def _part_path(part: dict[str, Any], kind: str, field: str) -> Any:
    value = part.get(kind)
    if isinstance(value, dict):  # {"type": "image_url", "image_url": {"url": ...}}
        value = value.get("url", value.get("path"))
    if value is None:
        value = part.get("url", part.get("path"))
    if kind == "input_image" and value is None:
        value = part.get("image_url")
    if value is None:  # LlamaFactory v1's {"type": "image_url", "value": "data/x.jpg"}
        value = part.get("value")
    return value


def media_columns(record: dict[str, Any], base_dir: str, parts_media: PartsMedia) -> Media:
    """The record's media lists, resolved and checked (see the module docstring)."""
    if not has_media_columns(record):
        if not parts_media.found:
            return NO_MEDIA
        return Media(**{k: tuple(v) for k, v in parts_media.found.items()})
    if parts_media.found:
        raise RecordError(
            "mixed_media",
            "media given both as content parts and as images/videos/audios lists: their order is ambiguous",
            next(k for k in KINDS if k in record),
        )
    lists = {}
    for kind in KINDS:
        value = record.get(kind)
        if value is None:
            continue
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list):
            raise RecordError("invalid_media", f"'{kind}' must be a list of file paths", kind)
        lists[kind] = tuple(resolve(path, base_dir, f"{kind}[{i}]") for i, path in enumerate(value))
    return Media(**lists)


def resolve(path: Any, base_dir: str, field: str) -> str:
    """The absolute path of a media file given relative to ``base_dir``; rejects what is not there."""
    if isinstance(path, dict):
        path = path.get("path")
    if not isinstance(path, str) or not path.strip():
        raise RecordError("invalid_media", f"a media entry must be a file path, got {_kind(path)}", field)
    if path.startswith(_REMOTE):
        raise RecordError(
            "unsupported_media", f"{path[:80]!r} is not a local file: download it and give its path", field
        )
    if path.startswith("file://"):
        path = path[len("file://") :]
    path = os.path.expanduser(path)
    full = os.path.normpath(os.path.join(base_dir, path))
    if os.path.isfile(full):
        return full
    here = os.path.abspath(path)
    if here != full and os.path.isfile(here):
        return here
    looked = full if here == full else f"{full}, then {here}"
    raise RecordError("missing_media", f"media file {path!r} not found (looked for {looked})", field)


def check_placeholders(system: str, contents: list[str], media: Media, field: str) -> None:
    """Reject a record whose placeholder counts differ from its media counts (see the docstring)."""
    for kind in KINDS:
        placeholder = PLACEHOLDERS[kind]
        files = len(getattr(media, kind))
        if placeholder in system:
            raise RecordError(
                "media_placeholder_in_system",
                f"the system text contains {placeholder}; LlamaFactory expands placeholders in messages only",
                "system",
            )
        found = sum(text.count(placeholder) for text in contents)
        if found != files:
            raise RecordError(
                "media_placeholder_mismatch",
                f"{found} {placeholder} placeholder(s) in the messages but {files} {kind[:-1]} file(s)",
                kind if files else field,
            )


def _kind(value: Any) -> str:
    return "null" if value is None else type(value).__name__
