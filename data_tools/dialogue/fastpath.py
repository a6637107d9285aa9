"""The fast path for the common record: plain text turns, strictly alternating.

Most role-play records are OpenAI ``messages`` or ShareGPT ``conversations`` of plain text,
user first, alternating, no tools, no media. :func:`fast_conversation` checks exactly that
with loops that run in C (``map`` over ``itemgetter``), reuses the parsed turn objects as the
output messages when they already have exactly ``role``/``content``, and finishes through the
same :func:`~lfkit.data_tools.dialogue.build.finish` as the full rules. Anything else (a
missing key, another speaker, a merge, a greeting, a placeholder, a ``{{char}}`` to
replace, ...) returns None and goes through the layout transform and
:func:`~lfkit.data_tools.dialogue.build.build_conversation`, the one place that says what is
valid. So the fast path accepts a subset of the records, and for those it must return exactly
what the full path returns: ``tests/data_tools/test_fastpath.py`` checks that on every record
of every layout the tests build.
"""

from __future__ import annotations

import re
from itertools import repeat
from operator import itemgetter
from typing import Any

from lfkit.data_tools.dialogue.build import finish
from lfkit.data_tools.dialogue.layouts import preference
from lfkit.data_tools.dialogue.layouts.common import Context
from lfkit.data_tools.dialogue.model import ASSISTANT, USER, Conversation

_SPEAKER = {"messages": itemgetter("role"), "conversations": itemgetter("from")}
_TEXT = {"messages": itemgetter("content"), "conversations": itemgetter("value")}
# ShareGPT names the fast path maps; any other speaker takes the full path
_SHAREGPT = {"human": USER, "gpt": ASSISTANT, "user": USER, "assistant": ASSISTANT}
_PLACEHOLDER = re.compile(r"<(?:image|video|audio)>")
_PATTERNS: dict[int, list[str]] = {}
# keys whose presence sends a record to the full rules (tools, media, the preference and KTO
# keys that are refused there), checked in one C call
_EXTRAS = frozenset(("tools", "images", "videos", "audios")) | preference.KEYS


def _pattern(n: int) -> list[str]:
    """``["user", "assistant", "user", ...]`` of length n (cached)."""
    pattern = _PATTERNS.get(n)
    if pattern is None:
        pattern = _PATTERNS[n] = [USER if i % 2 == 0 else ASSISTANT for i in range(n)]
    return pattern


def fast_conversation(obj: dict[str, Any], ctx: Context, raw: bytes | None = None) -> Conversation | None:
    """The conversation of a plain record, or None to send it through the full rules.

    ``raw``, the record's JSON text if the caller has it, only lets checks for ``<`` and
    ``{{`` in the texts be skipped when the whole record has none.
    """
    key = "messages" if "messages" in obj else "conversations"
    turns = obj.get(key)
    if type(turns) is not list or len(turns) < 2 or not _EXTRAS.isdisjoint(obj):
        return None
    try:
        if max(map(len, turns)) != 2:  # extra keys (tool_calls, name, ...): the full path decides
            return None
        speakers = list(map(_SPEAKER[key], turns))
        texts = list(map(_TEXT[key], turns))
    except (KeyError, TypeError):
        return None
    system = obj.get("system")
    if system is None:
        system = ""
    elif type(system) is not str:
        return None
    contexts = [system.strip()]
    if speakers[0] == "system":
        if type(texts[0]) is not str or not texts[0].strip():
            return None
        contexts.append(texts[0].strip())
        turns, speakers, texts = turns[1:], speakers[1:], texts[1:]
    n = len(turns)
    try:  # str.isspace raises TypeError for a non-string; "" is not isspace(), hence the `in`
        if any(map(str.isspace, texts)) or "" in texts:
            return None
        lt = (raw is None or b"<" in raw) and any(map(str.__contains__, texts, repeat("<")))
        if lt and any(map(_PLACEHOLDER.search, texts)):
            return None
    except TypeError:
        return None
    character = ctx.character
    templated = character is not None and (raw is None or b"{{" in raw)
    if templated and ("{{" in system or any(map(str.__contains__, texts, repeat("{{")))):
        return None
    pattern = _PATTERNS.get(n) or _pattern(n)
    if key == "messages" and speakers == pattern:
        messages = turns  # already exactly {"role", "content"}: reuse the parsed objects
    else:
        if key == "conversations":
            speakers = list(map(_SHAREGPT.get, speakers))
        if speakers != pattern:
            return None
        messages = [{"role": r, "content": t} for r, t in zip(speakers, texts, strict=True)]
    trimmed = n % 2
    if trimmed:
        messages = messages[:-1]
    if not messages:
        return None
    if character is not None:
        role = character
    else:
        role_key = ctx.settings.role_key
        if role_key is None:
            role = ""
        else:
            role = obj.get(role_key)
            if type(role) is not str or not role:
                return None  # numbers, missing or empty: the full path converts or rejects
    return finish(role, contexts, messages, ctx.policy, character, (trimmed, 0, 0))
