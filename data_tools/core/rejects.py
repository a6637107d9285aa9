"""The rejects file: every record that was not converted, with where it came from and why.

Bad input must never crash a conversion and never vanish: each rejected line is written to
``DIR/NAME.rejects.jsonl`` as one JSON object::

    {"file": "...", "line": 17, "field": "messages[2].role", "reason": "unknown_speaker_role",
     "message": "speaker role 'narrator' is not one of ...", "record": "<the raw line>"}

``record`` is the raw line decoded with replacement characters and truncated to
:data:`RECORD_PREVIEW_CHARS` characters (with a note saying how long it really was), so one
huge bad line cannot blow up the rejects file. For a record from a JSON array file, ``line``
is the element's 0-based index and ``"element": true`` is added. A dropped duplicate
(reason ``duplicate`` / ``near_duplicate``) also has ``duplicate_of`` (``{"file", "line"}`` of
the conversation it repeats) and shows its converted form as ``record``. The file is written through
:func:`lfkit.atomic.atomic_write`: it appears (replacing any previous one, even when
there are no rejects this time) only when the run finishes cleanly.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson
from lfkit.data_tools.core.records import RecordError, SourceLine

from lfkit.atomic import AtomicGroup, atomic_write

RECORD_PREVIEW_CHARS = 2000
KEEP_FIRST = 20


def rejects_path(out_dir: str | os.PathLike[str], name: str) -> Path:
    """Where the rejects of dataset ``name`` go: ``out_dir/name.rejects.jsonl``."""
    return Path(out_dir) / f"{name}.rejects.jsonl"


def reject_entry(line: SourceLine, err: RecordError) -> dict[str, Any]:
    """The rejects-file object for one line (see the module docstring for the layout)."""
    entry = {
        "file": line.path,
        "line": line.lineno,
        "field": err.field,
        "reason": err.reason,
        "message": err.message,
        "record": preview(line.raw),
    }
    if line.element:
        entry["element"] = True
    return entry


def preview(raw: bytes) -> str:
    """``raw`` decoded for the rejects file, cut at :data:`RECORD_PREVIEW_CHARS` characters."""
    text = raw.decode("utf-8", errors="replace")
    if len(text) > RECORD_PREVIEW_CHARS:
        text = f"{text[:RECORD_PREVIEW_CHARS]}... [truncated, {len(raw)} bytes in all]"
    return text


def where(entry: dict[str, Any]) -> str:
    """``file:line``, or ``file[index]`` for an element of a JSON array file."""
    if entry.get("element"):
        return f"{entry['file']}[{entry['line']}]"
    return f"{entry['file']}:{entry['line']}"


def format_reject(entry: dict[str, Any]) -> str:
    """One human line for a reject: ``file:line [field] reason: message``."""
    field = f" [{entry['field']}]" if entry.get("field") else ""
    return f"{where(entry)}{field} {entry['reason']}: {entry['message']}"


class RejectTally:
    """Counts rejects by reason and keeps the first few, without writing a file (``lfkit data stats``).

    ``count`` and ``by_reason`` keep totals; ``first(n)`` returns the first rejects (up to
    :data:`KEEP_FIRST`) for summaries and ``--strict`` messages.
    """

    path: Path | None = None

    def __init__(self) -> None:
        self.count = 0
        self.by_reason: Counter[str] = Counter()
        self._first: list[dict[str, Any]] = []

    def add(self, line: SourceLine, err: RecordError) -> dict[str, Any]:
        """Count one rejected line; returns its rejects-file entry."""
        entry = reject_entry(line, err)
        self.add_entry(entry)
        return entry

    def add_entry(self, entry: dict[str, Any]) -> None:
        """Count an already built entry (see :func:`reject_entry`), e.g. one from a worker process."""
        self.count += 1
        self.by_reason[entry["reason"]] += 1
        if len(self._first) < KEEP_FIRST:
            self._first.append(entry)

    def first(self, n: int = 5) -> list[dict[str, Any]]:
        """The first ``n`` rejects (at most :data:`KEEP_FIRST`), in input order."""
        return self._first[:n]


class RejectsWriter(RejectTally):
    """Context manager writing rejects to ``out_dir/name.rejects.jsonl`` atomically.

    ``add`` streams each reject to a temporary file (and counts it, see :class:`RejectTally`).
    Leaving the ``with`` block normally publishes the file; leaving it with an exception
    discards it and keeps the previous rejects file. With a ``group`` the file is staged in that
    :class:`~lfkit.atomic.AtomicGroup` instead and published with the run's other outputs.
    """

    def __init__(self, out_dir: str | os.PathLike[str], name: str, group: AtomicGroup | None = None) -> None:
        super().__init__()
        self.path = rejects_path(out_dir, name)
        self._group = group
        self._cm: Any = None
        self._fh: IO[bytes] | None = None

    def __enter__(self) -> RejectsWriter:
        if self._group is not None:  # published with the run's other outputs by the group
            self._fh = self._group.open(self.path, "wb")
            return self
        self._cm = atomic_write(self.path, "wb")
        self._fh = self._cm.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self._fh = None
        if self._cm is None:
            return None
        return self._cm.__exit__(exc_type, exc, tb)

    def add_entry(self, entry: dict[str, Any]) -> None:
        """Write one entry to the file and count it (``add`` builds the entry from a line)."""
        if self._fh is None:
            raise RuntimeError("RejectsWriter used outside its with-block")
        self._fh.write(orjson.dumps(entry) + b"\n")
        super().add_entry(entry)
