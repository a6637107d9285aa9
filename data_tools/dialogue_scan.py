"""One streaming pass over dialogue inputs: parse, validate, render, and index each record.

Both ``lfkit data convert`` and ``lfkit data stats`` run this pass. Each good record is
rendered once into its final JSONL bytes; ``convert`` appends them to spool files and keeps
only a compact :class:`ConversationIndex` in memory (role id, spool and offset, length,
sample count, turns, characters: a few dozen bytes per conversation in ``array`` columns), so
memory stays flat however large the input is, and sampling later copies bytes from the spools
without parsing anything again. ``stats`` runs the same pass without spools.

Parallelism: large plain files are cut into line-aligned chunks
(:func:`lfkit.data_tools.jsonl.plan_chunks`) that worker processes scan independently, each
into its own spool; the results are merged strictly in input order, so role ids, line numbers,
the rejects file and every output byte are identical whatever the number of workers or chunks.
"""

from __future__ import annotations

import multiprocessing
import os
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from lfkit.data_tools.dialogue import RoleSource, render_samples, to_conversation
from lfkit.data_tools.jsonl import (
    Chunk,
    LineCounter,
    RecordError,
    expand_inputs,
    iter_chunk,
    parse_line,
    plan_chunks,
    total_bytes,
)
from lfkit.data_tools.rejects import RejectTally, reject_entry
from lfkit.data_tools.summary import Accounting

TOKENIZE_BATCH = 256
MIN_CHUNK_BYTES = 4 << 20
MAX_CHUNK_BYTES = 64 << 20
PARALLEL_MIN_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
SPOOL_BUFFER = 1 << 20
MAX_WORKERS = 8
_CONTENT = itemgetter("content")


@dataclass
class ConversationIndex:
    """Per-conversation columns (parallel arrays, input order) and the role names.

    32 bytes per conversation (plus 4 per sampled one later): about 40 MB per million
    conversations, whatever their length, since no text is kept.
    """

    role_ids: array = field(default_factory=lambda: array("I"))
    spool_ids: array = field(default_factory=lambda: array("I"))
    offsets: array = field(default_factory=lambda: array("Q"))
    lengths: array = field(default_factory=lambda: array("I"))
    samples: array = field(default_factory=lambda: array("I"))
    turns: array = field(default_factory=lambda: array("I"))
    chars: array = field(default_factory=lambda: array("I"))
    tokens: array | None = None
    role_names: list[str] = field(default_factory=list)
    role_lookup: dict[str, int] = field(default_factory=dict)
    spools: list[str] = field(default_factory=list)
    trimmed_user_turns: int = 0
    moved_greetings: int = 0

    def __len__(self) -> int:
        return len(self.role_ids)

    def role_id(self, role: str) -> int:
        rid = self.role_lookup.get(role)
        if rid is None:
            rid = self.role_lookup[role] = len(self.role_names)
            self.role_names.append(role)
        return rid

    def per_role_counts(self) -> list[int]:
        counts = [0] * len(self.role_names)
        for rid in self.role_ids:
            counts[rid] += 1
        return counts

    def merge(self, part: ConversationIndex) -> None:
        """Append a chunk's index (its own role ids and spools) after this one's."""
        remap = [self.role_id(name) for name in part.role_names]
        self.role_ids.extend(map(remap.__getitem__, part.role_ids))
        first_spool = len(self.spools)
        self.spools.extend(part.spools)
        self.spool_ids.extend(first_spool + s for s in part.spool_ids)
        for name in ("offsets", "lengths", "samples", "turns", "chars"):
            getattr(self, name).extend(getattr(part, name))
        if part.tokens is not None:
            if self.tokens is None:
                self.tokens = array("Q")
            self.tokens.extend(part.tokens)
        self.trimmed_user_turns += part.trimmed_user_turns
        self.moved_greetings += part.moved_greetings


@dataclass
class ChunkResult:
    """What scanning one chunk produced; rejects are spilled to a file (line numbers chunk-relative)."""

    index: ConversationIndex
    read: int
    rejected: int
    lines: int
    rejects_file: str | None


@dataclass(frozen=True)
class ScanSettings:
    """The picklable settings a worker needs."""

    source: RoleSource
    context_only: bool
    spool_dir: str | None  # None: statistics only, nothing rendered or spooled
    work_dir: str


def scan_chunk(
    chunk: Chunk,
    settings: ScanSettings,
    tokenizer: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Scan one chunk: convert each record into a fresh spool file, spill rejects to a file."""
    index = ConversationIndex()
    source, context_only = settings.source, settings.context_only
    pending: list[str] = []
    if tokenizer is not None:
        index.tokens = array("Q")

    def flush_tokens() -> None:
        if pending:
            encoded = tokenizer(pending, add_special_tokens=False)["input_ids"]
            index.tokens.extend(len(ids) for ids in encoded)
            pending.clear()

    spool = None
    if settings.spool_dir is not None:
        fd, spool_name = tempfile.mkstemp(prefix="spool.", dir=settings.spool_dir)
        spool = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
        index.spools.append(spool_name)
    rejects_fh = None
    rejects_name = None
    add_role, add_offset, add_length = index.role_ids.append, index.offsets.append, index.lengths.append
    add_samples, add_turns, add_chars = index.samples.append, index.turns.append, index.chars.append
    lookup, role_id = index.role_lookup, index.role_id
    write = spool.write if spool is not None else None
    offset = read = rejected = trimmed = greetings = 0
    counter = LineCounter()
    try:
        for line in iter_chunk(chunk, on_progress, counter):
            read += 1
            try:
                conv = to_conversation(parse_line(line), line, source)
            except RecordError as err:
                if rejects_fh is None:
                    fd, rejects_name = tempfile.mkstemp(prefix="rejects.", dir=settings.work_dir)
                    rejects_fh = os.fdopen(fd, "wb")
                rejects_fh.write(orjson.dumps(reject_entry(line, err)) + b"\n")
                rejected += 1
                continue
            rid = lookup.get(conv.role)
            add_role(role_id(conv.role) if rid is None else rid)
            messages = conv.messages
            add_samples(len(messages) // 2 if context_only else 1)
            add_turns(len(messages))
            add_chars(len(conv.system) + sum(map(len, map(_CONTENT, messages))))
            if conv.trimmed_user_turns or conv.moved_greetings:
                trimmed += conv.trimmed_user_turns
                greetings += conv.moved_greetings
            if write is not None:
                data = render_samples(conv, context_only)
                write(data)
                add_offset(offset)
                add_length(len(data))
                offset += len(data)
            if tokenizer is not None:
                pending.append("\n".join([conv.system, *map(_CONTENT, messages)]))
                if len(pending) >= TOKENIZE_BATCH:
                    flush_tokens()
        if tokenizer is not None:
            flush_tokens()
    finally:
        if spool is not None:
            spool.close()
        if rejects_fh is not None:
            rejects_fh.close()
    if write is not None:
        index.spool_ids.extend(repeat(0, len(index.role_ids)))
    index.trimmed_user_turns, index.moved_greetings = trimmed, greetings
    return ChunkResult(index, read, rejected, counter.lines, rejects_name)


def _scan_chunk_worker(args: tuple[Chunk, ScanSettings]) -> ChunkResult:
    return scan_chunk(*args)


def default_workers() -> int:
    """CPUs this process may use, at most :data:`MAX_WORKERS`."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, MAX_WORKERS))


def scan(
    files: Sequence[str | Path],
    source: RoleSource,
    context_only: bool,
    rejects: RejectTally,
    work_dir: str | Path,
    spool: bool = True,
    tokenizer: Any = None,
    on_progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> tuple[ConversationIndex, Accounting]:
    """Read every record of ``files`` (or directories): convert it into spools, or reject it.

    ``work_dir`` must be a private directory that outlives the use of the index (the spools
    live there). With a ``tokenizer`` (a Hugging Face tokenizer; forces one process), also
    records each conversation's token count: system text and turns joined by newlines, no
    chat template. ``workers`` > 1 scans chunks in that many processes.
    """
    settings = ScanSettings(source, context_only, str(work_dir) if spool else None, str(work_dir))
    files = expand_inputs(files)
    total = total_bytes(files)
    if tokenizer is not None or total < PARALLEL_MIN_BYTES:
        workers = 1
    # ~4 chunks per worker balances the load; chunking never changes the output, only which
    # spool holds a record (results are merged in input order)
    chunk_bytes = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, total // (4 * workers) + 1))
    chunks = plan_chunks(files, chunk_bytes)
    workers = max(1, min(workers, len(chunks)))
    index = ConversationIndex()
    counts = Accounting()
    line_base: dict[str, int] = {}
    for chunk, part in zip(
        chunks, _run_chunks(chunks, settings, tokenizer, on_progress, workers), strict=True
    ):
        base = line_base.get(chunk.path, 0)
        line_base[chunk.path] = base + part.lines
        counts.read += part.read
        counts.rejected += part.rejected
        counts.converted += part.read - part.rejected
        index.merge(part.index)
        if part.rejects_file is not None:
            _merge_rejects(part.rejects_file, base, rejects)
    return index, counts


def _run_chunks(
    chunks: list[Chunk],
    settings: ScanSettings,
    tokenizer: Any,
    on_progress: Callable[[int], None] | None,
    workers: int,
) -> Iterator[ChunkResult]:
    if workers == 1:
        for chunk in chunks:
            yield scan_chunk(chunk, settings, tokenizer, on_progress)
        return
    # spawn, not fork: the parent may run a progress-bar thread, and forked locks can deadlock
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        for chunk, result in zip(
            chunks, pool.map(_scan_chunk_worker, zip(chunks, repeat(settings))), strict=True
        ):
            if on_progress is not None:
                on_progress(chunk.size)
            yield result


def _merge_rejects(path: str, line_base: int, rejects: RejectTally) -> None:
    """Move a chunk's spilled rejects into ``rejects``, turning chunk line numbers into file ones."""
    with open(path, "rb") as fh:
        for raw in fh:
            entry = orjson.loads(raw)
            entry["line"] += line_base
            rejects.add_entry(entry)
    os.unlink(path)
