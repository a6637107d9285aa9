"""The conversation rules: the one validator every dialogue layout goes through.

:func:`build_conversation` takes what a layout read (role, system texts, :class:`RawTurn`
values, tools, media) and either returns a valid :class:`Conversation` or raises
:class:`RecordError` with a precise reason and field. In order:

1. Leading ``system`` turns join the system text; a ``system`` turn after the dialogue has
   started is rejected (``misplaced_system_turn``).
2. For role-play layouts (``substitute``), ``{{char}}`` and ``{{user}}`` are replaced by the
   character's name and :attr:`Policy.user_name` in every text.
3. Consecutive turns of one speaker are merged (:attr:`Policy.merge_consecutive`, on by
   default; off, they are rejected as ``consecutive_user_turns`` /
   ``consecutive_assistant_turns``). Texts are joined by a newline; an assistant text followed
   by its tool calls becomes one ``function_call`` turn; consecutive tool results are always
   joined (parallel calls, see :mod:`.layouts.tools`).
4. Leading assistant turns (a greeting: the character speaks first) move into the system text
   as ``Opening message:`` (:attr:`Policy.greeting_to_system`, on by default; off, they are
   rejected as ``assistant_first``).
5. Turns must then alternate prompt (``user`` / ``observation``) and response (``assistant``
   / ``function_call``), a tool result must answer a tool call (``tool_result_without_call``)
   and a tool call must get its result before the user speaks again
   (``tool_call_without_result``).
6. Trailing prompt turns (nothing answers them) are trimmed; a conversation with no response
   turn left is rejected (``no_assistant_turn``).
7. Media placeholders are counted against the media files (:mod:`.layouts.multimodal`).
8. With a character name (PIPPA's ``bot_name``, a per-character file's name), the system text
   says who the model plays (:attr:`Policy.character_intro`) unless it already names them.
9. The role is whitespace-normalised (``"alice "`` and ``"alice"`` are one role).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.layouts import multimodal, tools
from lfkit.data_tools.dialogue.model import (
    ASSISTANT,
    FUNCTION_CALL,
    NO_MEDIA,
    NO_NOTES,
    OBSERVATION,
    PROMPT_SPEAKERS,
    SYSTEM,
    TOOLS,
    USER,
    Conversation,
    Media,
    Message,
    Notes,
    RawTurn,
)

TEMPLATE = re.compile(r"\{\{\s*(char|user)\s*\}\}", re.IGNORECASE)
GREETING = "Opening message:\n"
MERGE_SEPARATOR = "\n"


@dataclass(frozen=True)
class Policy:
    """The conversation rules a user can switch (``lfkit data convert dialogue`` options)."""

    merge_consecutive: bool = True  # join consecutive turns of one speaker (else reject them)
    greeting_to_system: bool = True  # move an assistant-first greeting into the system text
    user_name: str = "User"  # replaces {{user}} in role-play layouts
    character_intro: str = "You are {name}."  # added to the system text when it lacks the name


# Time-series records use the plain rules: their series follow the turns one to one.
STRICT = Policy(merge_consecutive=False, greeting_to_system=False)


@functools.lru_cache(maxsize=1 << 16)
def normalise_role(role: str) -> str:
    """Whitespace runs become one space, ends are stripped (cached: roles repeat)."""
    return " ".join(role.split())


def build_conversation(
    *,
    role: str,
    system: list[str],
    turns: list[RawTurn],
    key: str,
    policy: Policy,
    character: str | None = None,
    substitute: bool = False,
    character_field: str = "bot_name",
    tools_json: str = "",
    media: Media = NO_MEDIA,
) -> Conversation:
    """Apply the rules of the module docstring; ``key`` names the turn list in messages."""
    contexts = [s.strip() for s in system if s and s.strip()]
    start = 0
    while start < len(turns) and turns[start].speaker == SYSTEM:
        contexts.append(turns[start].text.strip())
        start += 1
    body = turns[start:]
    for turn in body:
        if turn.speaker == SYSTEM:
            raise RecordError("misplaced_system_turn", "system turn after the dialogue started", turn.field)
    if substitute:
        contexts, body = _substitute(contexts, body, character, policy.user_name, character_field)
    body, merged = _merge(body, policy.merge_consecutive)
    greetings = 0
    while body and body[0].speaker == ASSISTANT and policy.greeting_to_system:
        contexts.append(GREETING + body[0].text)
        body = body[1:]
        greetings += 1
    _check_order(body, key)
    trimmed = 0
    while body and body[-1].speaker in PROMPT_SPEAKERS:
        body = body[:-1]
        trimmed += 1
    if not body:
        raise RecordError("no_assistant_turn", "conversation has no assistant turn to learn from", key)
    messages: list[Message] = [{"role": t.speaker, "content": t.text} for t in body]
    if media is not NO_MEDIA or _may_hold_placeholders(messages):
        system_text = "\n\n".join(c for c in contexts if c)
        multimodal.check_placeholders(system_text, [m["content"] for m in messages], media, key)
    features = media.features
    if tools_json or any(t.speaker in (FUNCTION_CALL, OBSERVATION) for t in body):
        features |= TOOLS
    notes = (trimmed, greetings, merged)
    return finish(role, contexts, messages, policy, character, notes, tools_json, media, features)


def finish(
    role: str,
    contexts: list[str],
    messages: list[Message],
    policy: Policy,
    character: str | None,
    counts: tuple[int, int, int] = (0, 0, 0),
    tools_json: str = "",
    media: Media = NO_MEDIA,
    features: int = 0,
) -> Conversation:
    """The last steps (8 and 9 of the module docstring), shared with the fast path.

    ``contexts`` are stripped system texts in order; ``counts`` are the trimmed, greeting and
    merged turn counts for :class:`Notes`.
    """
    system_text = "\n\n".join(filter(None, contexts))
    if character and policy.character_intro and character.casefold() not in system_text.casefold():
        intro = policy.character_intro.format(name=character)
        system_text = f"{intro}\n\n{system_text}" if system_text else intro
    clean = normalise_role(role)
    spelling = role if clean != role else None
    notes = NO_NOTES if spelling is None and counts == (0, 0, 0) else Notes(*counts, spelling)
    # Conversation(...) through the NamedTuple's Python-level __new__ costs more than the rest
    # of this function; the same tuple, built in C (field order as declared):
    return _new_conversation(Conversation, (clean, system_text, messages, tools_json, media, notes, features))


_new_conversation = tuple.__new__


def _substitute(
    contexts: list[str], body: list[RawTurn], character: str | None, user_name: str, field: str
) -> tuple[list[str], list[RawTurn]]:
    def replace(match: re.Match[str]) -> str:
        if match.group(1).lower() == "user":
            return user_name
        if not character:
            raise RecordError(
                "missing_character_name",
                f"the text uses {match.group(0)} but the record has no character name to put there",
                field,
            )
        return character

    contexts = [TEMPLATE.sub(replace, c) if "{{" in c else c for c in contexts]
    body = [t._replace(text=TEMPLATE.sub(replace, t.text)) if "{{" in t.text else t for t in body]
    return contexts, body


def _merge(body: list[RawTurn], allowed: bool) -> tuple[list[RawTurn], int]:
    """Join consecutive turns of one speaker (see the module docstring, step 3)."""
    out: list[RawTurn] = []
    merged = 0
    for turn in body:
        prev = out[-1] if out else None
        if prev is None:
            out.append(turn)
            continue
        pair = (prev.speaker, turn.speaker)
        if pair == (OBSERVATION, OBSERVATION):  # parallel tool results: always one observation
            out[-1] = prev._replace(text=tools.merge_results(prev.text, turn.text))
            continue
        if pair not in _MERGEABLE:
            out.append(turn)
            continue
        if not allowed:
            reason = "consecutive_user_turns" if turn.speaker == USER else "consecutive_assistant_turns"
            raise RecordError(
                reason, f"two {turn.speaker} turns in a row ({prev.field}, {turn.field})", turn.field
            )
        if pair == (USER, USER) or pair == (ASSISTANT, ASSISTANT):
            text = f"{prev.text}{MERGE_SEPARATOR}{turn.text}"
        elif pair == (ASSISTANT, FUNCTION_CALL):
            text = tools.with_text(prev.text, turn.text)
        else:  # two function calls: one parallel call
            text = tools.merge_calls(prev.text, turn.text)
        out[-1] = RawTurn(turn.speaker, text, prev.field)
        merged += 1
    return out, merged


_MERGEABLE = frozenset(
    ((USER, USER), (ASSISTANT, ASSISTANT), (ASSISTANT, FUNCTION_CALL), (FUNCTION_CALL, FUNCTION_CALL))
)


def _check_order(body: list[RawTurn], key: str) -> None:
    """Prompt and response turns alternate, starting with a prompt; tool turns pair up."""
    for j, turn in enumerate(body):
        prev = body[j - 1].speaker if j else None
        if turn.speaker == OBSERVATION and prev != FUNCTION_CALL:
            raise RecordError(
                "tool_result_without_call", "a tool result that does not follow a tool call", turn.field
            )
        if prev == FUNCTION_CALL and turn.speaker != OBSERVATION:
            raise RecordError(
                "tool_call_without_result",
                f"a tool call followed by a {turn.speaker} turn, not its result",
                turn.field,
            )
        if (j % 2 == 0) != (turn.speaker in PROMPT_SPEAKERS):
            if j == 0:
                raise RecordError("assistant_first", "the first dialogue turn is the assistant's", turn.field)
            if prev == OBSERVATION:
                raise RecordError(
                    "unanswered_tool_result", "a user turn follows a tool result the assistant never used",
                    turn.field,
                )  # fmt: skip
            reason = "consecutive_user_turns" if turn.speaker == USER else "consecutive_assistant_turns"
            where = f"({body[j - 1].field}, {turn.field})"
            raise RecordError(reason, f"two {turn.speaker} turns in a row {where}", turn.field)


def _may_hold_placeholders(messages: list[Message]) -> bool:
    return any("<" in m["content"] and _PLACEHOLDER.search(m["content"]) for m in messages)


_PLACEHOLDER = re.compile(r"<(?:image|video|audio)>")
