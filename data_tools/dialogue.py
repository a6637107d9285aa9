"""Dialogue records: read the layouts people have, validate them, render LlamaFactory samples.

Accepted input layouts (detected per record):

* OpenAI ``{"messages": [{"role", "content"}], "system"?: str}``
* ShareGPT ``{"conversations": [{"from", "value"}], "system"?: str}`` (``human``/``gpt``/``system``)
* PIPPA ``{"bot_id", "bot_description", "bot_definitions", "conversation": [{"message", "is_human"}]}``

Speaker names ``user``/``human``, ``assistant``/``gpt`` and ``system`` are understood in every
layout. A conversation must alternate user -> assistant, starting with a user turn, because
LlamaFactory's sharegpt converter drops anything else with only a log warning; this module
rejects such records up front with a precise reason instead. Two deliberate leniencies, both
counted in the summary: a trailing user turn (nothing to learn from) is trimmed, and in PIPPA,
where the bot speaks first by design, leading bot messages (the greeting) are moved into the
context as ``Opening message``.

The *role* (persona / character / user id, the unit of per-role sampling) comes from, in order:
the input file's name (``role_from_filename``, for one-file-per-character collections), the
``role_key`` field, PIPPA's ``bot_id``, or else one shared role ``""``.

Prompt building (the ablation switches):

* default: persona/context in the ``system`` column and the whole dialogue in ``messages``: one
  sample per conversation, every assistant turn trained. LlamaFactory's ``mask_history: true``
  (a recipe key, not a dataset key) trains only the last assistant turn of such samples.
* ``context_only``: persona/context in ``system`` and only the user turn that the assistant
  answers: one sample per assistant turn, no earlier turns (``mask_history`` changes nothing).
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import itemgetter
from typing import Any

import orjson
from lfkit.data_tools.jsonl import RecordError, SourceLine, file_stem

USER, ASSISTANT, SYSTEM = "user", "assistant", "system"
SPEAKERS = {
    "user": USER,
    "human": USER,
    "assistant": ASSISTANT,
    "gpt": ASSISTANT,
    "system": SYSTEM,
}
LAYOUTS = (("messages", "role", "content"), ("conversations", "from", "value"))


@dataclass(slots=True)
class Conversation:
    """A validated conversation, already in output form.

    ``messages`` are ``{"role": "user"|"assistant", "content": str}`` dicts (exactly those two
    keys), user first, alternating, ending with an assistant turn.
    """

    role: str
    system: str
    messages: list[dict[str, str]]
    trimmed_user_turns: int = 0
    moved_greetings: int = 0

    @property
    def assistant_turns(self) -> int:
        return len(self.messages) // 2

    @property
    def chars(self) -> int:
        return len(self.system) + sum(map(len, map(_CONTENT, self.messages)))


@dataclass(frozen=True)
class RoleSource:
    """Where a record's role comes from (see the module docstring)."""

    role_key: str | None = None
    from_filename: bool = False


def to_conversation(obj: dict[str, Any], line: SourceLine, source: RoleSource) -> Conversation:
    """Validate one parsed record and turn it into a :class:`Conversation`, or raise RecordError.

    Well-formed OpenAI / ShareGPT records take a fast path whose per-turn checks run in C
    (``map`` over ``itemgetter``); anything unusual falls through to the turn-by-turn path,
    which accepts the same records (with the same output) and names the exact reason and field
    of every problem.
    """
    fast = _fast_conversation(obj, line, source)
    if fast is not None:
        return fast
    if "messages" in obj or "conversations" in obj:
        key, speaker_key, content_key = LAYOUTS[0] if "messages" in obj else LAYOUTS[1]
        raw_turns = _turn_list(obj[key], key)
        role = _role(obj, line, source, default_key=None)
        system = _text_field(obj, "system")
        turns = [_turn(t, i, key, speaker_key, content_key) for i, t in enumerate(raw_turns)]
        pippa = False
    elif "conversation" in obj:
        raw_turns = _turn_list(obj["conversation"], "conversation")
        role = _role(obj, line, source, default_key="bot_id")
        persona = [_text_field(obj, "bot_description"), _text_field(obj, "bot_definitions")]
        system = "\n\n".join(p for p in persona if p)
        turns = [_pippa_turn(t, i) for i, t in enumerate(raw_turns)]
        pippa = True
    else:
        raise RecordError(
            "missing_messages",
            "record has no 'messages' (OpenAI), 'conversations' (ShareGPT) or 'conversation' (PIPPA) list",
            "messages",
        )
    return _validate(role, system, turns, pippa, key if not pippa else "conversation")


_SPEAKER = {"messages": itemgetter("role"), "conversations": itemgetter("from")}
_TEXT = {"messages": itemgetter("content"), "conversations": itemgetter("value")}
_ROLE, _CONTENT = itemgetter("role"), itemgetter("content")
_PATTERNS: dict[int, list[str]] = {}


def _pattern(n: int) -> list[str]:
    """``["user", "assistant", "user", ...]`` of length n (cached)."""
    pattern = _PATTERNS.get(n)
    if pattern is None:
        pattern = _PATTERNS[n] = [USER if i % 2 == 0 else ASSISTANT for i in range(n)]
    return pattern


def _fast_conversation(obj: dict[str, Any], line: SourceLine, source: RoleSource) -> Conversation | None:
    """The common case, checked with C-level loops; None sends the record to the precise path."""
    key = "messages" if "messages" in obj else "conversations"
    turns = obj.get(key)
    if type(turns) is not list or len(turns) < 2:
        return None
    try:
        speakers = list(map(_SPEAKER[key], turns))
        texts = list(map(_TEXT[key], turns))
    except (KeyError, TypeError):
        return None
    system = obj.get("system")
    if system is None:
        system = ""
    elif type(system) is not str:
        return None
    system = system.strip()
    if speakers[0] == SYSTEM:
        if type(texts[0]) is not str or not texts[0].strip():
            return None
        system = f"{system}\n\n{texts[0].strip()}" if system else texts[0].strip()
        turns, speakers, texts = turns[1:], speakers[1:], texts[1:]
    n = len(turns)
    try:  # str.isspace raises TypeError for a non-string; "" is not isspace(), hence the `in`
        if any(map(str.isspace, texts)) or "" in texts:
            return None
    except TypeError:
        return None
    if key == "messages" and speakers == _pattern(n) and max(map(len, turns)) == 2:
        messages = turns  # already exactly {"role", "content"}: reuse the parsed objects
    else:
        if key == "conversations":
            speakers = list(map(SPEAKERS.get, speakers))
        if speakers != _pattern(n):
            return None
        messages = [{"role": r, "content": t} for r, t in zip(speakers, texts, strict=True)]
    trimmed = n % 2
    if trimmed:
        messages = messages[:-1]
    if not messages:
        return None
    if source.from_filename:
        role = file_stem(line.path)
    elif source.role_key is None:
        role = ""
    else:
        role = obj.get(source.role_key)
        if type(role) is not str or not role:
            return None  # numbers, missing or empty: the precise path converts or rejects
    return Conversation(role, system, messages, trimmed)


def _turn_list(value: Any, key: str) -> list[Any]:
    if value is None:
        raise RecordError("missing_messages", f"'{key}' is null", key)
    if not isinstance(value, list):
        got = type(value).__name__
        raise RecordError("missing_messages", f"'{key}' must be a list of turns, got {got}", key)
    if not value:
        raise RecordError("empty_messages", f"'{key}' is an empty list", key)
    return value


def _role(obj: dict[str, Any], line: SourceLine, source: RoleSource, default_key: str | None) -> str:
    if source.from_filename:
        return file_stem(line.path)
    key = source.role_key or default_key
    if key is None:
        return ""
    value = obj.get(key)
    if value is None or value == "":
        raise RecordError("missing_role_key", f"role key '{key}' is missing or empty", key)
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        got = type(value).__name__
        raise RecordError("missing_role_key", f"role key '{key}' must be a string or number, got {got}", key)
    return value if isinstance(value, str) else str(value)


def _text_field(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise RecordError("non_text_content", f"'{key}' must be a string, got {type(value).__name__}", key)
    return value.strip()


def _content(value: Any, field: str) -> str:
    if isinstance(value, str):
        text = value
    elif isinstance(value, list) and all(
        isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) for p in value
    ):  # OpenAI content parts that are all text
        text = "".join(p["text"] for p in value)
    else:
        kind = type(value).__name__ if not isinstance(value, list) else "a list with non-text parts"
        raise RecordError("non_text_content", f"content must be text, got {kind}", field)
    if not text.strip():
        raise RecordError("empty_turn", "turn content is empty", field)
    return text


def _turn(turn: Any, i: int, key: str, speaker_key: str, content_key: str) -> tuple[str, str]:
    where = f"{key}[{i}]"
    if not isinstance(turn, dict):
        raise RecordError("invalid_turn", f"turn must be an object, got {type(turn).__name__}", where)
    if speaker_key not in turn:
        raise RecordError("missing_speaker", f"turn has no '{speaker_key}' field", f"{where}.{speaker_key}")
    speaker = turn[speaker_key]
    mapped = SPEAKERS.get(speaker.lower()) if isinstance(speaker, str) else None
    if mapped is None:
        raise RecordError(
            "unknown_speaker_role",
            f"speaker {speaker!r} is not one of user/human, assistant/gpt, system",
            f"{where}.{speaker_key}",
        )
    if content_key not in turn:
        raise RecordError("missing_content", f"turn has no '{content_key}' field", f"{where}.{content_key}")
    return mapped, _content(turn[content_key], f"{where}.{content_key}")


def _pippa_turn(turn: Any, i: int) -> tuple[str, str]:
    where = f"conversation[{i}]"
    if not isinstance(turn, dict):
        raise RecordError("invalid_turn", f"turn must be an object, got {type(turn).__name__}", where)
    is_human = turn.get("is_human")
    if not isinstance(is_human, bool):
        raise RecordError(
            "unknown_speaker_role", f"'is_human' must be true or false, got {is_human!r}", f"{where}.is_human"
        )
    if "message" not in turn:
        raise RecordError("missing_content", "turn has no 'message' field", f"{where}.message")
    return (USER if is_human else ASSISTANT), _content(turn["message"], f"{where}.message")


def _validate(role: str, system: str, turns: list[tuple[str, str]], pippa: bool, key: str) -> Conversation:
    start = 0
    contexts = [system] if system else []
    while start < len(turns) and turns[start][0] == SYSTEM:
        contexts.append(turns[start][1].strip())
        start += 1
    greetings = 0
    if pippa:
        while start < len(turns) and turns[start][0] == ASSISTANT:
            contexts.append(f"Opening message:\n{turns[start][1]}")
            start += 1
            greetings += 1
    body = turns[start:]
    for j, (speaker, _) in enumerate(body):
        i = start + j
        if speaker == SYSTEM:
            where = f"{key}[{i}]"
            raise RecordError("misplaced_system_turn", "system turn after the dialogue started", where)
        expected = USER if j % 2 == 0 else ASSISTANT
        if speaker != expected:
            if j == 0:
                where = f"{key}[{i}]"
                raise RecordError("assistant_first", "the first dialogue turn is the assistant's", where)
            reason = "consecutive_user_turns" if speaker == USER else "consecutive_assistant_turns"
            raise RecordError(reason, f"two {speaker} turns in a row (turns {i - 1} and {i})", f"{key}[{i}]")
    trimmed = 0
    if body and body[-1][0] == USER:
        body = body[:-1]
        trimmed = 1
    if not body:
        raise RecordError("no_assistant_turn", "conversation has no assistant turn to learn from", key)
    messages = [{"role": speaker, "content": text} for speaker, text in body]
    return Conversation(role, "\n\n".join(contexts), messages, trimmed, greetings)


def render_samples(conv: Conversation, context_only: bool) -> bytes:
    """The converted JSONL bytes (one or more lines, each ending in a newline) for a conversation.

    Each line is a LlamaFactory sharegpt-format sample ``{"messages": [{"role", "content"}],
    "system": str, "role_id": str}``; ``role_id`` is provenance (LlamaFactory ignores it).
    """
    messages = conv.messages
    if not context_only:
        return orjson.dumps({"messages": messages, "system": conv.system, "role_id": conv.role}) + b"\n"
    return b"".join(
        orjson.dumps({"messages": messages[i : i + 2], "system": conv.system, "role_id": conv.role}) + b"\n"
        for i in range(0, len(messages), 2)
    )
