"""Streaming JSONL input: lines with their true file and line number, never a whole file in memory.

Inputs are ``.jsonl`` files, ``.jsonl.gz`` files, or directories; a directory stands for its
``*.jsonl`` / ``*.jsonl.gz`` files in sorted name order (the layout of one-file-per-character
role-play collections, where the file name is the character). Lines are read as raw bytes so
that invalid UTF-8 becomes a per-line reject instead of a crash, and so that callers can keep
the exact source text for the rejects file. Blank lines are skipped but still counted, so the
``lineno`` of every :class:`SourceLine` is the line number an editor shows.

A truncated or corrupt ``.gz`` file cannot be read past the damage, and what is left of it is
not a dataset anyone asked for: reading it raises :class:`CorruptInputError` (file and last good
line), and the converters fail the whole run with that message, publishing nothing.
"""

from __future__ import annotations

import functools
import gzip
import io
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import orjson

JSONL_SUFFIXES = (".jsonl", ".jsonl.gz")
PROGRESS_EVERY_LINES = 2048
READ_BUFFER = 1 << 20  # line iteration over 8 KiB buffers costs 5x more on long role-play lines


class SourceLine(NamedTuple):
    """One non-blank input line: its file, 1-based line number, and raw bytes (no newline)."""

    path: str
    lineno: int
    raw: bytes


class RecordError(ValueError):
    """A record that cannot be converted.

    ``reason`` is a short stable code (``"malformed_json"``, ``"missing_role_key"`` ...) that
    tests and scripts can match on; ``field`` names the offending field (``"messages[2].role"``)
    or is ``None`` when the whole line is at fault; the message is for humans.
    """

    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field
        self.message = message


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


def expand_inputs(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Resolve inputs to a list of files: a directory becomes its JSONL files, sorted by name.

    Raises ``FileNotFoundError`` for a missing path and ``ValueError`` for an empty directory,
    so a typo never turns into a silently empty dataset.
    """
    files: list[Path] = []
    for item in paths:
        path = Path(item)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.endswith(JSONL_SUFFIXES))
            if not found:
                raise ValueError(f"{path}: directory has no *.jsonl or *.jsonl.gz files")
            files.extend(found)
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such file or directory")
    return files


@functools.lru_cache(maxsize=4096)
def file_stem(path: str | os.PathLike[str]) -> str:
    """The file name without its ``.jsonl`` / ``.jsonl.gz`` / ``.json`` suffix (a character's name)."""
    name = Path(path).name
    for suffix in (".jsonl.gz", ".json.gz", ".jsonl", ".json", ".gz"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def total_bytes(files: Iterable[Path]) -> int:
    """Sum of on-disk sizes (compressed size for ``.gz``): the unit of the progress bars."""
    return sum(Path(f).stat().st_size for f in files)


@dataclass(frozen=True)
class Chunk:
    """A byte range ``[start, end)`` of one input file that starts and ends at line boundaries.

    ``end`` is None for "to the end of the file" (always the case for ``.gz`` files, which
    cannot be split). Chunks let several processes read one large file in parallel; the line
    numbers :func:`iter_chunk` yields are relative to the chunk (the first line is 1), and the
    caller adds the line counts of the file's earlier chunks.
    """

    path: str
    start: int = 0
    end: int | None = None

    @property
    def size(self) -> int:
        """On-disk bytes this chunk covers (for progress bars)."""
        end = self.end if self.end is not None else os.stat(self.path).st_size
        return end - self.start


def plan_chunks(files: Iterable[str | os.PathLike[str]], chunk_bytes: int) -> list[Chunk]:
    """Split plain files larger than ``chunk_bytes`` into line-aligned chunks, in file order."""
    chunks: list[Chunk] = []
    for item in files:
        path = str(item)
        size = os.stat(path).st_size
        if path.endswith(".gz") or size <= chunk_bytes:
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
    """Yield the non-blank lines of one :class:`Chunk` (line numbers relative to the chunk).

    ``on_progress`` gets on-disk bytes consumed (as in :func:`iter_lines`); ``counter.lines``
    is set to the number of physical lines consumed once the iteration is complete.
    """
    name = chunk.path
    limit = None if chunk.end is None else chunk.end - chunk.start
    with open(name, "rb", buffering=READ_BUFFER) as raw_fh:
        fh = raw_fh
        if name.endswith(".gz"):
            gz = _GzipRaw(gzip.GzipFile(fileobj=raw_fh, mode="rb"))
            fh = io.BufferedReader(gz, buffer_size=READ_BUFFER)
        elif chunk.start:
            raw_fh.seek(chunk.start)
        reported = chunk.start
        consumed = 0
        lineno = 0
        try:
            for lineno, line in enumerate(fh, 1):  # noqa: B007 (lineno is used after the loop)
                if on_progress is not None and lineno % PROGRESS_EVERY_LINES == 0:
                    pos = raw_fh.tell()
                    on_progress(pos - reported)
                    reported = pos
                stripped = line.rstrip(b"\r\n")
                if stripped and not stripped.isspace():
                    yield SourceLine(name, lineno, stripped)
                if limit is not None:
                    consumed += len(line)
                    if consumed >= limit:
                        break
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise CorruptInputError(name, lineno, str(err) or type(err).__name__) from None
        if counter is not None:
            counter.lines = lineno
        if on_progress is not None:
            end = chunk.end if chunk.end is not None else os.fstat(raw_fh.fileno()).st_size
            on_progress(end - reported)


def iter_lines(
    paths: Iterable[str | os.PathLike[str]],
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[SourceLine]:
    """Yield every non-blank line of the inputs as a :class:`SourceLine`, streaming.

    ``paths`` may mix files and directories (see :func:`expand_inputs`). ``on_progress``, if
    given, is called now and then with the number of on-disk bytes consumed since the last
    call (compressed bytes for ``.gz``), so a progress bar over :func:`total_bytes` ends at 100%.
    A trailing ``\\r`` (CRLF files) is removed along with the newline.
    """
    for path in expand_inputs(paths):
        yield from iter_chunk(Chunk(str(path)), on_progress)


def parse_line(line: SourceLine) -> dict[str, Any]:
    """Parse one line into a JSON object, or raise :class:`RecordError`.

    Reasons: ``invalid_utf8`` (bytes that are not UTF-8), ``malformed_json`` (with orjson's
    position message), ``not_an_object`` (valid JSON that is a list, string, number ...).
    """
    try:
        obj = orjson.loads(line.raw)
    except orjson.JSONDecodeError as err:
        try:
            line.raw.decode("utf-8")
        except UnicodeDecodeError as uerr:
            raise RecordError(
                "invalid_utf8", f"line is not valid UTF-8 (byte {uerr.start}: {uerr.reason})"
            ) from None
        raise RecordError("malformed_json", f"malformed JSON: {err}") from None
    if not isinstance(obj, dict):
        raise RecordError("not_an_object", f"expected a JSON object, got a JSON {_json_type(obj)}")
    return obj


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    if value is None:
        return "null"
    return "number"
