"""What the dialogue layouts share: the per-file context, speaker names, roles and turn reading.

Each layout module (:mod:`.openai`, :mod:`.sharegpt`, :mod:`.pippa`) is a transform
``(record, context) -> Conversation`` built from these pieces and
:func:`lfkit.data_tools.dialogue.build.build_conversation`; :mod:`.characters`,
:mod:`.tools` and :mod:`.multimodal` add what per-character files, tool use and media need.

The *role* (persona / character / user id, the unit of per-role sampling) comes from, in
order: the input file's name (``role_from_filename``, one file per character), the
``role_key`` field, PIPPA's ``bot_id``, or else one shared role ``""``. A record without its
role field is rejected (``missing_role_key``) only where roles are needed: ``--role-key`` was
given, or sampling needs roles (``--max-per-role``, ``--val-by role``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.build import Policy, build_conversation
from lfkit.data_tools.dialogue.layouts import multimodal, tools, v1_parts
from lfkit.data_tools.dialogue.layouts.characters import character_name
from lfkit.data_tools.dialogue.model import (
    ASSISTANT,
    FUNCTION_CALL,
    OBSERVATION,
    SYSTEM,
    USER,
    Conversation,
    RawTurn,
)

# Speaker names of every layout, lower-cased: OpenAI roles (developer is OpenAI's newer name
# for system; tool and function carry tool results), ShareGPT's from values and LlamaFactory's
# own tag names (so lfkit's output converts again unchanged).
SPEAKERS = {
    "user": USER,
    "human": USER,
    "assistant": ASSISTANT,
    "gpt": ASSISTANT,
    "chatgpt": ASSISTANT,
    "model": ASSISTANT,
    "system": SYSTEM,
    "developer": SYSTEM,
    "function_call": FUNCTION_CALL,
    "observation": OBSERVATION,
    "tool": OBSERVATION,
    "function": OBSERVATION,
}
SPEAKER_NAMES = "user/human, assistant/gpt, system/developer, function_call, tool/observation"


@dataclass(frozen=True)
class LayoutSettings:
    """How records are read, the same for every file of a run (picklable for worker processes)."""

    role_key: str | None = None
    role_from_filename: bool = False
    roles_needed: bool = False  # sampling needs a role per conversation
    policy: Policy = Policy()


@dataclass(frozen=True)
class Context:
    """What a layout transform knows besides the record: its file and the run's settings."""

    path: str
    base_dir: str  # media paths are relative to it
    character: str | None  # the character's name, from the file name (per-character files)
    settings: LayoutSettings

    @classmethod
    def for_file(cls, path: str, settings: LayoutSettings) -> Context:
        character = character_name(path) if settings.role_from_filename else None
        return cls(path, os.path.dirname(os.path.abspath(path)), character, settings)

    @property
    def policy(self) -> Policy:
        return self.settings.policy


def turn_list(value: Any, key: str) -> list[Any]:
    """The record's list of turns, or the reject that says what is wrong with it."""
    if value is None:
        raise RecordError("missing_messages", f"'{key}' is null", key)
    if not isinstance(value, list):
        got = type(value).__name__
        raise RecordError("missing_messages", f"'{key}' must be a list of turns, got {got}", key)
    if not value:
        raise RecordError("empty_messages", f"'{key}' is an empty list", key)
    return value


def role_of(obj: dict[str, Any], ctx: Context, default_key: str | None = None) -> str:
    """The record's role (see the module docstring), before whitespace normalisation."""
    if ctx.character is not None:
        return ctx.character
    key = ctx.settings.role_key or default_key
    if key is None:
        return ""
    return role_value(obj.get(key), key, ctx.settings)


def role_value(value: Any, key: str, settings: LayoutSettings) -> str:
    """The role held in the record's field ``key`` (``value``, None when absent), or a reject.

    The one rule for a role field's value, shared by the layouts and by the first pass of a
    conversion (:mod:`lfkit.data_tools.dialogue.index`), which reads only this field.
    """
    if value is None or value == "":
        if settings.role_key is None and not settings.roles_needed:
            return ""  # only a layout's default key (PIPPA's bot_id), and no sampling needs it
        why = "" if settings.role_key else " (sampling per role needs it)"
        raise RecordError("missing_role_key", f"role key '{key}' is missing or empty{why}", key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        got = type(value).__name__
        raise RecordError("missing_role_key", f"role key '{key}' must be a string or number, got {got}", key)
    return value if isinstance(value, str) else str(value)


def text_field(obj: dict[str, Any], key: str) -> str:
    """An optional top-level text field (``""`` when absent or null)."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError("non_text_content", f"'{key}' must be a string, got {type(value).__name__}", key)
    return value


def read_turns(
    raw_turns: list[Any],
    key: str,
    speaker_key: str,
    content_key: str,
    ctx: Context,
    parts_media: multimodal.PartsMedia,
) -> list[RawTurn]:
    """Read a ``messages`` / ``conversations`` list into :class:`RawTurn` values.

    ``speaker_key`` / ``content_key`` are the layout's names (``role``/``content`` or
    ``from``/``value``); a turn using the other layout's names is read too.
    """
    other = {"role": "from", "from": "role", "content": "value", "value": "content"}
    turns = []
    for i, turn in enumerate(raw_turns):
        where = f"{key}[{i}]"
        if not isinstance(turn, dict):
            raise RecordError("invalid_turn", f"turn must be an object, got {type(turn).__name__}", where)
        s_key = speaker_key if speaker_key in turn else other[speaker_key]
        if s_key not in turn:
            raise RecordError(
                "missing_speaker", f"turn has no '{speaker_key}' field", f"{where}.{speaker_key}"
            )
        name = turn[s_key]
        speaker = SPEAKERS.get(name.lower()) if isinstance(name, str) else None
        if speaker is None:
            raise RecordError(
                "unknown_speaker_role", f"speaker {name!r} is not one of {SPEAKER_NAMES}", f"{where}.{s_key}"
            )
        c_key = content_key if content_key in turn else other[content_key]
        turns.append(_turn(turn, speaker, where, c_key if c_key in turn else content_key, ctx, parts_media))
    return turns


def _turn(
    turn: dict[str, Any],
    speaker: str,
    where: str,
    c_key: str,
    ctx: Context,
    parts_media: multimodal.PartsMedia,
) -> RawTurn:
    field = f"{where}.{c_key}"
    content = turn.get(c_key)
    if speaker == ASSISTANT and v1_parts.has_parts(content):
        text, v1_calls = v1_parts.assistant_turn(content, field, ctx.base_dir, parts_media)
        if v1_calls is not None:
            return RawTurn(FUNCTION_CALL, tools.with_text(text, v1_calls), where)
        if not text.strip():
            raise RecordError("empty_turn", "turn content is empty", field)
        return RawTurn(ASSISTANT, text, where)
    if speaker == ASSISTANT:
        calls = tools.openai_calls(turn, where)
        if calls is not None:
            text = (
                "" if content is None else multimodal.content_text(content, field, ctx.base_dir, parts_media)
            )
            return RawTurn(FUNCTION_CALL, tools.with_text(text, calls), where)
    if c_key not in turn:
        raise RecordError("missing_content", f"turn has no '{c_key}' field", field)
    if speaker == FUNCTION_CALL:
        return RawTurn(FUNCTION_CALL, tools.call_json(content, field), where)
    if speaker == OBSERVATION and isinstance(content, dict):  # a structured tool result
        return RawTurn(OBSERVATION, tools.result_text(content), where)
    text = multimodal.content_text(content, field, ctx.base_dir, parts_media)
    if not text.strip():
        raise RecordError("empty_turn", "turn content is empty", field)
    return RawTurn(speaker, text, where)


def chat_transform(
    record: dict[str, Any], ctx: Context, key: str, speaker_key: str, content_key: str
) -> Conversation:
    """The transform of a chat layout (OpenAI ``messages``, ShareGPT ``conversations``).

    The two differ only in the names of the turn list and of a turn's speaker and content;
    tools (:mod:`.tools`) and media (:mod:`.multimodal`) are read the same way in both.
    """
    raw = turn_list(record[key], key)
    role = role_of(record, ctx)
    system = text_field(record, "system")
    parts_media = multimodal.PartsMedia()
    turns = read_turns(raw, key, speaker_key, content_key, ctx, parts_media)
    return record_conversation(record, ctx, key, role, system, turns, parts_media)


def record_conversation(
    record: dict[str, Any],
    ctx: Context,
    key: str,
    role: str,
    system: str,
    turns: list[RawTurn],
    parts_media: multimodal.PartsMedia,
) -> Conversation:
    """The conversation of a record's turns, with its ``tools`` and media columns read the one way.

    What the OpenAI, ShareGPT and Alpaca layouts share once their turns are read; a per-character
    file's name is the character (``{{char}}`` replaced, the name in the system text).
    """
    return build_conversation(
        role=role,
        system=[system],
        turns=turns,
        key=key,
        policy=ctx.policy,
        character=ctx.character,
        substitute=ctx.character is not None,
        character_field="file name",
        tools_json=tools.tools_json(record.get("tools")),
        media=multimodal.media_columns(record, ctx.base_dir, parts_media),
    )
