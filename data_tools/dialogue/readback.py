"""Pass 2 of a sampled conversion: read back the picked records and convert only those.

Pass 1 (:mod:`lfkit.data_tools.dialogue.index`) left each record's place: the file holding its
bytes (an input, or the spool of a ``.gz`` file or JSON array), offset and length. A round of
the draw (:mod:`lfkit.data_tools.dialogue.sampling`) hands its picks here; they are read in
file order through a memory map (a window of the mapping is released as soon as it is
passed, so memory stays flat on inputs of any size), and each goes through
:func:`lfkit.data_tools.dialogue.transform.convert_line`, the same parse, transform, rules
and render as every other pass. The result is the batch's :class:`Outcomes` (the rows spooled
in the work folder) and the reject entries of the picks that failed.

Large rounds are split into batches converted by forked workers
(:func:`lfkit.data_tools.core.parallel.ordered_map`); each batch's results depend only on
its records, so the output is the same with any number of workers.
"""

from __future__ import annotations

import mmap
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
from lfkit.data_tools.core.records import RecordError, SourceLine
from lfkit.data_tools.core.rejects import reject_entry
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.outcomes import Outcomes, OutcomeWriter
from lfkit.data_tools.dialogue.transform import convert_line

RELEASE_BYTES = 64 << 20  # give back the pages of a source's mapping every this many bytes


@dataclass(frozen=True)
class ReadbackSettings:
    """What converting picked records needs (picklable for worker processes)."""

    layout: LayoutSettings
    context_only: bool
    work_dir: str


@dataclass
class Picks:
    """Records to convert, in the order they are read (by source, then offset).

    ``sources`` / ``files`` are tables (paths; files: (path, is a JSON array)), the columns
    index them.
    """

    source_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    file_ids: np.ndarray
    lines: np.ndarray
    positions: np.ndarray
    sources: list[str]
    files: list[tuple[str, bool]]

    def __len__(self) -> int:
        return len(self.offsets)

    def part(self, start: int, stop: int) -> Picks:
        columns = (self.source_ids, self.offsets, self.lengths, self.file_ids, self.lines, self.positions)
        return Picks(*(c[start:stop] for c in columns), self.sources, self.files)


def convert_picks(job: tuple[Picks, ReadbackSettings]) -> tuple[Outcomes, list[tuple[int, dict[str, Any]]]]:
    """Convert the records of ``job``'s :class:`Picks`; their outcomes (in order) and rejects.

    Each reject is ``(position in the picks, rejects-file entry)``.
    """
    picks, settings = job
    writer = OutcomeWriter(settings.work_dir)
    add, reject = writer.add, writer.reject
    rejects: list[tuple[int, dict[str, Any]]] = []
    context_only = settings.context_only
    offsets, lengths = picks.offsets.tolist(), picks.lengths.tolist()
    file_ids, lines, positions = picks.file_ids.tolist(), picks.lines.tolist(), picks.positions.tolist()
    contexts = [Context.for_file(path, settings.layout) for path, _ in picks.files]
    try:
        for sid, rows in _by_source(picks):
            with _Source(picks.sources[sid]) as source:
                read = source.read
                for i in rows:
                    fid = file_ids[i]
                    path, element = picks.files[fid]
                    raw = read(offsets[i], lengths[i])
                    line = _new_line(SourceLine, (path, lines[i], raw, element, None, positions[i]))
                    try:
                        conv, data, key = convert_line(line, contexts[fid], context_only)
                    except RecordError as err:
                        reject()
                        rejects.append((i, reject_entry(line, err)))
                        continue
                    add(conv, data, key, context_only)
    except BaseException:
        writer.abort()
        raise
    return writer.close(), rejects


_new_line = tuple.__new__  # SourceLine(...) without the NamedTuple's Python-level __new__


def _by_source(picks: Picks) -> list[tuple[int, list[int]]]:
    """The picks' positions grouped by source, in order (the picks are sorted by source)."""
    if not len(picks):
        return []
    ids = picks.source_ids
    cuts = np.flatnonzero(ids[1:] != ids[:-1]) + 1
    bounds = [0, *cuts.tolist(), len(ids)]
    return [(int(ids[a]), list(range(a, b))) for a, b in zip(bounds, bounds[1:], strict=False)]


class _Source:
    """Positional reads from one file through a read-only memory map, released as it is passed."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd = os.open(path, os.O_RDONLY)
        size = os.fstat(self._fd).st_size
        self._map = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ) if size else None
        self._released = 0

    def __enter__(self) -> _Source:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._map is not None:
            self._map.close()
        os.close(self._fd)

    def read(self, offset: int, length: int) -> bytes:
        if offset - self._released >= RELEASE_BYTES:
            self._release(offset)
        data = self._map[offset : offset + length] if self._map is not None else b""
        if len(data) != length:
            raise OSError(f"{self.path} got shorter while it was being converted; run the conversion again")
        return data

    def _release(self, offset: int) -> None:
        upto = offset - offset % mmap.PAGESIZE
        if hasattr(mmap, "MADV_DONTNEED"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, upto - self._released)
        self._released = upto
