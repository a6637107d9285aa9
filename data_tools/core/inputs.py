"""Streaming input: records with their true file and position, never a whole file in memory.

An input is a file or a directory. Files are read by their content, whatever their name: a
file whose first non-blank byte is ``[`` is one JSON array, streamed element by element
(:mod:`lfkit.data_tools.core.json_array`; a record's ``lineno`` is then its element index),
anything else is JSON Lines. ``.gz`` files are decompressed on the fly. A UTF-8 byte-order
mark at the start of a file (Windows editors write one) is skipped.

A directory stands for every file under it, subfolders included, in sorted path order (the
layout of one-file-per-character role-play collections, where the file name is the character).
Files whose names end in ``.jsonl``, ``.json``, ``.jsonl.gz`` or ``.json.gz`` in any letter case
are read; every other file is *skipped* and listed with its reason (:class:`Skipped`), so the
summary says what was not read instead of leaving it out silently.

Lines are read as raw bytes so that invalid UTF-8 becomes a per-record reject instead of a
crash, and so that the rejects file can show the exact source text. Blank lines are skipped
but still counted, so the ``lineno`` of every :class:`SourceLine` is the line an editor shows.

A truncated or corrupt ``.gz`` file cannot be read past the damage, and what is left of it is
not a dataset anyone asked for: reading it raises :class:`CorruptInputError` (file and last
good line), and the converters fail the whole run with that message, publishing nothing.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lfkit.data_tools.core.json_array import ArrayError, iter_elements
from lfkit.data_tools.core.records import SourceLine

READ_SUFFIXES = (".jsonl", ".json", ".jsonl.gz", ".json.gz")
PROGRESS_EVERY_LINES = 2048
READ_BUFFER = 1 << 20  # line iteration over 8 KiB buffers costs 5x more on long role-play lines
BOM = b"\xef\xbb\xbf"
SNIFF_BYTES = 4096


class CorruptInputError(ValueError):
    """An input file whose compressed data ends early or is damaged (not one bad record: the file).

    ``last_line`` is the last line read intact (0: none). The arguments are kept in ``args`` so
    the error crosses process boundaries (scan workers) unchanged.
    """

    def __init__(self, path: str, last_line: int, detail: str) -> None:
        super().__init__(path, last_line, detail)
        self.path, self.last_line, self.detail = path, last_line, detail

    def __str__(self) -> str:
        where = "before its first line"
        if self.last_line:
            where = f"after line {self.last_line} (the last line read)"
        return (
            f"{self.path}: compressed data is truncated or corrupt {where}: {self.detail}; "
            "re-download or re-compress the file"
        )


@dataclass(frozen=True)
class Skipped:
    """A file under an input directory that was not read, and why."""

    path: str
    reason: str


@dataclass
class InputSet:
    """The files to read, in order, and the files under input directories that were skipped."""

    files: list[Path] = field(default_factory=list)
    skipped: list[Skipped] = field(default_factory=list)

    def __iter__(self) -> Iterator[Path]:
        return iter(self.files)

    def __len__(self) -> int:
        return len(self.files)


def is_readable_name(name: str) -> bool:
    """Whether a file under an input directory is read (its suffix, in any letter case)."""
    return name.lower().endswith(READ_SUFFIXES)


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> InputSet:
    """Resolve inputs to the files to read; a directory becomes every file under it, sorted.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for a directory with no
    file to read, so a typo never turns into a silently empty dataset.
    """
    found = InputSet()
    for item in paths:
        path = Path(item)
        if path.is_dir():
            before = len(found.files)
            for sub in sorted(p for p in path.rglob("*") if not p.is_dir()):
                rel = sub.relative_to(path)
                if any(part.startswith(".") for part in rel.parts):
                    found.skipped.append(Skipped(str(sub), "hidden file"))
                elif not is_readable_name(sub.name):
                    found.skipped.append(Skipped(str(sub), "not .jsonl, .json, .jsonl.gz or .json.gz"))
                elif not sub.is_file():
                    found.skipped.append(Skipped(str(sub), "not a regular file"))
                elif not os.access(sub, os.R_OK):
                    found.skipped.append(Skipped(str(sub), "not readable (permissions)"))
                else:
                    found.files.append(sub)
            if len(found.files) == before:
                raise ValueError(f"{path}: directory has no .jsonl, .json, .jsonl.gz or .json.gz files")
        elif path.is_file():
            found.files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return found


@functools.lru_cache(maxsize=4096)
def file_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its ``.jsonl`` / ``.json`` (``.gz``) suffix, any case: a character's name."""
    name = Path(path).name
    lower = name.lower()
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".gz"):
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return name


def total_bytes(files: Iterable[str | os.PathLike[str]]) -> int:
    """Sum of on-disk sizes (compressed size for ``.gz``): the unit of the progress bars."""
    return sum(Path(f).stat().st_size for f in files)


@dataclass(frozen=True)
class Chunk:
    """A byte range ``[start, end)`` of one input file that starts and ends at line boundaries.

    ``end`` is None for "to the end of the file" (always the case for ``.gz`` files and JSON
    arrays, which cannot be split). Chunks let several processes read one large file in
    parallel; the line numbers :func:`iter_chunk` yields are relative to the chunk (the first
    line is 1), and the caller adds the line counts of the file's earlier chunks.
    """

    path: str
    start: int = 0
    end: int | None = None
    array: bool = False

    @property
    def size(self) -> int:
        """On-disk bytes this chunk covers (for progress bars)."""
        end = self.end if self.end is not None else os.stat(self.path).st_size
        return end - self.start


def open_input(path: str, raw_fh: IO[bytes]) -> IO[bytes]:
    """``raw_fh`` as the text it holds: decompressed on the fly for a `.gz` file."""
    if path.lower().endswith(".gz"):
        gz = _GzipRaw(gzip.GzipFile(fileobj=raw_fh, mode="rb"))
        return io.BufferedReader(gz, buffer_size=READ_BUFFER)
    return raw_fh


def is_json_array(path: str | os.PathLike[str]) -> bool:
    """Whether the file holds one JSON array: its first non-blank byte (after a BOM) is ``[``.

    A corrupt ``.gz`` is reported by the read that follows, not here.
    """
    name = str(path)
    try:
        with open(name, "rb") as raw_fh:
            fh = open_input(name, raw_fh)
            head = b""
            while len(head) < SNIFF_BYTES * 64:
                data = fh.read(SNIFF_BYTES)
                if not data:
                    break
                head += data
                if head.lstrip(BOM).strip():
                    break
    except (EOFError, OSError, zlib.error):
        return False
    return head.removeprefix(BOM).lstrip(b" \t\r\n").startswith(b"[")


def plan_chunks(files: Iterable[str | os.PathLike[str]], chunk_bytes: int) -> list[Chunk]:
    """Split plain JSON Lines files larger than ``chunk_bytes`` into line-aligned chunks, in order."""
    chunks: list[Chunk] = []
    for item in files:
        path = str(item)
        if is_json_array(path):
            chunks.append(Chunk(path, array=True))
            continue
        size = os.stat(path).st_size
        if path.lower().endswith(".gz") or size <= chunk_bytes:
            chunks.append(Chunk(path))
            continue
        with open(path, "rb") as fh:
            start = 0
            while start < size:
                fh.seek(min(start + chunk_bytes, size))
                fh.readline()  # move to just after the next newline (or EOF)
                end = min(fh.tell(), size)
                chunks.append(Chunk(path, start, end if end < size else None))
                start = end
    return chunks


class LineCounter:
    """Receives the number of physical lines (blank ones included) a chunk iteration consumed."""

    lines: int = 0


class _GzipRaw(io.RawIOBase):
    """A ``GzipFile`` read one decompressed piece at a time (``read1``).

    ``GzipFile.readinto`` fills the whole buffer before returning, so on a truncated file the
    error would also discard the intact lines decompressed just before it; piecewise reads hand
    every intact line over first, which makes the last good line number in the error exact.
    """

    def __init__(self, gz: gzip.GzipFile) -> None:
        super().__init__()
        self._gz = gz

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._gz.read1(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def iter_chunk(
    chunk: Chunk,
    on_progress: Callable[[int], None] | None = None,
    counter: LineCounter | None = None,
) -> Iterator[SourceLine]:
    """Yield the non-blank records of one :class:`Chunk` (line numbers relative to the chunk).

    ``on_progress`` gets on-disk bytes consumed (as in :func:`iter_lines`); ``counter.lines``
    is set to the number of physical lines (or array elements) once the iteration is complete.
    For a JSON array whose rest cannot be split, the last record yielded carries the rest as
    its bytes and the reason in ``error``: :func:`~lfkit.data_tools.core.records.parse_record`
    rejects it as ``malformed_json``, so the books still balance.
    """
    name = chunk.path
    limit = None if chunk.end is None else chunk.end - chunk.start
    with open(name, "rb", buffering=READ_BUFFER) as raw_fh:
        fh = open_input(name, raw_fh)
        if chunk.start:
            raw_fh.seek(chunk.start)
        reported = chunk.start
        lineno = 0
        try:
            if chunk.array:
                yield from _iter_array(name, fh, raw_fh, on_progress, counter)
                return
            offset = chunk.start
            first = chunk.start == 0
            for lineno, line in enumerate(fh, 1):  # noqa: B007 (lineno is used after the loop)
                if on_progress is not None and lineno % PROGRESS_EVERY_LINES == 0:
                    pos = raw_fh.tell()
                    on_progress(pos - reported)
                    reported = pos
                stripped = line.rstrip(b"\r\n")
                start = offset
                if first:
                    first = False
                    if stripped.startswith(BOM):
                        stripped = stripped[len(BOM) :]
                        start += len(BOM)
                if stripped and not stripped.isspace():
                    yield _new_line(SourceLine, (name, lineno, stripped, False, None, start))
                offset += len(line)
                if limit is not None and offset - chunk.start >= limit:
                    break
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise CorruptInputError(name, lineno, str(err) or type(err).__name__) from None
        if counter is not None:
            counter.lines = lineno
        if on_progress is not None:
            end = chunk.end if chunk.end is not None else os.fstat(raw_fh.fileno()).st_size
            on_progress(end - reported)


def _iter_array(
    name: str,
    fh: IO[bytes],
    raw_fh: IO[bytes],
    on_progress: Callable[[int], None] | None,
    counter: LineCounter | None,
) -> Iterator[SourceLine]:
    head = fh.read(len(BOM))
    reader = io.BufferedReader(_Prefixed(head.removeprefix(BOM), fh), buffer_size=READ_BUFFER)
    index = -1
    reported = 0
    try:
        for index, raw in iter_elements(reader):
            if on_progress is not None and index % PROGRESS_EVERY_LINES == 0:
                pos = raw_fh.tell()
                on_progress(pos - reported)
                reported = pos
            yield SourceLine(name, index, raw, True, None, index)
    except ArrayError as err:
        index = err.index
        message = f"the JSON array cannot be read from element {index} on: {err.message}"
        yield SourceLine(name, index, err.rest, True, message, index)
    if counter is not None:
        counter.lines = index + 1
    if on_progress is not None:
        on_progress(os.fstat(raw_fh.fileno()).st_size - reported)


# SourceLine(...) runs the NamedTuple's Python-level __new__; this builds the same tuple in C,
# once per input line.
_new_line = tuple.__new__


class _Prefixed(io.RawIOBase):
    """``prefix`` followed by the rest of ``fh`` (the bytes read to look for a BOM)."""

    def __init__(self, prefix: bytes, fh: IO[bytes]) -> None:
        super().__init__()
        self._prefix, self._fh = prefix, fh

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._prefix:
            n = min(len(buffer), len(self._prefix))
            buffer[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._fh.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def iter_lines(
    paths: Iterable[str | os.PathLike[str]],
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[SourceLine]:
    """Yield every record of the inputs as a :class:`SourceLine`, streaming.

    ``paths`` may mix files and directories (see :func:`expand_inputs`). ``on_progress``, if
    given, is called now and then with the number of on-disk bytes consumed since the last
    call (compressed bytes for ``.gz``), so a progress bar over :func:`total_bytes` ends at 100%.
    A trailing ``\\r`` (CRLF files) is removed along with the newline.
    """
    for path in expand_inputs(paths).files:
        yield from iter_chunk(Chunk(str(path), array=is_json_array(path)), on_progress)
