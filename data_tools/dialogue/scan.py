"""The full pass: parse, place, convert and spool every record, in one streaming read.

Used where every record is converted anyway: a conversion without ``--max-per-role`` (every
record is kept), ``--validate-all``, ``--dedup near`` (it compares whole roles), and
``lfkit data stats dialogue`` (statistics of everything). It gives, per record, what pass 1
gives (:class:`~lfkit.data_tools.dialogue.index.ChunkIndex`: role, file, line, position; the
role read by the same :class:`~lfkit.data_tools.dialogue.index.RoleReader` rules from the
parsed record) and what pass 2 gives (:class:`~lfkit.data_tools.dialogue.outcomes.Outcomes`:
rows spooled in the work folder, or the reject). So the draw that follows sees exactly the
records a sampled two-pass conversion would, and picks the same ones.

Every record that parses as a JSON object is in the index, the ones the rules reject too (a
draw counts them as it meets them); malformed lines are rejected and left out, as in pass 1.
Rejects are spilled, in line order, to a file in the work folder.

Parallelism: large plain files are cut into line-aligned chunks
(:func:`lfkit.data_tools.core.inputs.plan_chunks`) that forked workers scan independently
(:func:`lfkit.data_tools.core.parallel.ordered_map`); the results are merged strictly in input
order, so every output byte is identical whatever the number of workers or chunks.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from lfkit.data_tools.core.inputs import Chunk, LineCounter, iter_chunk
from lfkit.data_tools.core.records import RecordError, parse_record
from lfkit.data_tools.core.rejects import reject_entry
from lfkit.data_tools.dialogue.index import NO_ROLE, ChunkIndex, RoleReader
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.outcomes import Outcomes, OutcomeWriter
from lfkit.data_tools.dialogue.render import render
from lfkit.data_tools.dialogue.transform import to_conversation


@dataclass(frozen=True)
class ScanSettings:
    """The picklable settings a worker needs."""

    layout: LayoutSettings
    context_only: bool
    work_dir: str
    near_duplicates: bool = False  # spool a MinHash signature per converted record


@dataclass
class ChunkScan:
    """One chunk of the full pass: the index of its records and their outcomes (same order)."""

    index: ChunkIndex
    outcomes: Outcomes


def scan_chunk(
    job: tuple[Chunk, ScanSettings],
    on_progress: Callable[[int], None] | None = None,
    tokenizer: Any = None,
) -> ChunkScan:
    """Scan one chunk (see the module docstring)."""
    chunk, settings = job
    ctx = Context.for_file(chunk.path, settings.layout)
    roles = RoleReader(chunk.path, settings.layout)
    writer = OutcomeWriter(settings.work_dir, settings.near_duplicates, tokenizer)
    context_only = settings.context_only
    role_ids: list[int] = []
    positions: list[int] = []
    lines: list[int] = []
    lengths: list[int] = []
    rejects_fh = None
    rejects_name = None
    read = rejected = 0
    counter = LineCounter()
    names = roles.names
    try:
        for line in iter_chunk(chunk, on_progress, counter):
            read += 1
            try:
                record = parse_record(line)
            except RecordError as err:
                record, error = None, err
            if record is not None:
                rid = roles.role_of_dict(record)
                role_ids.append(rid)
                positions.append(line.offset)
                lines.append(line.lineno)
                lengths.append(len(line.raw))
                try:
                    conv = to_conversation(record, ctx, line.raw)
                    if rid == NO_ROLE or conv.role != names[rid]:
                        raise AssertionError(f"{line.where}: the rules and pass 1 disagree on the role")
                    data, key = render(conv, context_only)
                    writer.add(conv, data, key, context_only)
                    continue
                except RecordError as err:
                    writer.reject()
                    error = err
            if rejects_fh is None:
                fd, rejects_name = tempfile.mkstemp(prefix="rejects.", dir=settings.work_dir)
                rejects_fh = os.fdopen(fd, "wb")
            rejects_fh.write(orjson.dumps(reject_entry(line, error)) + b"\n")
            rejected += record is None
    except BaseException:
        writer.abort()
        raise
    finally:
        if rejects_fh is not None:
            rejects_fh.close()
    outcomes = writer.close()
    role_array = np.asarray(role_ids, dtype=np.uint32)
    counts = np.bincount(role_array[role_array != NO_ROLE], minlength=len(names)).astype(np.uint64)
    position_array = np.asarray(positions, dtype=np.uint64)
    index = ChunkIndex(
        role_array, position_array, np.asarray(lines, dtype=np.uint64), position_array,
        np.asarray(lengths, dtype=np.uint32), names, counts, roles.spellings, chunk.path,
        read, rejected, counter.lines, rejects_name,
    )  # fmt: skip
    return ChunkScan(index, outcomes)
