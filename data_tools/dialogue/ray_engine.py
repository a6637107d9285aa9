"""``--engine ray``: the same conversion on a Ray cluster, with Ray Data.

A corpus of billions of lines does not fit one machine's time. This engine runs each step of
:mod:`lfkit.data_tools.dialogue.convert` where the data is:

1. **Pass 1 on Ray Data.** The inputs are split into line-aligned byte ranges (the same chunks
   as the local engine, sized to the cluster's CPUs); a Ray Data ``map_batches`` reads each
   range on some node (:func:`lfkit.data_tools.dialogue.index.index_chunk`: roles, places,
   malformed lines rejected), keeps the head of each role's draw within it, and writes its
   counts and rejects to the run's work folder.
2. **The draw as a distributed group-by.** ``groupby(role).map_groups`` keeps, for every role,
   the records that come first in some epoch's draw order (the global head: the union of the
   chunks' heads holds it). Only those come back to the driver: about ``keep`` records per
   role and epoch, the size of the output, not of the inputs.
3. **Rounds and pass 2 as Ray tasks.** The driver runs the draw's rounds
   (:func:`lfkit.data_tools.dialogue.sampling.plan_sampling`, the very code of the local
   engine, so the picks are the same); each round's picks are converted by Ray tasks
   (:func:`lfkit.data_tools.dialogue.readback.convert_picks`) that spool the rendered rows
   into the work folder. A role whose draw runs past what step 2 kept is read again in full.
4. **Parquet shards.** Ray Data writes each split as a folder of Parquet files
   (``OUT/NAME/part-00000.parquet`` ...), which LlamaFactory loads as one dataset
   (``file_name`` naming a folder: every file in it, all of one type). ``dataset_info.json``
   and the rejects file (the same bytes as the local engine's) are written by the driver, and
   everything is published together as in the local engine.

``--out`` (and the inputs) must be a filesystem path every node reads and writes at the same
place (a shared mount): the work folder inside it carries the spools between nodes. Without
``--ray-address`` a local Ray starts in this process (and stops at the end). ``--dedup near``
(it compares whole roles) runs on one machine only.

Ray is the ``lfkit[ray]`` extra: imported here only, with a clear error when it is missing.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from lfkit.data_tools.core.inputs import Chunk, InputSet, expand_inputs, is_json_array, plan_chunks
from lfkit.data_tools.core.output import OutputFormat, rows_table
from lfkit.data_tools.core.parallel import default_workers
from lfkit.data_tools.dialogue.convert import (
    MAX_CHUNK_BYTES,
    MIN_CHUNK_BYTES,
    ConvertOptions,
    ConvertResult,
    dataset_entry,
    distinct_inputs,
    run_engine,
    split_columns,
)
from lfkit.data_tools.dialogue.index import NO_ROLE, IndexSettings, index_chunk
from lfkit.data_tools.dialogue.outcomes import Outcomes
from lfkit.data_tools.dialogue.pool import Candidates, PassSettings, Pool, Spill
from lfkit.data_tools.dialogue.readback import Picks, ReadbackSettings, convert_picks
from lfkit.data_tools.dialogue.sampling import reachable

from lfkit.atomic import AtomicGroup

RAY_MISSING = (
    "--engine ray needs Ray with Ray Data, which is not installed: pip install 'lfkit[ray]' "
    "(the same Ray version on every node of the cluster)"
)
RECORD_COLUMNS = ("role", "has_role", "file_id", "position", "line", "chunk", "offset", "length")
ROWS_PER_SHARD = 50_000  # rows of the output per Parquet file (one Ray task writes each)
OBJECT_STORE_BYTES = 256 << 20  # a local Ray started here: little moves through its object store


class RayUnavailableError(RuntimeError):
    """``--engine ray`` without Ray installed."""


def import_ray() -> Any:
    """The ``ray`` module with Ray Data, or :class:`RayUnavailableError` saying how to get it."""
    try:
        import ray
        import ray.data  # noqa: F401 (Ray Data is part of the extra)
    except ImportError:
        raise RayUnavailableError(RAY_MISSING) from None
    return ray


@contextlib.contextmanager
def ray_cluster(address: str | None) -> Iterator[Any]:
    """Ray, connected to ``address`` (or a local Ray started here); disconnected at the end.

    A Ray this process already joined is used as it is and left running.
    """
    ray = import_ray()
    logging.getLogger("ray").setLevel(logging.ERROR)
    logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        yield ray
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address is None:
        options.update(
            num_cpus=default_workers(), include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES
        )
    ray.init(address=address, **options)
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        yield ray
    finally:
        ray.shutdown()


def convert_on_ray(
    files: Sequence[str | Path] | InputSet, opts: ConvertOptions, address: str | None = None
) -> ConvertResult:
    """Run the conversion on Ray (see the module docstring); the same result as the local engine.

    Raises :class:`RayUnavailableError` without Ray, ``ValueError`` for options this engine does
    not take.
    """
    opts.validate()
    if opts.dedup == "near":
        raise ValueError("--dedup near compares whole roles on one machine: leave out --engine ray")
    if "://" in str(opts.out_dir):
        raise ValueError(
            f"--out {opts.out_dir}: --engine ray needs a path every node can write (a shared mount)"
        )
    opts = replace(opts, fmt=OutputFormat.parquet, out_dir=Path(os.path.abspath(opts.out_dir)))
    inputs = distinct_inputs(files if isinstance(files, InputSet) else expand_inputs(files))
    inputs.files = [Path(os.path.abspath(p)) for p in inputs.files]  # the same path on every node
    with ray_cluster(address) as ray:
        engine = RayEngine(ray, inputs, opts)
        return run_engine(inputs, opts, engine.read, engine.write_splits)


@dataclass
class _ChunkMeta:
    """What a pass-1 task tells the driver about its chunk (pickled into the work folder)."""

    source: str
    read: int
    rejected: int
    line_count: int
    rejects_file: str | None
    role_names: list[str]
    role_counts: list[int]
    role_spellings: set[str] = field(default_factory=set)


def _index_batch(
    batch: dict[str, np.ndarray], jobs: list[tuple[Chunk, int]], settings: IndexSettings
) -> dict[str, np.ndarray]:
    """Ray Data: pass 1 over the chunks of a batch; one row per kept record (role by name)."""
    columns: dict[str, list[np.ndarray]] = {k: [] for k in RECORD_COLUMNS}
    for job in batch["job"].tolist():
        chunk, file_id = jobs[job]
        part = index_chunk((chunk, file_id, settings))
        meta = _ChunkMeta(
            part.source, part.read, part.rejected, part.line_count, part.rejects_file, part.role_names,
            part.role_counts.tolist(), part.role_spellings,
        )  # fmt: skip
        with open(os.path.join(settings.work_dir, f"chunk.{job}.meta"), "wb") as fh:
            pickle.dump(meta, fh)
        names = np.array([*part.role_names, ""], dtype=object)
        n = len(part.role_ids)
        columns["role"].append(names[np.minimum(part.role_ids, len(part.role_names))])
        columns["has_role"].append(part.role_ids != NO_ROLE)
        columns["file_id"].append(np.full(n, file_id, dtype=np.uint32))
        columns["position"].append(part.positions)
        columns["line"].append(part.lines)
        columns["chunk"].append(np.full(n, job, dtype=np.uint32))
        columns["offset"].append(part.offsets)
        columns["length"].append(part.lengths)
    return {k: np.concatenate(v) for k, v in columns.items()}


def _head_of_role(table: Any, seed: int, epochs: int, keep: int, whole: frozenset[str]) -> Any:
    """Ray Data ``map_groups``: the records of one role that some epoch's draw can reach."""
    n = table.num_rows
    if n <= keep or not table["has_role"][0].as_py() or table["role"][0].as_py() in whole:
        return table
    files = table["file_id"].to_numpy()
    mask = reachable(np.zeros(n, dtype=np.uint32), files, table["position"].to_numpy(), seed, epochs, keep)
    import pyarrow as pa

    return table.filter(pa.array(mask))


def _rows_batch(
    batch: dict[str, np.ndarray], jobs: list[list[tuple[str, int, int]]], columns: list[str]
) -> Any:
    """Ray Data: the rendered rows of some picks (read from the spools) as one Parquet-ready table."""
    import pyarrow as pa

    tables = []
    for job in batch["job"].tolist():
        parts = []
        handles: dict[str, int] = {}
        try:
            for path, offset, length in jobs[job]:
                fd = handles.get(path)
                if fd is None:
                    fd = handles[path] = os.open(path, os.O_RDONLY)
                parts.append(os.pread(fd, length, offset))
        finally:
            for fd in handles.values():
                os.close(fd)
        tables.append(rows_table(b"".join(parts), columns, columns[2:-1]))
    return pa.concat_tables(tables)


class RayEngine:
    """The steps of the module docstring for one conversion."""

    def __init__(self, ray: Any, inputs: InputSet, opts: ConvertOptions) -> None:
        self.ray, self.opts, self.work_dir = ray, opts, ""
        self.files = [(str(path), is_json_array(path)) for path in inputs.files]
        self.file_ids = {path: i for i, (path, _) in enumerate(self.files)}
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        self.cpus = cpus
        total = sum(Path(path).stat().st_size for path, _ in self.files)
        chunk_bytes = max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, total // (4 * cpus) + 1))
        self.chunks = plan_chunks(inputs.files, chunk_bytes)

    # --- pass 1 and the group-by ---------------------------------------------------------
    def read(self, work_dir: str) -> tuple[Candidates, int]:
        """The draw's records (steps 1 and 2), read into the run's work folder; chunks read."""
        self.work_dir = work_dir
        candidates = self._candidates()
        if self.opts.validate_all:  # every record converted first: the draw then only looks them up
            candidates.convert(np.arange(len(candidates)))
        return candidates, len(self.chunks)

    def _candidates(self) -> Candidates:
        opts = self.opts
        whole = frozenset({""}) if opts.roles_needed else frozenset()
        settings = IndexSettings(
            opts.layout(), self.work_dir, opts.seed, opts.resample_epochs, opts.keep, whole
        )
        pool = self._pool(settings, opts.keep, whole)
        readback = ReadbackSettings(opts.layout(), opts.context_only, self.work_dir)
        passes = PassSettings(readback, self.cpus, opts.roles_needed)
        candidates = _RayCandidates(pool, opts.keep, passes, self._refill)
        candidates.ray = self.ray
        self._role_names = candidates.role_names  # a re-read numbers roles as the draw does
        return candidates

    def _pass_one(self, settings: IndexSettings) -> Any:
        jobs = [(chunk, self.file_ids[chunk.path]) for chunk in self.chunks]
        items = [{"job": i} for i in range(len(jobs))]
        dataset = self.ray.data.from_items(items, override_num_blocks=max(1, len(items)))
        return dataset.map_batches(
            _index_batch, fn_kwargs={"jobs": jobs, "settings": settings}, batch_size=1, batch_format="numpy"
        )

    def _pool(
        self, settings: IndexSettings, keep: int | None, whole: frozenset[str], names: list[str] | None = None
    ) -> Pool:
        records = self._pass_one(settings)
        if keep is not None:
            records = records.groupby(["has_role", "role"], num_partitions=max(1, self.cpus)).map_groups(
                _head_of_role,
                fn_kwargs={"seed": settings.seed, "epochs": settings.epochs, "keep": keep, "whole": whole},
                batch_format="pyarrow",
            )
        table = _collect(records)
        metas = []
        for job in range(len(self.chunks)):
            path = os.path.join(self.work_dir, f"chunk.{job}.meta")
            with open(path, "rb") as fh:
                metas.append(pickle.load(fh))
            os.unlink(path)
        return self._merge(table, metas, names)

    def _merge(self, table: dict[str, np.ndarray], metas: list[_ChunkMeta], names: list[str] | None) -> Pool:
        """The driver's :class:`Pool`: records in input order, role ids by first appearance."""
        order = np.lexsort((table["position"], table["file_id"]))
        table = {k: v[order] for k, v in table.items()}
        role_names = list(names or [])
        lookup = {name: i for i, name in enumerate(role_names)}
        counts: dict[str, int] = {}
        spellings: set[str] = set()
        bases, sources, spills = [], [], []
        line_base: dict[int, int] = {}
        read = malformed = 0
        for job, meta in enumerate(metas):
            file_id = self.file_ids[self.chunks[job].path]
            base = line_base.get(file_id, 0)
            line_base[file_id] = base + meta.line_count
            bases.append(base)
            if meta.source not in sources:
                sources.append(meta.source)
            for name, count in zip(meta.role_names, meta.role_counts, strict=True):
                counts[name] = counts.get(name, 0) + count
            spellings |= meta.role_spellings
            read += meta.read
            malformed += meta.rejected
            if meta.rejects_file is not None:
                spills.append(Spill(meta.rejects_file, file_id, base))
        has_role = table["has_role"].astype(bool)
        role_ids = np.full(len(order), NO_ROLE, dtype=np.uint32)
        role_ids[has_role] = [
            lookup.setdefault(name, len(lookup)) for name in table["role"][has_role].tolist()
        ]
        role_names.extend(list(lookup)[len(role_names) :])
        for name in counts:  # roles whose records were all left out still count
            lookup.setdefault(name, len(lookup))
        role_names.extend(list(lookup)[len(role_names) :])
        chunk = table["chunk"].astype(np.int64)
        source_of_chunk = np.array([sources.index(m.source) for m in metas] or [0], dtype=np.uint32)
        return Pool(
            role_ids, table["file_id"].astype(np.uint32), table["position"].astype(np.uint64),
            table["line"].astype(np.uint64) + np.array(bases or [0], dtype=np.uint64)[chunk],
            source_of_chunk[chunk], table["offset"].astype(np.uint64), table["length"].astype(np.uint32),
            role_names, np.array([counts.get(n, 0) for n in role_names], dtype=np.uint64), spellings,
            self.files, sources, spills, read, malformed,
        )  # fmt: skip

    def _refill(self, names: list[str]) -> Pool:
        settings = IndexSettings(self.opts.layout(), self.work_dir, only=frozenset(names))
        return self._pool(settings, None, frozenset(), names=list(self._role_names))

    # --- writing -------------------------------------------------------------------------
    def write_splits(
        self, result: ConvertResult, candidates: Candidates, outputs: AtomicGroup, out_dir: Path
    ) -> dict[str, dict[str, Any]]:
        """Each split as a folder of Parquet shards written by Ray Data; their dataset entries."""
        opts, plan = self.opts, result.plan
        splits = [(opts.name, plan.train, "train")]
        if opts.val_ratio > 0:
            splits.append((f"{opts.name}_val", plan.val, "validation"))
        entries = {}
        for name, picks, split in splits:
            used = int(np.bitwise_or.reduce(candidates.features[picks])) if len(picks) else 0
            columns = split_columns(used)
            samples = int(candidates.samples[picks].sum())
            if split == "train":
                result.train_samples = samples
            else:
                result.val_samples = samples
            folder = outputs.stage_dir(out_dir / name)
            self._write_rows(candidates, picks, columns, folder)
            result.written[name] = out_dir / name
            entries[name] = dataset_entry(name, opts, split, columns)
        return entries

    def _write_rows(
        self, candidates: Candidates, picks: np.ndarray, columns: list[str], folder: Path
    ) -> None:
        from ray.data.datasource.filename_provider import FilenameProvider

        class Shards(FilenameProvider):
            def get_filename_for_task(self, write_uuid: str, task_index: int) -> str:
                return f"part-{task_index:05d}.parquet"

        spools = candidates.spools
        places = zip(
            candidates.spool_ids[picks].tolist(), candidates.row_offsets[picks].tolist(),
            candidates.row_lengths[picks].tolist(), strict=True,
        )  # fmt: skip
        rows = [(spools[s], o, n) for s, o, n in places]
        jobs = [rows[i : i + ROWS_PER_SHARD] for i in range(0, len(rows), ROWS_PER_SHARD)] or [[]]
        dataset = self.ray.data.from_items(
            [{"job": i} for i in range(len(jobs))], override_num_blocks=len(jobs)
        )
        dataset = dataset.map_batches(
            _rows_batch, fn_kwargs={"jobs": jobs, "columns": columns}, batch_size=1, batch_format="numpy"
        )
        # the staged folder is new and empty: OVERWRITE only lets the shards have plain names
        mode = self.ray.data.SaveMode.OVERWRITE
        dataset.write_parquet(str(folder), filename_provider=Shards(file_format="parquet"), mode=mode)
        if not any(folder.iterdir()):  # no rows: one empty shard, so LlamaFactory finds a Parquet file
            import pyarrow.parquet as pq

            pq.write_table(rows_table(b"", columns, columns[2:-1]), folder / "part-00000.parquet")


class _RayCandidates(Candidates):
    """:class:`~lfkit.data_tools.dialogue.pool.Candidates` whose pass 2 runs as Ray tasks."""

    ray: Any = None

    def run_jobs(
        self, jobs: list[tuple[Picks, ReadbackSettings]], workers: int
    ) -> Iterator[tuple[Outcomes, list[tuple[int, dict[str, Any]]]]]:
        task = self.ray.remote(num_cpus=1)(convert_picks)
        refs = [task.remote(job) for job in jobs]
        for ref in refs:
            yield self.ray.get(ref)


def _collect(dataset: Any) -> dict[str, np.ndarray]:
    """A Ray dataset's rows on the driver, as numpy columns."""
    import pyarrow as pa

    tables = [batch for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None)]
    if not tables:
        return {k: np.zeros(0, dtype=object if k == "role" else np.uint64) for k in RECORD_COLUMNS}
    table = pa.concat_tables(tables)
    return {k: table[k].to_numpy(zero_copy_only=False) for k in RECORD_COLUMNS}
