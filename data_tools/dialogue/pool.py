"""The records a conversion draws from, and what converting them gave.

:class:`PoolBuilder` merges the per-chunk results of pass 1
(:mod:`lfkit.data_tools.dialogue.index`) or of the full pass
(:mod:`lfkit.data_tools.dialogue.scan`) strictly in input order: one role table (ids in order
of first appearance), line numbers made absolute (the lines of a file's earlier chunks
added), the files holding the records' bytes, the rejects spilled in line order. With a
per-role cap it keeps trimming the merged records to those a draw can reach, so memory holds
about ``keep`` records per role and epoch however large the inputs.

:class:`Candidates` is the draw's view of those records
(:class:`~lfkit.data_tools.dialogue.sampling.Records`): it converts the picks of each round
(pass 2, :mod:`lfkit.data_tools.dialogue.readback`, in forked workers when the round is
large), deduplicates them (:class:`~lfkit.data_tools.dialogue.dedup.ExactDedup`), keeps the
rejects they give with their file and line, and reads a role again in full when its draw
runs past what pass 1 kept (:meth:`Candidates.refill`).
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import orjson
from lfkit.data_tools.core.inputs import Chunk
from lfkit.data_tools.core.parallel import ordered_map
from lfkit.data_tools.core.rejects import RejectTally, preview
from lfkit.data_tools.dialogue.dedup import Duplicate, ExactDedup
from lfkit.data_tools.dialogue.index import NO_ROLE, ChunkIndex
from lfkit.data_tools.dialogue.outcomes import Outcomes, unpack_notes
from lfkit.data_tools.dialogue.readback import Picks, ReadbackSettings, convert_picks
from lfkit.data_tools.dialogue.sampling import (
    DUPLICATE,
    KEPT,
    REJECTED,
    UNKNOWN,
    VALID,
    Records,
    reachable,
)

POSITION_COLUMNS = ("role_ids", "file_ids", "positions", "lines", "source_ids", "offsets", "lengths")
# the Outcomes columns a record's conversion fills, with their array types (outcomes.Outcomes)
OUTCOME_TYPES = {
    "spool_ids": np.uint32, "row_offsets": np.uint64, "row_lengths": np.uint32, "samples": np.uint32,
    "turns": np.uint32, "chars": np.uint64, "features": np.uint8, "keys": np.uint64, "notes": np.uint64,
}  # fmt: skip
TRIM_EVERY = 1 << 20  # records merged before the kept set is trimmed again
PICKS_PER_BATCH = 4096  # pass 2: records per worker job (about a second of work at most)
PARALLEL_MIN_PICKS = 8192  # below this, converting in the parent costs less than forking workers
IN_MEMORY_ROWS = 64 << 20  # spools up to this size are read whole when the output is written


@dataclass
class Spill:
    """A chunk's rejects file (line numbers relative to the chunk) and where to put them."""

    path: str
    file_id: int
    line_base: int


@dataclass
class Pool:
    """The merged records: columns in input order (see :class:`PoolBuilder`)."""

    role_ids: np.ndarray
    file_ids: np.ndarray
    positions: np.ndarray
    lines: np.ndarray
    source_ids: np.ndarray
    offsets: np.ndarray
    lengths: np.ndarray
    role_names: list[str]
    role_counts: np.ndarray  # well-formed records of each role in the inputs, drawn or not
    role_spellings: set[str]
    files: list[tuple[str, bool]]
    sources: list[str]
    spills: list[Spill]
    read: int = 0  # records (non-blank lines, array elements) read
    malformed: int = 0  # records rejected before any role could be read (not in the pool)
    outcomes: dict[str, np.ndarray] | None = None  # the full pass: every record's outcome columns
    spools: list[str] = field(default_factory=list)
    signature_files: list[str] = field(default_factory=list)
    tokens: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.role_ids)


class PoolBuilder:
    """Merges chunk results in input order (see the module docstring)."""

    def __init__(
        self,
        files: list[tuple[str, bool]],
        keep: int | None = None,
        seed: int = 0,
        epochs: int = 1,
        keep_all_of: frozenset[str] = frozenset(),
        role_names: list[str] | None = None,
    ) -> None:
        self.files = files
        self.keep, self.seed, self.epochs, self.keep_all_of = keep, seed, epochs, keep_all_of
        self.role_names: list[str] = list(role_names or [])
        self.lookup = {name: i for i, name in enumerate(self.role_names)}
        self._counts: list[tuple[np.ndarray, np.ndarray]] = []  # (global role ids, counts) per chunk
        self.spellings: set[str] = set()
        self.sources: list[str] = []
        self._source_ids: dict[str, int] = {}
        self.spills: list[Spill] = []
        self._line_base: dict[int, int] = {}
        self._parts: list[list[np.ndarray]] = []
        self._outcomes: list[list[np.ndarray]] = []
        self.spools: list[str] = []
        self.signature_files: list[str] = []
        self._tokens: list[np.ndarray] = []
        self._size = self._chunks = 0
        self._trimmed = TRIM_EVERY
        self.read = self.malformed = 0

    def add(self, file_id: int, part: ChunkIndex, outcomes: Outcomes | None = None) -> None:
        """Merge the next chunk's results (chunks must come in input order)."""
        lookup = self.lookup
        remap = np.array(
            [lookup.setdefault(n, len(lookup)) for n in part.role_names] + [NO_ROLE], dtype=np.uint32
        )
        if len(lookup) > len(self.role_names):
            self.role_names.extend(list(lookup)[len(self.role_names) :])
        self._counts.append((remap[:-1], part.role_counts))
        roles = remap[np.minimum(part.role_ids, len(part.role_names))]
        base = self._line_base.get(file_id, 0)
        self._line_base[file_id] = base + part.line_count
        source = self._source_ids.setdefault(part.source, len(self.sources))
        if source == len(self.sources):
            self.sources.append(part.source)
        n = len(roles)
        self._parts.append([
            roles, np.full(n, file_id, dtype=np.uint32), part.positions, part.lines + np.uint64(base),
            np.full(n, source, dtype=np.uint32), part.offsets, part.lengths,
        ])  # fmt: skip
        self.spellings |= part.role_spellings
        self.read += part.read
        self.malformed += part.rejected
        if part.rejects_file is not None:
            self.spills.append(Spill(part.rejects_file, file_id, base))
        if outcomes is not None:
            first = len(self.spools)
            self.spools.extend(outcomes.spools)
            columns = [np.frombuffer(getattr(outcomes, c), dtype=t) for c, t in OUTCOME_TYPES.items()]
            columns[0] = columns[0] + np.uint32(first)
            columns.append(np.frombuffer(outcomes.ok, dtype=np.uint8))
            self._outcomes.append(columns)
            if outcomes.signature_file is not None:
                self.signature_files.append(outcomes.signature_file)
            if outcomes.tokens is not None:
                self._tokens.append(np.frombuffer(outcomes.tokens, dtype=np.uint64))
        self._size += n
        self._chunks += 1
        if self.keep is not None and self._size > self._trimmed:
            self._trim()

    def _columns(self) -> list[np.ndarray]:
        if len(self._parts) != 1:
            self._parts = [
                [np.concatenate([p[k] for p in self._parts]) for k in range(len(POSITION_COLUMNS))]
            ]
        return self._parts[0]

    def _trim(self) -> None:
        """Keep only the records some epoch's draw can reach (and the roles kept whole)."""
        columns = self._columns()
        roles = columns[0]
        top = reachable(roles, columns[1], columns[2], self.seed, self.epochs, self.keep)
        whole = np.array([n in self.keep_all_of for n in self.role_names] + [True], dtype=bool)
        top |= whole[np.minimum(roles, len(self.role_names))]
        self._parts = [[c[top] for c in columns]]
        self._size = int(top.sum())
        self._trimmed = max(TRIM_EVERY, 2 * self._size)

    def finish(self) -> Pool:
        if self.keep is not None and self._chunks > 1:  # one chunk was trimmed exactly by its reader
            self._trim()
        columns = self._columns() if self._parts else [np.zeros(0, dtype=t) for t in _POSITION_TYPES]
        role_counts = np.zeros(len(self.role_names), dtype=np.uint64)
        for roles, counts in self._counts:
            np.add.at(role_counts, roles, counts)
        pool = Pool(
            *columns, self.role_names, role_counts, self.spellings, self.files, self.sources,
            self.spills, self.read, self.malformed,
        )  # fmt: skip
        if self._outcomes:
            names = (*OUTCOME_TYPES, "ok")
            pool.outcomes = {c: np.concatenate([p[k] for p in self._outcomes]) for k, c in enumerate(names)}
            pool.spools = self.spools
            pool.signature_files = self.signature_files
            pool.tokens = np.concatenate(self._tokens) if self._tokens else None
        return pool


_POSITION_TYPES = (np.uint32, np.uint32, np.uint64, np.uint64, np.uint32, np.uint64, np.uint32)


@dataclass(frozen=True)
class PassSettings:
    """How :class:`Candidates` converts and re-reads records."""

    readback: ReadbackSettings
    workers: int = 1
    roles_needed: bool = False


class Candidates(Records):
    """The draw's records: the pool, each record's state and, once converted, its outcome.

    ``refill`` (pass 1 again, over the roles given, keeping all their records) is provided by
    the engine; a pool from the full pass is complete and never needs it.
    """

    def __init__(
        self,
        pool: Pool,
        keep: int | None,
        settings: PassSettings,
        refill: Callable[[list[str]], Pool] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings
        self.keep = keep
        self.role_names = pool.role_names
        self._refill = refill
        n_roles = len(pool.role_names)
        self.complete = np.ones(n_roles, dtype=bool) if keep is None else pool.role_counts <= keep
        self.rejects: list[tuple[int, int, dict[str, Any]]] = []  # (file id, line, entry)
        self.spools: list[str] = list(pool.spools)
        self._fds: dict[int, int] = {}
        self._set_columns(pool)
        outcomes = pool.outcomes
        if outcomes is not None:
            for name in OUTCOME_TYPES:
                setattr(self, name, outcomes[name])
            self.state = np.where(outcomes["ok"] == 1, VALID, REJECTED).astype(np.uint8)
        self.blank_role = pool.role_names.index("") if "" in pool.role_names else None
        self.drawable = self.role_ids != NO_ROLE
        if settings.roles_needed and self.blank_role is not None:
            self.drawable &= self.role_ids != self.blank_role
        self.dedup = ExactDedup(self.rows)

    def _set_columns(self, pool: Pool) -> None:
        for name in POSITION_COLUMNS:
            setattr(self, name, getattr(pool, name))
        n = len(pool)
        self.state = np.zeros(n, dtype=np.uint8)
        for name, kind in OUTCOME_TYPES.items():
            setattr(self, name, np.zeros(n, dtype=kind))

    def __len__(self) -> int:
        return len(self.role_ids)

    # --- the draw's interface ----------------------------------------------------------
    def resolve(self, ids: np.ndarray) -> None:
        unknown = ids[self.state[ids] == UNKNOWN]
        if len(unknown):
            self.convert(unknown)
        fresh = ids[self.state[ids] == VALID]
        if not len(fresh):
            return
        fresh = fresh[np.lexsort((self.positions[fresh], self.file_ids[fresh]))]
        duplicates = self.dedup.check(fresh, self.keys[fresh])
        self.state[fresh] = KEPT
        for dup in duplicates:
            self.drop(dup)

    def drop(self, dup: Duplicate) -> None:
        """Record ``dup.index`` as a duplicate of ``dup.of``, with its rejects-file entry."""
        self.state[dup.index] = DUPLICATE
        self.rejects.append(
            (int(self.file_ids[dup.index]), int(self.lines[dup.index]), self.duplicate_entry(dup))
        )

    def refill(self, roles: np.ndarray) -> None:
        if self._refill is None:  # cannot happen: a pool from the full pass is complete
            raise RuntimeError("the draw ran out of records in a complete pool")
        extra = self._refill([self.role_names[r] for r in roles.tolist()])  # role ids: this pool's
        known = set(zip(self.file_ids.tolist(), self.positions.tolist(), strict=True))
        places = zip(extra.file_ids.tolist(), extra.positions.tolist(), strict=True)
        new = np.array([place not in known for place in places], dtype=bool)
        sources = []
        for path in extra.sources:
            if path not in self.pool.sources:
                self.pool.sources.append(path)
            sources.append(self.pool.sources.index(path))
        if len(extra):
            extra.source_ids = np.array(sources, dtype=np.uint32)[extra.source_ids]
        count = int(new.sum())
        for name in POSITION_COLUMNS:
            setattr(self, name, np.concatenate((getattr(self, name), getattr(extra, name)[new])))
        self.state = np.concatenate((self.state, np.zeros(count, dtype=np.uint8)))
        for name, kind in OUTCOME_TYPES.items():
            setattr(self, name, np.concatenate((getattr(self, name), np.zeros(count, dtype=kind))))
        self.drawable = np.concatenate((self.drawable, np.ones(count, dtype=bool)))
        self.complete[roles] = True

    # --- converting ----------------------------------------------------------------------
    def convert(self, ids: np.ndarray) -> None:
        """Pass 2 over ``ids``: each becomes VALID (with its outcome) or REJECTED (entry kept)."""
        order = np.lexsort((self.offsets[ids], self.source_ids[ids]))
        ids = ids[order]
        picks = Picks(
            self.source_ids[ids], self.offsets[ids], self.lengths[ids], self.file_ids[ids], self.lines[ids],
            self.positions[ids], self.pool.sources, self.pool.files,
        )  # fmt: skip
        workers = self.settings.workers if len(ids) >= PARALLEL_MIN_PICKS else 1
        size = max(1, min(PICKS_PER_BATCH, -(-len(ids) // (4 * workers))))
        jobs = [(picks.part(i, i + size), self.settings.readback) for i in range(0, len(ids), size)]
        start = 0
        for outcomes, rejects in self.run_jobs(jobs, workers):
            part = ids[start : start + len(outcomes)]
            start += len(outcomes)
            first = len(self.spools)
            self.spools.extend(outcomes.spools)
            ok = np.frombuffer(outcomes.ok, dtype=np.uint8).astype(bool)
            self.state[part] = np.where(ok, VALID, REJECTED)
            for name, kind in OUTCOME_TYPES.items():
                getattr(self, name)[part] = np.frombuffer(getattr(outcomes, name), dtype=kind)
            self.spool_ids[part] += np.uint32(first)
            for i, entry in rejects:
                record = int(part[i])
                self.rejects.append((int(self.file_ids[record]), int(self.lines[record]), entry))

    def run_jobs(
        self, jobs: list[tuple[Picks, ReadbackSettings]], workers: int
    ) -> Iterator[tuple[Outcomes, list[tuple[int, dict[str, Any]]]]]:
        """Pass 2 over the jobs, results in order: forked workers here, Ray tasks on a cluster."""
        return ordered_map(convert_picks, jobs, workers)

    # --- reading the rendered rows -------------------------------------------------------
    def rows(self, i: int) -> bytes:
        """The rendered rows of converted record ``i``."""
        spool = int(self.spool_ids[i])
        fd = self._fds.get(spool)
        if fd is None:
            fd = self._fds[spool] = os.open(self.spools[spool], os.O_RDONLY)
        return os.pread(fd, int(self.row_lengths[i]), int(self.row_offsets[i]))

    def close(self) -> None:
        for fd in self._fds.values():
            os.close(fd)
        self._fds.clear()

    def row_reader(self, ids: np.ndarray) -> Callable[[int], bytes]:
        """A reader of the rows of ``ids`` for writing the output: whole spools in memory when
        they are small, positional reads otherwise."""
        spools = np.unique(self.spool_ids[ids])
        sizes = sum(os.path.getsize(self.spools[s]) for s in spools.tolist())
        if sizes > IN_MEMORY_ROWS:
            return self.rows
        data = {s: open(self.spools[s], "rb").read() for s in spools.tolist()}  # noqa: SIM115

        def read(i: int) -> bytes:
            offset = int(self.row_offsets[i])
            return data[int(self.spool_ids[i])][offset : offset + int(self.row_lengths[i])]

        return read

    # --- rejects -------------------------------------------------------------------------
    def source(self, i: int) -> tuple[str, int, bool]:
        """(file, line or element index, from a JSON array) of record ``i``."""
        path, element = self.pool.files[int(self.file_ids[i])]
        return path, int(self.lines[i]), element

    def duplicate_entry(self, dup: Duplicate) -> dict[str, Any]:
        """The rejects-file entry of a dropped duplicate (see :mod:`lfkit.data_tools.core.rejects`)."""
        path, line, element = self.source(dup.index)
        of_path, of_line, of_element = self.source(dup.of)
        where = f"{of_path}[{of_line}]" if of_element else f"{of_path}:{of_line}"
        if dup.similarity == 1.0:
            reason, message = "duplicate", f"the same conversation as {where} (whitespace aside)"
        else:
            reason = "near_duplicate"
            message = (
                f"nearly the same conversation as {where} (estimated Jaccard similarity {dup.similarity})"
            )
        entry: dict[str, Any] = {
            "file": path,
            "line": line,
            "field": None,
            "reason": reason,
            "message": message,
        }
        if element:
            entry["element"] = True
        entry["duplicate_of"] = {"file": of_path, "line": of_line}
        entry["record"] = preview(self.rows(dup.index).rstrip(b"\n"))
        return entry

    def write_rejects(self, sink: RejectTally) -> None:
        """Every reject of the run into ``sink``, in input order (file, then line)."""
        file_ids = {path: i for i, (path, _) in enumerate(self.pool.files)}
        spilled = [_read_spill(s, file_ids) for s in self.pool.spills]
        found = sorted(self.rejects, key=_place)
        for _, _, entry in heapq.merge(*spilled, found, key=_place):
            sink.add_entry(entry)

    # --- numbers for the summary ---------------------------------------------------------
    def note_counts(self, ids: np.ndarray) -> tuple[int, int, int]:
        """Trimmed user turns, moved greetings and merged turns of the records ``ids``."""
        trimmed, greetings, merged = unpack_notes(self.notes[ids])
        return int(trimmed.sum()), int(greetings.sum()), int(merged.sum())


def _place(reject: tuple[int, int, dict[str, Any]]) -> tuple[int, int]:
    return reject[0], reject[1]


def _read_spill(spill: Spill, file_ids: dict[str, int]) -> Iterator[tuple[int, int, dict[str, Any]]]:
    with open(spill.path, "rb") as fh:
        for raw in fh:
            entry = orjson.loads(raw)
            entry["line"] += spill.line_base
            yield file_ids[entry["file"]], entry["line"], entry


def merge_chunks(
    builder: PoolBuilder,
    chunks: list[Chunk],
    file_ids: dict[str, int],
    results: Iterator[Any],
) -> Pool:
    """Feed ``results`` (one per chunk, in order) to ``builder``; the merged :class:`Pool`."""
    for chunk, result in zip(chunks, results, strict=True):
        if isinstance(result, ChunkIndex):
            builder.add(file_ids[chunk.path], result)
        else:
            builder.add(file_ids[chunk.path], result.index, result.outcomes)
    return builder.finish()
