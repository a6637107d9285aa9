"""What converting records gave: each one's output rows (in a spool file) and numbers, or a reject.

The passes that convert records (the full pass over every record,
:mod:`lfkit.data_tools.dialogue.scan`, and the second pass over the picked ones,
:mod:`lfkit.data_tools.dialogue.readback`) write each converted record's rendered rows to a
spool file in the run's work folder and keep, per record, only a few numbers
(:class:`Outcomes`): where its rows are, how many samples, turns and characters it has, which
optional columns it fills, its duplicate key and what the conversation rules changed. So
memory holds about 50 bytes per converted record, whatever the length of the conversations,
and writing the output later copies bytes without parsing anything again.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from dataclasses import dataclass, field
from operator import itemgetter
from typing import Any

from lfkit.data_tools.dialogue.model import NO_NOTES, Conversation

SPOOL_BUFFER = 1 << 20
NOTE_BITS = 21  # trimmed, greetings and merged turns of one record, packed in one 64-bit value
NOTE_MAX = (1 << NOTE_BITS) - 1
_CONTENT = itemgetter("content")


def pack_notes(trimmed: int, greetings: int, merged: int) -> int:
    """The three :class:`~lfkit.data_tools.dialogue.model.Notes` counts in one integer."""
    return (
        min(trimmed, NOTE_MAX)
        | min(greetings, NOTE_MAX) << NOTE_BITS
        | min(merged, NOTE_MAX) << 2 * NOTE_BITS
    )


def unpack_notes(packed: Any) -> tuple[Any, Any, Any]:
    """The (trimmed, greetings, merged) counts of packed values (ints or numpy arrays)."""
    return packed & NOTE_MAX, (packed >> NOTE_BITS) & NOTE_MAX, (packed >> 2 * NOTE_BITS) & NOTE_MAX


@dataclass
class Outcomes:
    """Per-record results of converting a sequence of records: parallel columns in that order.

    ``ok[i]`` is 1 for a converted record, 0 for a rejected one (its other columns are then 0).
    A converted record's rows are ``spools[spool_ids[i]]`` at ``row_offsets[i]``,
    ``row_lengths[i]`` bytes.
    """

    ok: array = field(default_factory=lambda: array("B"))
    spool_ids: array = field(default_factory=lambda: array("I"))
    row_offsets: array = field(default_factory=lambda: array("Q"))
    row_lengths: array = field(default_factory=lambda: array("I"))
    samples: array = field(
        default_factory=lambda: array("I")
    )  # training samples (context-only: one per user turn)
    turns: array = field(default_factory=lambda: array("I"))
    chars: array = field(default_factory=lambda: array("Q"))
    features: array = field(default_factory=lambda: array("B"))  # TOOLS | IMAGES | VIDEOS | AUDIOS bits
    keys: array = field(default_factory=lambda: array("Q"))  # duplicate keys (render.duplicate_key)
    notes: array = field(default_factory=lambda: array("Q"))  # pack_notes(trimmed, greetings, merged)
    tokens: array | None = None  # with a tokenizer (lfkit data stats --tokenizer)
    spools: list[str] = field(default_factory=list)
    signature_file: str | None = None  # MinHash signatures of the converted records, in order

    def __len__(self) -> int:
        return len(self.ok)


class OutcomeWriter:
    """Appends records' outcomes, spooling the rendered rows into a new file in ``work_dir``.

    ``signatures``: also spool each converted record's MinHash signature (``--dedup near``);
    ``tokenizer``: also count each converted record's tokens (content only, no template).
    """

    TOKENIZE_BATCH = 256

    def __init__(self, work_dir: str, signatures: bool = False, tokenizer: Any = None) -> None:
        self.out = Outcomes()
        fd, name = tempfile.mkstemp(prefix="spool.", dir=work_dir)
        self._spool = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
        self._write = self._spool.write
        self.out.spools.append(name)
        self._offset = 0
        self._signatures = None
        if signatures:
            fd, sig_name = tempfile.mkstemp(prefix="minhash.", dir=work_dir)
            self._signatures = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
            self.out.signature_file = sig_name
        self._tokenizer = tokenizer
        self._pending: list[str] = []
        if tokenizer is not None:
            self.out.tokens = array("Q")
        out = self.out
        self._columns = (
            out.ok.append, out.spool_ids.append, out.row_offsets.append, out.row_lengths.append,
            out.samples.append, out.turns.append, out.chars.append, out.features.append,
            out.keys.append, out.notes.append,
        )  # fmt: skip

    def add(self, conv: Conversation, rows: bytes, key: int, context_only: bool) -> None:
        """A converted record: its conversation, rendered rows and duplicate key."""
        ok, spool, offset, length, samples, turns, chars, features, keys, notes = self._columns
        messages = conv.messages
        size = len(rows)
        ok(1)
        spool(0)
        offset(self._offset)
        length(size)
        samples(sum(m["role"] == "user" for m in messages) if context_only else 1)
        turns(len(messages))
        chars(len(conv.system) + sum(map(len, map(_CONTENT, messages))))
        features(conv.features)
        keys(key)
        note = conv.notes
        notes(
            0
            if note is NO_NOTES
            else pack_notes(note.trimmed_user_turns, note.moved_greetings, note.merged_turns)
        )
        self._write(rows)
        self._offset += size
        if self._signatures is not None:
            from lfkit.data_tools.dialogue.dedup import signature

            self._signatures.write(signature(conv))
        if self._tokenizer is not None:
            self._pending.append("\n".join([conv.system, *map(_CONTENT, messages)]))
            if len(self._pending) >= self.TOKENIZE_BATCH:
                self._flush_tokens()

    def reject(self) -> None:
        """A rejected record: zeros in every column (its reject entry is written elsewhere)."""
        for append in self._columns:
            append(0)

    def _flush_tokens(self) -> None:
        if self._pending:
            encoded = self._tokenizer(self._pending, add_special_tokens=False)["input_ids"]
            self.out.tokens.extend(len(ids) for ids in encoded)
            self._pending.clear()

    def close(self) -> Outcomes:
        """Finish the spool files; the outcomes of every record added, in order."""
        if self._tokenizer is not None:
            self._flush_tokens()
            self._fill_tokens()
        self._spool.close()
        if self._signatures is not None:
            self._signatures.close()
        return self.out

    def _fill_tokens(self) -> None:
        """Token counts were collected for converted records only: spread them over all records."""
        counted = iter(self.out.tokens)
        self.out.tokens = array("Q", (next(counted) if ok else 0 for ok in self.out.ok))

    def abort(self) -> None:
        """Close the files after an error (the work folder is removed with them)."""
        self._spool.close()
        if self._signatures is not None:
            self._signatures.close()
