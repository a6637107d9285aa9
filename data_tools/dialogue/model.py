"""lfkit's one conversation model: what every dialogue layout is turned into.

A layout transform (:mod:`lfkit.data_tools.dialogue.layouts`) reads one raw record of its
layout into :class:`RawTurn` values plus the record's system text, tools and media, and
:func:`lfkit.data_tools.dialogue.build.build_conversation` validates them into a
:class:`Conversation` (or raises :class:`~lfkit.data_tools.core.records.RecordError`): the
only place where conversation rules live.

A :class:`Conversation` is already in LlamaFactory's sharegpt shape (role/content messages,
system text, tools column, media columns), so rendering it is one ``orjson.dumps``. Its
messages alternate *prompt* turns (``user``, or ``observation``: tool results) and *response*
turns (``assistant``, or ``function_call``: the assistant's tool calls), start with a prompt
turn and end with a response turn, which is exactly what LlamaFactory's sharegpt converter
accepts (odd positions user/observation, even positions assistant/function_call); anything
else it drops with only a log warning.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, TypedDict

# Speakers of the output messages (LlamaFactory's Role values, DatasetAttr's default tags).
USER, ASSISTANT, FUNCTION_CALL, OBSERVATION = "user", "assistant", "function_call", "observation"
# Only in RawTurn: a system turn, folded into the system text (or rejected mid-dialogue).
SYSTEM = "system"
PROMPT_SPEAKERS = frozenset((USER, OBSERVATION))
RESPONSE_SPEAKERS = frozenset((ASSISTANT, FUNCTION_CALL))

# Which optional output columns a conversation fills (a bit set, kept per conversation).
TOOLS, IMAGES, VIDEOS, AUDIOS = 1, 2, 4, 8
FEATURE_COLUMNS = {TOOLS: "tools", IMAGES: "images", VIDEOS: "videos", AUDIOS: "audios"}


class Message(TypedDict):
    """One output message: exactly these two keys (the sharegpt tags registered for the file)."""

    role: str  # USER, ASSISTANT, FUNCTION_CALL or OBSERVATION
    content: str


class RawTurn(NamedTuple):
    """One turn as a layout read it, before the conversation rules are applied."""

    speaker: str  # SYSTEM, USER, ASSISTANT, FUNCTION_CALL or OBSERVATION
    text: str  # for FUNCTION_CALL: the calls as JSON (see layouts.tools)
    field: str  # where it came from, for reject messages: "messages[3]"


@dataclass(frozen=True, slots=True)
class Media:
    """Media file paths in the order of their ``<image>`` / ``<video>`` / ``<audio>`` placeholders."""

    images: tuple[str, ...] = ()
    videos: tuple[str, ...] = ()
    audios: tuple[str, ...] = ()

    @property
    def features(self) -> int:
        return (
            (IMAGES if self.images else 0) | (VIDEOS if self.videos else 0) | (AUDIOS if self.audios else 0)
        )


NO_MEDIA = Media()


@dataclass(frozen=True, slots=True)
class Notes:
    """What the conversation rules changed in a record (counted in the summary)."""

    trimmed_user_turns: int = 0  # trailing prompt turns cut (nothing answers them)
    moved_greetings: int = 0  # leading assistant turns moved into the system text
    merged_turns: int = 0  # consecutive turns of one speaker joined into one
    role_spelling: str | None = None  # the role as written, when whitespace normalisation changed it


NO_NOTES = Notes()


class Conversation(NamedTuple):
    """A valid conversation in output form (see the module docstring).

    ``role`` is the unit of per-role sampling (persona / character / user id; ``""`` for
    none), whitespace-normalised. ``tools`` is a JSON list of tool schemas or ``""``.
    ``messages`` must not be mutated (it may be the parsed record's own list). A NamedTuple,
    immutable like a frozen dataclass and five times cheaper to build: one is built per record.
    """

    role: str
    system: str
    messages: list[Message]
    tools: str = ""
    media: Media = NO_MEDIA
    notes: Notes = NO_NOTES
    features: int = 0  # the optional columns it fills: TOOLS | IMAGES | VIDEOS | AUDIOS bits
