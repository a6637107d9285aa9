"""The streaming pass over dialogue inputs: parse, transform, render, index every record.

``lfkit data convert dialogue`` and ``lfkit data stats dialogue`` both run :func:`scan`. Each
good record is rendered once into its final JSON Lines bytes and appended to a spool file in
the run's work folder; memory keeps only a compact :class:`ConversationIndex` (role, spool
position, sample count, turns, characters, source file and line, duplicate key, columns: about
60 bytes per conversation in ``array`` columns), so memory stays flat however long the
conversations are, and sampling later copies bytes from the spools without parsing anything
again. With near-duplicate detection on, each conversation's MinHash signature is spooled too.

Parallelism: large plain files are cut into line-aligned chunks
(:func:`lfkit.data_tools.core.inputs.plan_chunks`) that worker processes scan independently,
each into its own spool; the results are merged strictly in input order, so role ids, line
numbers, the rejects file and every output byte are identical whatever the number of workers
or chunks. Workers die with the parent (:func:`~lfkit.data_tools.core.workdir.die_with_parent`)
and are terminated on any error or signal.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import sys
import tempfile
from array import array
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

import orjson
from lfkit.data_tools.core.inputs import Chunk, LineCounter, iter_chunk, plan_chunks, total_bytes
from lfkit.data_tools.core.records import RecordError, parse_record
from lfkit.data_tools.core.rejects import RejectTally, reject_entry
from lfkit.data_tools.core.summary import Accounting
from lfkit.data_tools.core.workdir import die_with_parent, terminate_workers
from lfkit.data_tools.dialogue.fastpath import fast_conversation
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.model import NO_NOTES
from lfkit.data_tools.dialogue.render import render
from lfkit.data_tools.dialogue.transform import full_conversation

TOKENIZE_BATCH = 256
MIN_CHUNK_BYTES = 4 << 20
MAX_CHUNK_BYTES = 64 << 20
PARALLEL_MIN_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
SPOOL_BUFFER = 1 << 20
MAX_WORKERS = 8
KEY_BYTES = 16
_CONTENT = itemgetter("content")


@dataclass
class ConversationIndex:
    """Per-conversation columns (parallel arrays, input order) and what they refer to.

    No text is kept: a conversation's rendered rows are ``spools[spool_ids[i]]`` at
    ``offsets[i]``, ``lengths[i]`` bytes long.
    """

    role_ids: array = field(default_factory=lambda: array("I"))
    spool_ids: array = field(default_factory=lambda: array("I"))
    offsets: array = field(default_factory=lambda: array("Q"))
    lengths: array = field(default_factory=lambda: array("I"))
    samples: array = field(default_factory=lambda: array("I"))
    turns: array = field(default_factory=lambda: array("I"))
    chars: array = field(default_factory=lambda: array("I"))
    file_ids: array = field(default_factory=lambda: array("I"))
    linenos: array = field(default_factory=lambda: array("Q"))
    features: array = field(default_factory=lambda: array("B"))
    keys: bytearray = field(default_factory=bytearray)  # KEY_BYTES per conversation
    tokens: array | None = None
    role_names: list[str] = field(default_factory=list)
    role_lookup: dict[str, int] = field(default_factory=dict)
    spools: list[str] = field(default_factory=list)
    files: list[tuple[str, bool]] = field(default_factory=list)  # (path, is a JSON array)
    signature_files: list[str] = field(default_factory=list)  # near-duplicate MinHash spools
    trimmed_user_turns: int = 0
    moved_greetings: int = 0
    merged_turns: int = 0
    role_spellings: set[str] = field(default_factory=set)  # roles as written, when normalised

    def __len__(self) -> int:
        return len(self.role_ids)

    def role_id(self, role: str) -> int:
        rid = self.role_lookup.get(role)
        if rid is None:
            rid = self.role_lookup[role] = len(self.role_names)
            self.role_names.append(role)
        return rid

    def per_role_counts(self, keep: Sequence[bool] | None = None) -> list[int]:
        counts = [0] * len(self.role_names)
        if keep is None:
            for rid in self.role_ids:
                counts[rid] += 1
        else:
            for rid, kept in zip(self.role_ids, keep, strict=True):
                counts[rid] += kept
        return counts

    def source(self, i: int) -> tuple[str, int, bool]:
        """(file, line or element index, from a JSON array) of conversation ``i``."""
        path, element = self.files[self.file_ids[i]]
        return path, self.linenos[i], element

    def key(self, i: int) -> bytes:
        return bytes(self.keys[i * KEY_BYTES : (i + 1) * KEY_BYTES])

    def merge(self, part: ConversationIndex) -> None:
        """Append a chunk's index (its own role ids, files and spools) after this one's."""
        remap = [self.role_id(name) for name in part.role_names]
        self.role_ids.extend(map(remap.__getitem__, part.role_ids))
        first_spool, first_file = len(self.spools), len(self.files)
        self.spools.extend(part.spools)
        self.spool_ids.extend(first_spool + s for s in part.spool_ids)
        self.files.extend(part.files)
        self.file_ids.extend(first_file + f for f in part.file_ids)
        for name in ("offsets", "lengths", "samples", "turns", "chars", "linenos", "features", "keys"):
            getattr(self, name).extend(getattr(part, name))
        if part.tokens is not None:
            if self.tokens is None:
                self.tokens = array("Q")
            self.tokens.extend(part.tokens)
        self.signature_files.extend(part.signature_files)
        self.trimmed_user_turns += part.trimmed_user_turns
        self.moved_greetings += part.moved_greetings
        self.merged_turns += part.merged_turns
        self.role_spellings |= part.role_spellings


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

    layout: LayoutSettings
    context_only: bool
    work_dir: str
    near_duplicates: bool = False  # spool a MinHash signature per conversation


def scan_chunk(
    chunk: Chunk,
    settings: ScanSettings,
    tokenizer: Any = None,
    on_progress: Callable[[int], None] | None = None,
) -> ChunkResult:
    """Scan one chunk: convert each record into a fresh spool file, spill rejects to a file."""
    index = ConversationIndex()
    ctx = Context.for_file(chunk.path, settings.layout)
    context_only = settings.context_only
    pending: list[str] = []
    if tokenizer is not None:
        index.tokens = array("Q")

    def flush_tokens() -> None:
        if pending:
            encoded = tokenizer(pending, add_special_tokens=False)["input_ids"]
            index.tokens.extend(len(ids) for ids in encoded)
            pending.clear()

    fd, spool_name = tempfile.mkstemp(prefix="spool.", dir=settings.work_dir)
    spool = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
    index.spools.append(spool_name)
    index.files.append((chunk.path, chunk.array))
    signatures = None
    if settings.near_duplicates:
        from lfkit.data_tools.dialogue.dedup import signature

        fd, sig_name = tempfile.mkstemp(prefix="minhash.", dir=settings.work_dir)
        signatures = os.fdopen(fd, "wb", buffering=SPOOL_BUFFER)
        index.signature_files.append(sig_name)
    rejects_fh = None
    rejects_name = None
    add_role, add_offset, add_length = index.role_ids.append, index.offsets.append, index.lengths.append
    add_samples, add_turns, add_chars = index.samples.append, index.turns.append, index.chars.append
    add_line, add_feature, add_key = index.linenos.append, index.features.append, index.keys.extend
    lookup, role_id = index.role_lookup, index.role_id
    write = spool.write
    offset = read = rejected = 0
    counter = LineCounter()
    try:
        for line in iter_chunk(chunk, on_progress, counter):
            read += 1
            try:
                record = parse_record(line)  # to_conversation, inlined: it runs once per record
                conv = fast_conversation(record, ctx, line.raw) or full_conversation(record, ctx)
            except RecordError as err:
                if rejects_fh is None:
                    fd, rejects_name = tempfile.mkstemp(prefix="rejects.", dir=settings.work_dir)
                    rejects_fh = os.fdopen(fd, "wb")
                rejects_fh.write(orjson.dumps(reject_entry(line, err)) + b"\n")
                rejected += 1
                continue
            role, system, messages, _, _, notes, features = conv  # one unpack, not seven lookups
            rid = lookup.get(role)
            add_role(role_id(role) if rid is None else rid)
            add_samples(sum(m["role"] == "user" for m in messages) if context_only else 1)
            add_turns(len(messages))
            add_chars(len(system) + sum(map(len, map(_CONTENT, messages))))
            add_line(line.lineno)
            add_feature(features)
            if notes is not NO_NOTES:
                _count_notes(index, conv)
            data, key = render(conv, context_only)
            add_key(key)
            write(data)
            add_offset(offset)
            add_length(len(data))
            offset += len(data)
            if signatures is not None:
                signatures.write(signature(conv))
            if tokenizer is not None:
                pending.append("\n".join([system, *map(_CONTENT, messages)]))
                if len(pending) >= TOKENIZE_BATCH:
                    flush_tokens()
        if tokenizer is not None:
            flush_tokens()
    finally:
        spool.close()
        if signatures is not None:
            signatures.close()
        if rejects_fh is not None:
            rejects_fh.close()
    index.spool_ids.extend(repeat(0, len(index.role_ids)))
    index.file_ids.extend(repeat(0, len(index.role_ids)))
    return ChunkResult(index, read, rejected, counter.lines, rejects_name)


def _count_notes(index: ConversationIndex, conv: Any) -> None:
    notes = conv.notes
    index.trimmed_user_turns += notes.trimmed_user_turns
    index.moved_greetings += notes.moved_greetings
    index.merged_turns += notes.merged_turns
    if notes.role_spelling is not None:
        index.role_spellings.add(notes.role_spelling)


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
    settings: ScanSettings,
    rejects: RejectTally,
    tokenizer: Any = None,
    on_progress: Callable[[int], None] | None = None,
    workers: int = 1,
) -> tuple[ConversationIndex, Accounting]:
    """Read every record of ``files``: convert it into spools, or reject it.

    ``settings.work_dir`` must be a private folder that outlives the use of the index (the
    spools live there). With a ``tokenizer`` (a Hugging Face tokenizer; forces one process),
    also records each conversation's token count: system text and turns joined by newlines,
    no chat template. ``workers`` > 1 scans chunks in that many processes.
    """
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
        if base:
            part.index.linenos = array("Q", (n + base for n in part.index.linenos))
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
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=partial(die_with_parent, os.getpid()),
    )
    try:
        with _workers_skip_main():  # the workers start during map()
            results = pool.map(_scan_chunk_worker, zip(chunks, repeat(settings)))
        for chunk, result in zip(chunks, results, strict=True):
            if on_progress is not None:
                on_progress(chunk.size)
            yield result
    except BaseException:
        terminate_workers(pool)  # an error or a signal: do not wait for the chunks in flight
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


@contextlib.contextmanager
def _workers_skip_main() -> Iterator[None]:
    """Keep spawned workers from re-running the parent's ``__main__`` (the ``lfkit`` script).

    ``spawn`` re-imports the main module in every child so that functions defined there can be
    unpickled; the workers run :func:`_scan_chunk_worker` from this module, so importing the
    CLI (typer, rich, every command) in each of them is start-up time for nothing.
    """
    main = sys.modules.get("__main__")
    saved = {name: main.__dict__[name] for name in ("__file__", "__spec__") if main and name in main.__dict__}
    try:
        for name in saved:
            setattr(main, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def _merge_rejects(path: str, line_base: int, rejects: RejectTally) -> None:
    """Move a chunk's spilled rejects into ``rejects``, turning chunk line numbers into file ones."""
    with open(path, "rb") as fh:
        for raw in fh:
            entry = orjson.loads(raw)
            entry["line"] += line_base
            rejects.add_entry(entry)
    os.unlink(path)
