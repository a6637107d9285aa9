"""Pass 1 of a sampled conversion: each record's place and role, without parsing the rest of it.

With ``--max-per-role`` most records are never written, so parsing, validating and rendering
all of them (what :mod:`lfkit.data_tools.dialogue.scan` does) is mostly wasted. This pass reads
only what the draw needs: for each record its role, its place (file, line, byte offset and
length), and whether it is well-formed JSON at all, so a malformed line is still rejected here
with its line, whether or not it would have been drawn.

**How a record is read.** The inputs are read in blocks of a few MB. Each block is decoded in
one call with msgspec (``Decoder.decode_lines``) into a struct that holds only the role field
(``--role-key``; or ``bot_id`` and which turn list the record has, to tell PIPPA records apart;
or nothing at all for per-character files, whose role is the file name): msgspec validates
the whole JSON text of every line but builds no Python object for the fields it skips, which
is 2-3x faster than parsing each line with orjson. Line starts, ends and the blank lines are
found with numpy over the block. msgspec skips unused strings without checking their UTF-8,
so each block is also checked to be UTF-8 (``bytes.isascii`` first, a C-speed scan). A block
where anything is off (a malformed line, a line that is not an object, a ``NaN``, invalid
UTF-8, a byte-order mark, two values on one line) is read again line by line, and each line
msgspec refuses goes through :func:`~lfkit.data_tools.core.records.parse_record`, the parser
every other pass uses: so a record is rejected here for exactly the reason (and with the
message) the full pass gives, and a ``NaN`` in an unused field still costs nothing.

**The role** follows :func:`lfkit.data_tools.dialogue.layouts.common.role_value`, the rule the
layouts apply (``tests/data_tools/test_index.py`` checks that both give the same role for
every record the tests build). A record whose role field is unusable (missing where roles
are needed, a list, ...) gets no role (:data:`NO_ROLE`): it can only be rejected, and the
second pass validates it to find the precise reason.

**Only the top of each role's draw is kept.** When the caller asks for at most ``keep``
records per role and epoch, each chunk keeps only the records that come first in some
epoch's draw order of their role (:mod:`lfkit.data_tools.dialogue.sampling`): the global top
of a role is within the union of the chunks' tops, so memory holds about ``keep`` records per
role and chunk, not every record of the inputs.

**Compressed files and JSON arrays** cannot be read back at an offset, so their records' bytes
are copied into a spool file in the work folder while they are read (a ``.gz`` file's
decompressed text as it is; a JSON array's elements one per line), and the second pass reads
them there.
"""

from __future__ import annotations

import codecs
import gzip
import os
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import orjson
from lfkit.data_tools.core.inputs import BOM, Chunk, CorruptInputError, iter_chunk, open_input
from lfkit.data_tools.core.records import RecordError, SourceLine, parse_record
from lfkit.data_tools.core.rejects import reject_entry
from lfkit.data_tools.dialogue.build import normalise_role
from lfkit.data_tools.dialogue.layouts import openai, pippa, sharegpt
from lfkit.data_tools.dialogue.layouts.characters import character_name
from lfkit.data_tools.dialogue.layouts.common import LayoutSettings, role_value

NO_ROLE = 0xFFFFFFFF  # a record whose role field is unusable: it can only be rejected
BLOCK_BYTES = 4 << 20
TRIM_EVERY = 1 << 20  # records read before the kept set is trimmed again
FLUSH_EVERY = 1 << 16  # records read one by one before they join the columns
_NEWLINE, _OPEN_BRACE = 10, 123


@dataclass(frozen=True)
class IndexSettings:
    """What pass 1 needs to know (picklable for worker processes)."""

    layout: LayoutSettings
    work_dir: str
    seed: int = 0
    epochs: int = 1
    keep: int | None = None  # per role and epoch, keep only the top of the draw (None: every record)
    keep_all_of: frozenset[str] = frozenset()  # roles kept whole whatever ``keep`` (re-reads)
    only: frozenset[str] | None = None  # read only the records of these roles (None: all)


@dataclass
class ChunkIndex:
    """What pass 1 found in one chunk: the records it keeps (columns in chunk order) and counts.

    ``role_ids`` index ``role_names`` (this chunk's own table, in order of first appearance) or
    are :data:`NO_ROLE`. ``lines`` count from 1 at the chunk's first line (the caller adds the
    lines of the file's earlier chunks); ``positions`` are absolute: the byte offset of the
    record in the (decompressed) file, or its element index in a JSON array; the record's bytes
    are ``source`` at ``offsets``, ``lengths`` bytes long. ``role_counts`` counts every
    well-formed record per role, kept or not.
    """

    role_ids: np.ndarray
    positions: np.ndarray
    lines: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    role_names: list[str]
    role_counts: np.ndarray
    role_spellings: set[str]
    source: str
    read: int
    rejected: int
    line_count: int
    rejects_file: str | None


class RoleReader:
    """Reads records' roles for one file: from msgspec structs (fast) or parsed dicts (fallback).

    Keeps the chunk's role table (normalised names in order of first appearance) and the
    spellings that normalisation changed.
    """

    def __init__(self, path: str, settings: LayoutSettings) -> None:
        self.settings = settings
        self.key = settings.role_key
        self.names: list[str] = []
        self.lookup: dict[str, int] = {}
        self.spellings: set[str] = set()
        self._raw: dict[str, int] = {}  # role field value as written -> role id
        self.fixed: int | None = None  # per-character files: one role for the whole file
        if settings.role_from_filename:
            self.fixed = self.role_id(character_name(path))
        self._decoder: Any = None

    @property
    def decoder(self) -> Any:
        """The msgspec decoder of the struct holding what the role needs (made on first use:
        the full pass reads roles from parsed records and needs no msgspec)."""
        if self._decoder is None:
            import msgspec

            if self.fixed is not None:
                fields: tuple[tuple[str, Any, Any], ...] = ()
            elif self.key is not None:
                fields = ((self.key, Any, None),)
            else:  # PIPPA's bot_id is the role of a record whose turn list is "conversation"
                turns = tuple((k, msgspec.Raw, msgspec.UNSET) for k in (openai.KEY, sharegpt.KEY, pippa.KEY))
                fields = (*turns, (pippa.ROLE_KEY, Any, None))
            self._decoder = msgspec.json.Decoder(_struct(fields))
        return self._decoder

    def role_id(self, role: str) -> int:
        rid = self.lookup.get(role)
        if rid is None:
            rid = self.lookup[role] = len(self.names)
            self.names.append(role)
        return rid

    def roles_of(self, structs: list[Any]) -> list[int]:
        """The role ids of decoded structs (:meth:`decoder` output), in order."""
        if self.fixed is not None:
            return [self.fixed] * len(structs)
        if self.key is None:
            from msgspec import UNSET

            return [self._pippa_role(s.f1 is UNSET and s.f2 is UNSET and s.f3 is not UNSET, s.f4)
                    for s in structs]  # fmt: skip
        values = [s.f1 for s in structs]
        raw = self._raw
        try:
            ids = list(map(raw.get, values))
        except TypeError:  # an unhashable role value (a list, an object): its record has no role
            return [self._value_role(v, self.key) for v in values]
        for i in [i for i, rid in enumerate(ids) if rid is None]:  # new spellings, or odd values
            ids[i] = self._value_role(values[i], self.key)
        return ids

    def _str_role(self, value: str) -> int:
        """The role id of a non-empty string role value (the common case of :meth:`_value_role`)."""
        clean = " ".join(value.split())
        if clean != value:
            self.spellings.add(value)
        rid = self._raw[value] = self.role_id(clean)
        return rid

    def role_of_struct(self, struct: Any) -> int:
        return self.roles_of([struct])[0]

    def role_of_dict(self, record: dict[str, Any]) -> int:
        """The role id of a record parsed into a dict (the same rules as :meth:`roles_of`)."""
        if self.fixed is not None:
            return self.fixed
        if self.key is not None:
            return self._value_role(record.get(self.key), self.key)
        is_pippa = openai.KEY not in record and sharegpt.KEY not in record and pippa.KEY in record
        return self._pippa_role(is_pippa, record.get(pippa.ROLE_KEY))

    def _pippa_role(self, is_pippa: bool, value: Any) -> int:
        if not is_pippa:
            return self.role_id("")
        return self._value_role(value, pippa.ROLE_KEY)

    def _value_role(self, value: Any, key: str) -> int:
        if type(value) is str and value:
            rid = self._raw.get(value)
            return self._str_role(value) if rid is None else rid
        try:
            role = role_value(value, key, self.settings)
        except RecordError:
            return NO_ROLE
        clean = normalise_role(role)
        if clean != role:
            self.spellings.add(role)
        return self.role_id(clean)


def _struct(fields: tuple[tuple[str, Any, Any], ...]) -> type:
    """A msgspec struct type decoding only ``fields`` (JSON name, type, default) of an object.

    The attributes are ``f1``, ``f2``, ... (JSON names can be anything); unknown fields are
    skipped (validated, not built). ``gc=False``: millions of them are made and dropped.
    """
    import msgspec

    names = [(f"f{i}", kind, default) for i, (_, kind, default) in enumerate(fields, 1)]
    rename = {f"f{i}": name for i, (name, _, _) in enumerate(fields, 1)}
    return msgspec.defstruct("RoleFields", names, rename=rename, gc=False)


class ChunkReader:
    """Reads one chunk into columns; see the module docstring."""

    def __init__(self, chunk: Chunk, file_id: int, settings: IndexSettings) -> None:
        import msgspec

        self._decode_errors = (msgspec.MsgspecError, RecursionError, ValueError)
        self.chunk, self.file_id, self.settings = chunk, file_id, settings
        self.roles = RoleReader(chunk.path, settings.layout)
        self.role_ids: list[int] = []  # records read one by one, not yet in the columns
        self.positions: list[int] = []
        self.lines: list[int] = []
        self.offsets: list[int] = []
        self.lengths: list[int] = []
        self.read = self.rejected = 0
        self._rejects: IO[bytes] | None = None
        self.rejects_name: str | None = None
        self._parts: list[list[np.ndarray]] = []  # columns of the records read so far, in order
        self._counts: list[np.ndarray] = []  # records per role of each part, before trimming
        self._size = 0
        self._trim_at = TRIM_EVERY

    def close(self) -> None:
        if self._rejects is not None:
            self._rejects.close()
            self._rejects = None

    # --- rejects -------------------------------------------------------------------------
    def reject(self, line: SourceLine, err: RecordError) -> None:
        if self._rejects is None:
            fd, self.rejects_name = tempfile.mkstemp(prefix="rejects.", dir=self.settings.work_dir)
            self._rejects = os.fdopen(fd, "wb")
        self._rejects.write(orjson.dumps(reject_entry(line, err)) + b"\n")
        self.rejected += 1

    # --- one record the slow way ---------------------------------------------------------
    def one(
        self, raw: bytes, lineno: int, position: int, offset: int, element: bool, error: str | None
    ) -> None:
        """A record msgspec could not read in bulk: decoded alone, or parsed like every other pass."""
        self.read += 1
        rid = None
        if error is None and (raw.isascii() or _is_utf8(raw)):
            try:
                rid = self.roles.role_of_struct(self.roles.decoder.decode(raw))
            except self._decode_errors:
                rid = None
        if rid is None:
            line = SourceLine(self.chunk.path, lineno, raw, element, error)
            try:
                record = parse_record(line)
            except RecordError as err:
                self.reject(line, err)
                return
            rid = self.roles.role_of_dict(record)
        self.role_ids.append(rid)
        self.positions.append(position)
        self.lines.append(lineno)
        self.offsets.append(offset)
        self.lengths.append(len(raw))
        if len(self.role_ids) >= FLUSH_EVERY:
            self._flush()

    def _flush(self) -> None:
        """Move the records read one by one into the columns (keeping input order)."""
        if self.role_ids:
            self._add([
                np.asarray(self.role_ids, dtype=np.uint32), np.asarray(self.positions, dtype=np.uint64),
                np.asarray(self.lines, dtype=np.uint64), np.asarray(self.offsets, dtype=np.uint64),
                np.asarray(self.lengths, dtype=np.uint32),
            ])  # fmt: skip
            for column in (self.role_ids, self.positions, self.lines, self.offsets, self.lengths):
                column.clear()

    def _add(self, columns: list[np.ndarray]) -> None:
        roles = columns[0]
        self._counts.append(np.bincount(roles[roles != NO_ROLE]))
        self._parts.append(columns)
        self._size += len(roles)
        trims = self.settings.keep is not None or self.settings.only is not None
        if trims and self._size > self._trim_at:
            self._trim()

    def _columns(self) -> list[np.ndarray]:
        if len(self._parts) != 1:
            parts = self._parts or [[np.zeros(0, dtype=t) for t in _TYPES]]
            self._parts = [[np.concatenate([p[k] for p in parts]) for k in range(len(_TYPES))]]
        return self._parts[0]

    def _trim(self) -> None:
        """Keep only the records a draw can reach (see :func:`_reachable`): flat memory on any input."""
        columns = self._columns()
        keep = _reachable(columns[0], columns[1], self.roles.names, self.settings, self.file_id)
        self._parts = [[c[keep] for c in columns]]
        self._size = int(keep.sum())
        self._trim_at = max(TRIM_EVERY, 2 * self._size)

    # --- JSON Lines blocks ---------------------------------------------------------------
    def block(self, buf: bytes, size: int, base: int, first_line: int) -> int:
        """Index the lines in ``buf[:size]`` (whole lines; at the end of the file the last one
        may lack its newline; ``buf`` may run on past ``size``).

        ``base``: offset of ``buf`` in the (decompressed) file; ``first_line``: the chunk line
        number of its first line. Returns the number of lines read.
        """
        if size == 0:
            return 0
        view = memoryview(buf)[:size]
        data = np.frombuffer(view, dtype=np.uint8)
        ends = np.flatnonzero(data == _NEWLINE)
        if buf[size - 1] != _NEWLINE:
            ends = np.append(ends, size)
        starts = np.empty_like(ends)
        starts[0] = 0
        starts[1:] = ends[:-1] + 1
        bom = base == 0 and buf.startswith(BOM)
        if bom:
            starts[0] = len(BOM)
        nonempty = ends > starts
        ends = ends - (nonempty & (data[np.maximum(ends - 1, 0)] == 13))  # a CRLF line's \r
        nonempty = ends > starts
        brace = nonempty & (data[np.minimum(starts, size - 1)] == _OPEN_BRACE)
        line_numbers = np.arange(first_line, first_line + len(starts), dtype=np.uint64)
        records = brace
        if not brace.all():  # blank lines, or a line that does not open with "{"
            records = brace.copy()
            for i in np.flatnonzero(~brace):
                segment = buf[starts[i] : ends[i]]
                records[i] = bool(segment) and not segment.isspace()
        structs = None
        if not bom and (buf.isascii() or _is_utf8(view)):
            try:
                structs = self.roles.decoder.decode_lines(view)
            except self._decode_errors:
                structs = None
        picked = np.flatnonzero(records)
        if structs is None or len(structs) != len(picked):
            for i in picked.tolist():
                start, end = int(starts[i]), int(ends[i])
                self.one(buf[start:end], int(line_numbers[i]), base + start, base + start, False, None)
            self._flush()
            return len(starts)
        self.read += len(picked)
        first, last = starts[picked], ends[picked]
        positions = first.astype(np.uint64) + np.uint64(base)
        roles = np.asarray(self.roles.roles_of(structs), dtype=np.uint32)
        self._add([roles, positions, line_numbers[picked], positions, (last - first).astype(np.uint32)])
        return len(starts)

    def finish(self, source: str, line_count: int) -> ChunkIndex:
        self.close()
        self._flush()
        if self.settings.keep is not None or self.settings.only is not None:
            self._trim()
        role_ids, positions, lines, offsets, lengths = self._columns()
        counts = np.zeros(len(self.roles.names), dtype=np.uint64)
        for part in self._counts:
            counts[: len(part)] += part.astype(np.uint64)
        return ChunkIndex(
            role_ids, positions, lines, offsets, lengths, self.roles.names, counts, self.roles.spellings,
            source, self.read, self.rejected, line_count, self.rejects_name,
        )  # fmt: skip


_TYPES = (np.uint32, np.uint64, np.uint64, np.uint64, np.uint32)


def _is_utf8(data: bytes | memoryview) -> bool:
    try:
        codecs.utf_8_decode(data, "strict", True)
    except UnicodeDecodeError:
        return False
    return True


def index_chunk(
    job: tuple[Chunk, int, IndexSettings], on_progress: Callable[[int], None] | None = None
) -> ChunkIndex:
    """Pass 1 over one chunk (``job``: the chunk, its file's index among the inputs, settings)."""
    chunk, file_id, settings = job
    reader = ChunkReader(chunk, file_id, settings)
    try:
        if chunk.array:
            return _index_array(reader, chunk, on_progress)
        if chunk.path.lower().endswith(".gz"):
            return _index_stream(reader, chunk, on_progress)
        return _index_plain(reader, chunk, on_progress)
    finally:
        reader.close()


def _index_plain(reader: ChunkReader, chunk: Chunk, on_progress: Callable[[int], None] | None) -> ChunkIndex:
    """A plain JSON Lines chunk, read with positional reads of whole-line blocks (no copies)."""
    end = chunk.end if chunk.end is not None else os.stat(chunk.path).st_size
    lines = 0
    fd = os.open(chunk.path, os.O_RDONLY)
    try:
        pos = chunk.start
        while pos < end:
            want = BLOCK_BYTES
            while True:
                buf = os.pread(fd, min(want, end - pos), pos)
                if not buf:
                    raise CorruptInputError(chunk.path, lines, "the file got shorter while it was read")
                cut = buf.rfind(b"\n") + 1 if pos + len(buf) < end else len(buf)
                if cut:
                    break
                want *= 2  # one line longer than a block
            lines += reader.block(buf, cut, pos, lines + 1)
            pos += cut
            if on_progress is not None:
                on_progress(cut)
    finally:
        os.close(fd)
    return reader.finish(chunk.path, lines)


def _index_stream(reader: ChunkReader, chunk: Chunk, on_progress: Callable[[int], None] | None) -> ChunkIndex:
    """A ``.gz`` file: decompressed once, indexed, and its text spooled for the second pass."""
    fd, spool_name = tempfile.mkstemp(prefix="raw.", dir=reader.settings.work_dir)
    lines = pos = reported = 0
    tail = b""
    with os.fdopen(fd, "wb") as spool, open(chunk.path, "rb") as raw_fh:
        fh = open_input(chunk.path, raw_fh)
        try:
            while True:
                data = fh.read(BLOCK_BYTES)
                spool.write(data)
                buf = tail + data if tail else data
                cut = buf.rfind(b"\n") + 1 if data else len(buf)
                lines += reader.block(buf, cut, pos, lines + 1)
                pos += cut
                tail = buf[cut:]
                if on_progress is not None:
                    done = raw_fh.tell()
                    on_progress(done - reported)
                    reported = done
                if not data:
                    break
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            raise CorruptInputError(chunk.path, lines, str(err) or type(err).__name__) from None
    return reader.finish(spool_name, lines)


def _index_array(reader: ChunkReader, chunk: Chunk, on_progress: Callable[[int], None] | None) -> ChunkIndex:
    """A JSON array: each element's bytes spooled one per line, then read like a record."""
    fd, spool_name = tempfile.mkstemp(prefix="raw.", dir=reader.settings.work_dir)
    offset = count = 0
    with os.fdopen(fd, "wb", buffering=1 << 20) as spool:
        for line in iter_chunk(chunk, on_progress):
            count = line.lineno + 1
            reader.one(line.raw, line.lineno, line.lineno, offset, True, line.error)
            spool.write(line.raw + b"\n")
            offset += len(line.raw) + 1
    return reader.finish(spool_name, count)


def _reachable(
    role_ids: np.ndarray, positions: np.ndarray, names: list[str], settings: IndexSettings, file_id: int
) -> np.ndarray:
    """Mask of the records pass 1 keeps: with ``only``, those of these roles; with ``keep``, those
    among the first ``keep`` of their role's draw order in some epoch (records without a role
    and the roles in ``keep_all_of`` whole: the second pass converts all of those)."""
    local = np.minimum(role_ids, len(names))  # NO_ROLE -> len(names)
    mask = np.ones(len(role_ids), dtype=bool)
    if settings.only is not None:
        wanted = np.array([name in settings.only for name in names] + [False], dtype=bool)
        mask &= wanted[local]
    if settings.keep is not None:
        from lfkit.data_tools.dialogue.sampling import reachable

        whole = np.array([name in settings.keep_all_of for name in names] + [True], dtype=bool)
        files = np.full(len(role_ids), file_id, dtype=np.uint32)
        mask &= (
            reachable(role_ids, files, positions, settings.seed, settings.epochs, settings.keep)
            | whole[local]
        )
    return mask
