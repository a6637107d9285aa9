"""``lfkit data convert dialogue``: inputs -> a registered LlamaFactory sharegpt dataset.

The engine, apart from the layouts (which only turn one raw record into a
:class:`~lfkit.data_tools.dialogue.model.Conversation`, see
:mod:`lfkit.data_tools.dialogue.transform`):

1. **Read.** With ``--max-per-role`` (and neither ``--validate-all`` nor ``--dedup near``),
   *two passes*: pass 1 (:mod:`lfkit.data_tools.dialogue.index`) reads only each record's role
   and place and checks that it is well-formed JSON, keeping only the records a draw can
   reach; the records the draw picks are then converted by pass 2
   (:mod:`lfkit.data_tools.dialogue.readback`) and no other record is parsed, validated or
   rendered. Otherwise one *full pass* (:mod:`lfkit.data_tools.dialogue.scan`) converts every
   record: without a cap every record is kept anyway, ``--validate-all`` asks for every
   record's verdict, ``--dedup near`` compares whole roles.
2. **Draw** (:mod:`lfkit.data_tools.dialogue.sampling`): the per-role draw in rounds, picks that
   turn out rejects or duplicates redrawn; then the validation split and the virtual epochs.
   Both reading modes give the draw the same records, so the picks are the same.
3. **Write**: the picks' rendered rows are copied from the spools into ``DIR/NAME.jsonl`` (or
   written as ``NAME.parquet``) and ``DIR/NAME_val.*``, registered in ``DIR/dataset_info.json``
   with the columns and tags they use (tools, media); every reject goes to
   ``DIR/NAME.rejects.jsonl`` in input order.

Accounting: every record read is converted (written at least once), rejected (malformed, or
failed the rules, or a duplicate), or not sampled (the draw never reached it, or with
``--validate-all`` it is valid but was not drawn): ``converted + rejected + not sampled =
read``. A record the draw never reached was only checked to be well-formed JSON with a role.

Atomicity: every output (``NAME.*``, ``NAME_val.*``, the rejects file, the merged
``dataset_info.json``) is staged in the run's work folder (:class:`lfkit.atomic.AtomicGroup`)
and all are renamed into place together, ``dataset_info.json`` last, only after everything
succeeded. A run that fails or is interrupted before that (bad option, corrupt ``.gz`` input,
full disk, ``SIGTERM`` ...) leaves the previous outputs as they were, and its work folder is
removed; after a ``SIGKILL`` the next run removes it (:mod:`lfkit.data_tools.core.workdir`).
With ``strict`` and at least one reject, only the rejects file is published.

A run without a validation split retires the ``NAME_val`` split an earlier lfkit run wrote into
the same directory (it would overlap the new training set); see :func:`_stale_validation`. A
run in another ``--format`` retires the earlier file of the other format the same way.

``mask_history`` (what LlamaFactory 0.9.5 does, read in ``data/processor/supervised.py`` and
``hparams/data_args.py``): it is a recipe key (DataArguments), not a dataset attribute;
``DatasetAttr.join`` reads only the keys it knows from ``dataset_info.json`` and ignores the
rest. With ``mask_history: true`` the supervised processor encodes the turns in reverse order,
so the last turns win when ``cutoff_len`` truncates, and gives labels only to the last
assistant turn; it also drops earlier reasoning for templates that do not preserve thinking.
It is SFT-only and cannot be combined with ``train_on_prompt``. So the converter records it
in the entry's ``lfkit`` key (``mask_history`` note, ``recipe_keys``) for the recipe to copy;
in ``--context-only`` datasets every sample has one user turn and it changes nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from lfkit.data_tools.core.inputs import Chunk, InputSet, Skipped, expand_inputs, is_json_array, plan_chunks
from lfkit.data_tools.core.output import OutputFormat, RowWriter, dataset_file
from lfkit.data_tools.core.parallel import ordered_map
from lfkit.data_tools.core.registry import (
    DATASET_INFO,
    SHAREGPT_TAGS,
    TOOL_TAGS,
    is_lfkit_split,
    merged_info,
    read_dataset_info,
)
from lfkit.data_tools.core.rejects import RejectsWriter, RejectTally
from lfkit.data_tools.core.summary import Accounting
from lfkit.data_tools.core.workdir import work_folder
from lfkit.data_tools.dialogue.build import Policy
from lfkit.data_tools.dialogue.dedup import (
    DEFAULT_NEAR_THRESHOLD,
    Duplicate,
    near_duplicates,
    read_signatures,
)
from lfkit.data_tools.dialogue.index import NO_ROLE
from lfkit.data_tools.dialogue.layouts.common import LayoutSettings
from lfkit.data_tools.dialogue.model import FEATURE_COLUMNS
from lfkit.data_tools.dialogue.pool import Candidates, PassSettings, Pool, PoolBuilder, merge_chunks
from lfkit.data_tools.dialogue.readback import ReadbackSettings
from lfkit.data_tools.dialogue.sampling import (
    DUPLICATE,
    KEPT,
    REJECTED,
    VALID,
    SamplingOptions,
    SamplingPlan,
    plan_sampling,
)
from lfkit.data_tools.dialogue.scan import ScanSettings, scan_chunk

from lfkit.atomic import AtomicGroup

COPY_CHUNK = 1 << 20
VAL_BY = ("conversation", "role")
DEDUP = ("exact", "near")
MIN_CHUNK_BYTES = 4 << 20
MAX_CHUNK_BYTES = 64 << 20
PARALLEL_MIN_BYTES = 16 << 20  # below this, starting worker processes costs more than it saves
SPARE_PER_ROLE = 4  # pass 1 keeps this many records per role beyond the cap, for redraws
ROLE_CHECK_BATCH = 4096  # role-less records converted at a time to find whether one is valid


@dataclass
class ConvertOptions:
    """Everything ``lfkit data convert dialogue`` can be told."""

    out_dir: Path
    name: str
    role_key: str | None = None
    role_from_filename: bool = False
    max_per_role: int | None = None
    seed: int = 0
    val_ratio: float = 0.0
    val_by: str = "conversation"  # "conversation": a share of every role; "role": whole roles
    resample_epochs: int = 1
    context_only: bool = False
    mask_history: bool = False
    strict: bool = False
    workers: int = 1
    fmt: OutputFormat = OutputFormat.jsonl
    dedup: str = "exact"  # "near" also drops near duplicates within a role
    near_threshold: float = DEFAULT_NEAR_THRESHOLD  # estimated Jaccard similarity for "near"
    validate_all: bool = False  # convert every record (its rejects written), not only the picks
    policy: Policy = field(default_factory=Policy)

    def validate(self) -> None:
        """Raise ``ValueError`` for option combinations that cannot work."""
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"dataset name {self.name!r} must be a plain file-name stem")
        if self.max_per_role is not None and self.max_per_role < 1:
            raise ValueError("--max-per-role must be at least 1")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError("--val-ratio must be in [0, 1)")
        if self.val_by not in VAL_BY:
            raise ValueError(f"--val-by must be one of {VAL_BY}")
        if self.resample_epochs < 1:
            raise ValueError("--resample-epochs must be at least 1")
        if self.mask_history and self.context_only:
            raise ValueError("--mask-history has no effect with --context-only (one user turn a sample)")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.role_key and self.role_from_filename:
            raise ValueError("give either --role-key or --role-from-filename, not both")
        if self.dedup not in DEDUP:
            raise ValueError(f"--dedup must be one of {DEDUP}")
        if not 0.0 < self.near_threshold <= 1.0:
            raise ValueError("--near-threshold must be in (0, 1]")

    @property
    def roles_needed(self) -> bool:
        """Whether sampling needs a role for every conversation."""
        return self.max_per_role is not None or (self.val_by == "role" and self.val_ratio > 0)

    @property
    def two_pass(self) -> bool:
        """Whether only the picks are converted (see the module docstring)."""
        return self.max_per_role is not None and not self.validate_all and self.dedup == "exact"

    @property
    def keep(self) -> int | None:
        """Records per role and epoch that pass 1 keeps (None: all of them)."""
        if not self.two_pass:
            return None
        return self.max_per_role + max(SPARE_PER_ROLE, self.max_per_role // 2)

    def layout(self) -> LayoutSettings:
        return LayoutSettings(self.role_key, self.role_from_filename, self.roles_needed, self.policy)

    def sampling(self) -> SamplingOptions:
        return SamplingOptions(
            self.max_per_role, self.seed, self.val_ratio, self.resample_epochs, self.val_by
        )


@dataclass
class ConvertResult:
    """What a conversion did: counts, the picks and their numbers, the files written."""

    counts: Accounting
    rejects: RejectTally
    skipped: list[Skipped] = field(default_factory=list)
    role_names: list[str] = field(default_factory=list)
    role_counts: np.ndarray | None = None  # well-formed records per role in the inputs
    role_spellings: set[str] = field(default_factory=set)
    plan: SamplingPlan | None = None
    turns: np.ndarray | None = None  # of each converted conversation
    chars: np.ndarray | None = None
    notes: tuple[int, int, int] = (0, 0, 0)  # trimmed user turns, moved greetings, merged turns
    duplicates: int = 0
    near_duplicates: int = 0
    chunks: int = 0  # pieces pass 1 (or the full pass) read the inputs in
    two_pass: bool = False
    train_samples: int = 0
    val_samples: int = 0
    val_overlaps: int = 0  # context-only validation samples equal to a training sample, dropped
    written: dict[str, Path] = field(default_factory=dict)
    dataset_info: Path | None = None
    removed: list[str] = field(default_factory=list)  # stale outputs retired by this run
    stale_work: list[Path] = field(default_factory=list)  # work folders of killed runs removed
    warnings: list[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return self.dataset_info is not None


def split_columns(features: int) -> list[str]:
    """The columns of a split whose conversations use these optional columns (a bit set)."""
    optional = [column for bit, column in FEATURE_COLUMNS.items() if features & bit]
    return ["messages", "system", *optional, "role_id"]


def dataset_entry(file_name: str, opts: ConvertOptions, split: str, columns: list[str]) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of one output file.

    ``columns`` are the file's (see :func:`split_columns`); the tool tags are added when it has
    tool use. The ``lfkit`` key (ignored by LlamaFactory's loader, which reads only the keys
    it knows) records how the file was built, including the recipe keys that go with it:
    LlamaFactory reads ``mask_history`` and ``num_train_epochs`` from the recipe, never from
    this file.
    """
    if opts.context_only:
        mask_note = "not applicable: each sample has exactly one user turn"
    elif opts.mask_history:
        mask_note = "requested: set mask_history: true in the recipe to train on the last assistant turn only"
    else:
        mask_note = "applies: mask_history: true in the recipe would train on the last assistant turn only"
    recipe_keys: dict[str, Any] = {}
    if opts.mask_history:
        recipe_keys["mask_history"] = True
    if opts.resample_epochs > 1 and split == "train":
        recipe_keys["num_train_epochs"] = 1
    tags = dict(SHAREGPT_TAGS)
    if "tools" in columns:
        tags.update(TOOL_TAGS)
    meta: dict[str, Any] = {
        "kind": "dialogue",
        "split": split,
        "prompt": "context_only" if opts.context_only else "history",
        "role_source": "filename" if opts.role_from_filename else (opts.role_key or "default"),
        "max_per_role": opts.max_per_role,
        "seed": opts.seed,
        "val_ratio": opts.val_ratio,
        "resample_epochs": opts.resample_epochs,
        "mask_history": mask_note,
        "recipe_keys": recipe_keys,
    }
    if opts.val_by != "conversation":
        meta["val_by"] = opts.val_by
    if opts.dedup != "exact":
        meta["dedup"] = f"{opts.dedup} (threshold {opts.near_threshold})"
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {c: c for c in columns if c != "role_id"},
        "tags": tags,
        "lfkit": meta,
    }


class RepeatedInputError(ValueError):
    """The same file given twice (or a file and a directory holding it): each record has one place."""


def distinct_inputs(inputs: InputSet) -> InputSet:
    """``inputs`` if no file is in it twice, else :class:`RepeatedInputError` naming one."""
    seen: set[str] = set()
    for path in inputs.files:
        real = os.path.realpath(path)
        if real in seen:
            raise RepeatedInputError(f"{path} is given twice (a file and a directory holding it?)")
        seen.add(real)
    return inputs


class RoleRequiredError(ValueError):
    """``--max-per-role`` on conversations that have no role: it would cap the whole dataset instead."""


def convert_dialogue(
    files: Sequence[str | Path] | InputSet,
    opts: ConvertOptions,
    on_progress: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Run the whole conversion (see the module docstring) and return its :class:`ConvertResult`.

    Raises :class:`RoleRequiredError` (nothing published) when sampling needs roles and some
    conversation has none.
    """
    opts.validate()
    inputs = distinct_inputs(files if isinstance(files, InputSet) else expand_inputs(files))
    return run_engine(
        inputs,
        opts,
        read=lambda work_dir: read_pool(inputs, opts, work_dir, on_progress),
        write=lambda result, candidates, outputs, out_dir: _write_splits(
            result, candidates, opts, outputs, out_dir
        ),
    )


def run_engine(
    inputs: InputSet,
    opts: ConvertOptions,
    read: Callable[[str], tuple[Candidates, int]],
    write: Callable[[ConvertResult, Candidates, AtomicGroup, Path], dict[str, dict[str, Any]]],
) -> ConvertResult:
    """What every engine's run shares: the work folder, the staged outputs, the draw, the rejects,
    the registry, and publishing it all together (see the module docstring).

    ``read(work_dir)`` gives the draw's records and the number of chunks read; ``write`` writes
    the splits into the staged outputs and returns their ``dataset_info.json`` entries.
    """
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read_dataset_info(out_dir)  # a broken dataset_info.json fails the run before any output is written
    stale_files: list[Path] = []
    with (
        work_folder(out_dir, opts.name) as work,
        AtomicGroup(tmp_dir=work.path) as outputs,
        RejectsWriter(out_dir, opts.name, outputs) as rejects,
    ):
        candidates, chunks = read(str(work.path))
        try:
            result = draw(candidates, opts, rejects)
            result.skipped, result.stale_work, result.chunks = inputs.skipped, work.removed_stale, chunks
            if result.counts.converted == 0 or (opts.strict and rejects.count):
                return result  # leaving the block publishes the rejects file alone
            entries = write(result, candidates, outputs, out_dir)
        finally:
            candidates.close()
        remove: list[str] = []
        if opts.val_ratio == 0:
            remove, stale_files = _stale_validation(out_dir, opts.name, result)
        stale_files += _other_format(out_dir, entries, result)
        outputs.move_to_end(rejects.path)  # publish order: train, val, rejects, dataset_info.json
        result.dataset_info = out_dir / DATASET_INFO
        outputs.open(result.dataset_info, "w").write(merged_info(out_dir, entries, remove))
    for path in stale_files:  # only now: the published dataset_info.json no longer names them
        remove_output(path)
    return result


def remove_output(path: Path) -> None:
    """Delete a retired output: a file, or a folder of Parquet shards (``--engine ray``)."""
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def read_pool(
    inputs: InputSet,
    opts: ConvertOptions,
    work_dir: str,
    on_progress: Callable[[int], None] | None = None,
    tokenizer: Any = None,
) -> tuple[Candidates, int]:
    """Read the inputs (pass 1, or the full pass; see the module docstring): the draw's records
    and the number of chunks they were read in."""
    files = [(str(path), is_json_array(path)) for path in inputs.files]
    file_ids = {path: i for i, (path, _) in enumerate(files)}
    total = sum(Path(path).stat().st_size for path, _ in files)
    workers = opts.workers if total >= PARALLEL_MIN_BYTES and tokenizer is None else 1
    # ~4 chunks per worker balances the load; one process reads each file whole. Chunking never
    # changes the output.
    chunk_bytes = (
        max(MIN_CHUNK_BYTES, min(MAX_CHUNK_BYTES, total // (4 * workers) + 1)) if workers > 1 else total
    )
    chunks = plan_chunks(inputs.files, max(chunk_bytes, 1))
    workers = max(1, min(workers, len(chunks)))
    settings = PassSettings(
        ReadbackSettings(opts.layout(), opts.context_only, work_dir), opts.workers, opts.roles_needed
    )
    if not opts.two_pass:
        jobs = [
            (chunk, ScanSettings(opts.layout(), opts.context_only, work_dir, opts.dedup == "near"))
            for chunk in chunks
        ]
        results = _run(scan_chunk, jobs, workers, on_progress, tokenizer)
        return Candidates(merge_chunks(PoolBuilder(files), chunks, file_ids, results), None, settings), len(
            chunks
        )
    from lfkit.data_tools.dialogue.index import IndexSettings, index_chunk  # msgspec: only for this pass

    whole = frozenset({""}) if opts.roles_needed else frozenset()  # role-less records: all checked
    index = IndexSettings(opts.layout(), work_dir, opts.seed, opts.resample_epochs, opts.keep, whole)
    builder = PoolBuilder(files, opts.keep, opts.seed, opts.resample_epochs, whole)
    jobs = [(chunk, file_ids[chunk.path], index) for chunk in chunks]
    pool = merge_chunks(builder, chunks, file_ids, _run(index_chunk, jobs, workers, on_progress))

    def refill(names: list[str]) -> Pool:
        again = IndexSettings(opts.layout(), work_dir, only=frozenset(names))
        jobs = [(chunk, file_ids[chunk.path], again) for chunk in chunks]
        builder = PoolBuilder(files, role_names=pool.role_names)
        return merge_chunks(builder, chunks, file_ids, _run(index_chunk, jobs, workers, None))

    return Candidates(pool, opts.keep, settings, refill), len(chunks)


def _run(
    fn: Callable[..., Any],
    jobs: list[tuple[Any, ...]],
    workers: int,
    on_progress: Callable[[int], None] | None,
    tokenizer: Any = None,
) -> Iterable[Any]:
    """``fn`` over the chunk jobs, in order; in-process (with a byte progress) or in workers."""
    if workers == 1:
        for job in jobs:
            yield fn(job, on_progress, tokenizer) if tokenizer is not None else fn(job, on_progress)
        return

    def done(job: tuple[Chunk, ...], _: Any) -> None:
        if on_progress is not None:
            on_progress(job[0].size)

    yield from ordered_map(fn, jobs, workers, on_result=done)


def draw(candidates: Candidates, opts: ConvertOptions, rejects: RejectTally) -> ConvertResult:
    """Check roles, drop near duplicates (``--dedup near``), draw, and write every reject in order."""
    pool = candidates.pool
    result = ConvertResult(
        Accounting(), rejects, role_counts=pool.role_counts, role_spellings=pool.role_spellings
    )
    result.two_pass = opts.two_pass
    _check_roles(candidates, opts)
    if opts.dedup == "near":
        result.near_duplicates = _drop_duplicates(candidates, opts)
    plan = plan_sampling(candidates, opts.sampling())
    result.plan = plan
    used = plan.used()
    state = candidates.state
    dropped = int(np.count_nonzero(state == DUPLICATE))
    result.duplicates = dropped - result.near_duplicates
    rejected = pool.malformed + int(np.count_nonzero(state == REJECTED)) + dropped
    counts = result.counts
    counts.read, counts.converted, counts.rejected = pool.read, len(used), rejected
    counts.not_sampled = pool.read - len(used) - rejected
    candidates.write_rejects(rejects)
    if rejects.count != rejected:
        raise RuntimeError(f"accounting error: {rejects.count} rejects written, {rejected} counted")
    counts.check()
    result.turns, result.chars = candidates.turns[used], candidates.chars[used]
    result.notes = candidates.note_counts(used)
    return result


def _check_roles(candidates: Candidates, opts: ConvertOptions) -> None:
    """Records without a usable role: convert them (they are rejects), and refuse role sampling
    when one of them is a valid conversation (see :class:`RoleRequiredError`)."""
    unknown = np.flatnonzero((candidates.role_ids == NO_ROLE) & (candidates.state == 0))
    if len(unknown):
        candidates.convert(unknown)
        if np.any(candidates.state[unknown] == VALID):
            raise RuntimeError("a record without a usable role converted")  # the rules always reject it
    blank = candidates.blank_role
    if not opts.roles_needed or blank is None:
        return
    roleless = np.flatnonzero(candidates.role_ids == blank)
    for start in range(0, len(roleless), ROLE_CHECK_BATCH):
        batch = roleless[start : start + ROLE_CHECK_BATCH]
        todo = batch[candidates.state[batch] == 0]
        if len(todo):
            candidates.convert(todo)
        if np.any(candidates.state[batch] == VALID):
            pool = candidates.pool
            option = "--max-per-role" if opts.max_per_role is not None else "--val-by role"
            without, total = int(pool.role_counts[blank]), pool.read - pool.malformed
            raise RoleRequiredError(
                f"{option} needs a role for every conversation, but {without:,} of {total:,} have none "
                "(no --role-key, no PIPPA bot_id, not --role-from-filename): it would treat the whole "
                "dataset as one role. Give --role-key FIELD, or --role-from-filename for one file per "
                "character; nothing was written"
            )


def _drop_duplicates(candidates: Candidates, opts: ConvertOptions) -> int:
    """``--dedup near``: exact, then near duplicates within a role, over every converted record
    before the draw (the first in input order is kept); returns the number of near ones."""
    valid = np.flatnonzero(candidates.state == VALID)
    exact = candidates.dedup.check(valid, candidates.keys[valid])
    dropped = {dup.index for dup in exact}
    kept = np.array([i for i in valid.tolist() if i not in dropped], dtype=np.int64)
    converted = np.flatnonzero(candidates.pool.outcomes["ok"])  # the signatures' order
    rows = np.searchsorted(converted, kept)
    signatures = read_signatures(candidates.pool.signature_files, str(Path(candidates.spools[0]).parent))
    near = [
        Duplicate(int(kept[i]), int(kept[j]), similarity)
        for i, j, similarity in near_duplicates(
            candidates.role_ids[kept], signatures[rows], opts.near_threshold
        )
    ]
    candidates.state[valid] = KEPT
    for dup in sorted(exact + near, key=lambda d: d.index):
        candidates.drop(dup)
    return len(near)


def _write_splits(
    result: ConvertResult, candidates: Candidates, opts: ConvertOptions, outputs: AtomicGroup, out_dir: Path
) -> dict[str, dict[str, Any]]:
    """Write the training (and validation) file; returns their dataset_info.json entries."""
    plan = result.plan
    splits = [(opts.name, plan.train, "train")]
    if opts.val_ratio > 0:
        splits.append((f"{opts.name}_val", plan.val, "validation"))
    seen: set[int] | None = set() if opts.context_only and opts.val_ratio > 0 else None
    read = candidates.row_reader(plan.used())
    entries = {}
    for name, picks, split in splits:
        used = int(np.bitwise_or.reduce(candidates.features[picks])) if len(picks) else 0
        columns = split_columns(used)
        path = out_dir / dataset_file(name, opts.fmt)
        writer = RowWriter(outputs.open(path), opts.fmt, columns, fill=columns[2:-1])
        if split == "train":
            result.train_samples, _ = copy_rows(read, candidates.samples, picks, writer, collect=seen)
        else:
            result.val_samples, result.val_overlaps = copy_rows(
                read, candidates.samples, picks, writer, skip=seen
            )
        writer.close()
        result.written[name] = path
        entries[name] = dataset_entry(path.name, opts, split, columns)
    return entries


def copy_rows(
    read: Callable[[int], bytes],
    samples: np.ndarray,
    picks: np.ndarray,
    writer: RowWriter,
    skip: set[int] | None = None,
    collect: set[int] | None = None,
) -> tuple[int, int]:
    """Write the picked records' rows; returns (samples written, samples skipped).

    ``collect`` gathers the key of every row written, ``skip`` leaves out rows whose key it
    holds (context-only samples repeated across splits, see :func:`_filter_rows`).
    """
    buf: list[bytes] = []
    size = total = skipped = 0
    for i in picks.tolist():
        data = read(i)
        if skip is not None or collect is not None:
            data, dropped = _filter_rows(data, skip, collect)
            skipped += dropped
            total += int(samples[i]) - dropped
        else:
            total += int(samples[i])
        buf.append(data)
        size += len(data)
        if size >= COPY_CHUNK:
            writer.write(b"".join(buf))
            buf.clear()
            size = 0
    writer.write(b"".join(buf))
    return total, skipped


def _filter_rows(data: bytes, skip: set[int] | None, collect: set[int] | None) -> tuple[bytes, int]:
    """Rows of one conversation without those in ``skip``: a row is its bytes without ``role_id``
    (rendering is canonical, so equal samples have equal bytes), hashed with 128 bits."""
    import xxhash

    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        key = xxhash.xxh3_128_intdigest(line[: line.rfind(b',"role_id":')])
        if skip is not None and key in skip:
            dropped += 1
            continue
        if collect is not None:
            collect.add(key)
        kept.append(line)
    return b"".join(kept), dropped


def _other_format(out_dir: Path, entries: dict[str, dict[str, Any]], result: ConvertResult) -> list[Path]:
    """Files of the same names that an earlier lfkit run wrote in the other format: retire them."""
    info = read_dataset_info(out_dir)
    stale = []
    for name, entry in entries.items():
        old = info.get(name)
        meta = old.get("lfkit") if isinstance(old, dict) else None
        if not isinstance(meta, dict) or old.get("file_name") in (None, entry["file_name"]):
            continue
        old_file = out_dir / str(old["file_name"])
        if old_file.parent == out_dir and old_file.exists():
            stale.append(old_file)
            result.removed.append(f"removed {old_file}: an earlier lfkit run wrote {name} in another format")
    return stale


def _stale_validation(out_dir: Path, name: str, result: ConvertResult) -> tuple[list[str], list[Path]]:
    """A run without a validation split retires the ``NAME_val`` split an earlier lfkit run wrote.

    That split was drawn from the earlier sampling, so it overlaps the new training set. Only an
    entry carrying lfkit's metadata (``lfkit.split == "validation"``, ``file_name``
    ``NAME_val.jsonl`` or ``.parquet``) is removed, with its file; anything else of that name is
    left alone with a warning. Returns the names to drop from ``dataset_info.json`` and the
    files to delete once it is published.
    """
    val_name = f"{name}_val"
    entry = read_dataset_info(out_dir).get(val_name)
    if entry is None:
        for fmt in OutputFormat:
            val_file = out_dir / dataset_file(val_name, fmt)
            if val_file.exists():
                result.warnings.append(
                    f"{val_file} is left from an earlier run but not registered in dataset_info.json; "
                    "left alone (delete it if it is a stale validation split)"
                )
        return [], []
    for file_name in [*(dataset_file(val_name, fmt) for fmt in OutputFormat), val_name]:  # a folder: Ray
        val_file = out_dir / file_name
        if is_lfkit_split(entry, val_file.name, "validation"):
            result.removed.append(
                f"removed the earlier validation split {val_name} ({val_file}) and its dataset_info.json "
                "entry: this run writes no validation split and it would overlap the new training set"
            )
            return [val_name], [val_file]
    result.warnings.append(
        f"dataset_info.json has an entry {val_name} that lfkit did not write; left alone, but check "
        f"that it does not overlap the new training set {name}"
    )
    return [], []
