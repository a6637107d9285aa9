"""``lfkit data convert dialogue``: inputs -> a registered LlamaFactory sharegpt dataset.

The engine, in four steps, apart from the layouts (which only turn one raw record into a
:class:`~lfkit.data_tools.dialogue.model.Conversation`, see
:mod:`lfkit.data_tools.dialogue.transform`):

1. **scan** (:func:`lfkit.data_tools.dialogue.scan.scan`): one streaming pass renders every
   good record into a spool file in the run's work folder and rejects the rest;
2. **deduplicate** (:mod:`lfkit.data_tools.dialogue.dedup`): exact duplicates (whitespace
   aside), and with ``dedup="near"`` near duplicates within a role, are dropped to the rejects
   file with the line they repeat, so ``converted + rejected = read`` still holds;
3. **sample** (:func:`lfkit.data_tools.dialogue.sampling.plan_sampling`): per-role draw,
   validation split (per role, or whole roles), resampled epochs; deterministic for a seed;
4. **write**: the picked byte ranges are copied from the spools into ``DIR/NAME.jsonl`` (or
   written as ``NAME.parquet``) and ``DIR/NAME_val.*``, and registered in
   ``DIR/dataset_info.json`` with the columns and tags they use (tools, media).

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
from lfkit.data_tools.core.inputs import InputSet, Skipped, expand_inputs
from lfkit.data_tools.core.output import OutputFormat, RowWriter, dataset_file
from lfkit.data_tools.core.registry import (
    DATASET_INFO,
    SHAREGPT_TAGS,
    TOOL_TAGS,
    is_lfkit_split,
    merged_info,
    read_dataset_info,
)
from lfkit.data_tools.core.rejects import RejectsWriter, preview
from lfkit.data_tools.core.summary import Accounting
from lfkit.data_tools.core.workdir import work_folder
from lfkit.data_tools.dialogue.build import Policy
from lfkit.data_tools.dialogue.dedup import (
    DEFAULT_NEAR_THRESHOLD,
    Duplicate,
    exact_duplicates,
    near_duplicates,
)
from lfkit.data_tools.dialogue.layouts.common import LayoutSettings
from lfkit.data_tools.dialogue.model import FEATURE_COLUMNS
from lfkit.data_tools.dialogue.render import duplicate_key
from lfkit.data_tools.dialogue.sampling import SamplingPlan, group_by_role, plan_sampling
from lfkit.data_tools.dialogue.scan import ConversationIndex, ScanSettings, scan

from lfkit.atomic import AtomicGroup

COPY_CHUNK = 1 << 20
VAL_BY = ("conversation", "role")
DEDUP = ("exact", "near")


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

    def scan_settings(self, work_dir: str | Path) -> ScanSettings:
        layout = LayoutSettings(self.role_key, self.role_from_filename, self.roles_needed, self.policy)
        return ScanSettings(layout, self.context_only, str(work_dir), self.dedup == "near")


@dataclass
class ConvertResult:
    """What a conversion did: counts, index statistics, the chosen samples and the files written."""

    counts: Accounting
    index: ConversationIndex
    rejects: RejectsWriter
    skipped: list[Skipped] = field(default_factory=list)
    keep: np.ndarray | None = None  # conversations kept after deduplication (a mask)
    duplicates: int = 0
    near_duplicates: int = 0
    plan: SamplingPlan | None = None
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


class Spools:
    """Read access to the rendered rows of the index's conversations (positional reads)."""

    def __init__(self, index: ConversationIndex) -> None:
        self.index = index
        self._fds = [os.open(path, os.O_RDONLY) for path in index.spools]

    def rows(self, i: int) -> bytes:
        """The rendered rows of conversation ``i``."""
        index = self.index
        return os.pread(self._fds[index.spool_ids[i]], index.lengths[i], index.offsets[i])

    def copy(
        self,
        picks: Iterable[int],
        writer: RowWriter,
        skip: set[bytes] | None = None,
        collect: set[bytes] | None = None,
    ) -> tuple[int, int]:
        """Write the picked conversations' rows; returns (samples written, samples skipped).

        ``collect`` gathers the duplicate key of every row written, ``skip`` leaves out rows
        whose key it holds (context-only samples repeated across splits).
        """
        samples = self.index.samples
        buf: list[bytes] = []
        size = total = skipped = 0
        for i in picks:
            data = self.rows(i)
            if skip is not None or collect is not None:
                data, dropped = _filter_rows(data, skip, collect)
                skipped += dropped
                total += samples[i] - dropped
            else:
                total += samples[i]
            buf.append(data)
            size += len(data)
            if size >= COPY_CHUNK:
                writer.write(b"".join(buf))
                buf.clear()
                size = 0
        writer.write(b"".join(buf))
        return total, skipped

    def close(self) -> None:
        for fd in self._fds:
            os.close(fd)


def _filter_rows(data: bytes, skip: set[bytes] | None, collect: set[bytes] | None) -> tuple[bytes, int]:
    kept, dropped = [], 0
    for line in data.splitlines(keepends=True):
        key = duplicate_key(line[: line.rfind(b',"role_id":')] + b"}")
        if skip is not None and key in skip:
            dropped += 1
            continue
        if collect is not None:
            collect.add(key)
        kept.append(line)
    return b"".join(kept), dropped


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
    inputs = files if isinstance(files, InputSet) else expand_inputs(files)
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read_dataset_info(out_dir)  # a broken dataset_info.json fails the run before any output is written
    stale_files: list[Path] = []
    with (
        work_folder(out_dir, opts.name) as work,
        AtomicGroup(tmp_dir=work.path) as outputs,
        RejectsWriter(out_dir, opts.name, outputs) as rejects,
    ):
        index, counts = scan(
            inputs.files,
            opts.scan_settings(work.path),
            rejects,
            on_progress=on_progress,
            workers=opts.workers,
        )
        result = ConvertResult(counts, index, rejects, inputs.skipped, stale_work=work.removed_stale)
        spools = Spools(index)
        try:
            keep = drop_duplicates(result, spools, opts, work.path)
            counts.check()
            if counts.converted == 0 or (opts.strict and rejects.count):
                return result  # leaving the block publishes the rejects file alone
            _check_roles(index, keep, opts)
            groups = group_by_role(index.role_ids, len(index.role_names), keep)
            plan = plan_sampling(
                groups, index.role_names, opts.max_per_role, opts.seed, opts.val_ratio,
                opts.resample_epochs, opts.val_by,
            )  # fmt: skip
            result.plan = plan
            entries = _write_splits(result, spools, plan, opts, outputs, out_dir)
        finally:
            spools.close()
        remove: list[str] = []
        if opts.val_ratio == 0:
            remove, stale_files = _stale_validation(out_dir, opts.name, result)
        stale_files += _other_format(out_dir, entries, result)
        outputs.move_to_end(rejects.path)  # publish order: train, val, rejects, dataset_info.json
        result.dataset_info = out_dir / DATASET_INFO
        outputs.open(result.dataset_info, "w").write(merged_info(out_dir, entries, remove))
    for path in stale_files:  # only now: the published dataset_info.json no longer names them
        path.unlink(missing_ok=True)
    return result


def drop_duplicates(
    result: ConvertResult, spools: Spools, opts: ConvertOptions, work_dir: Path
) -> np.ndarray:
    """Find duplicates, write them to the rejects file, fix the counts; returns the kept mask."""
    index = result.index
    keep = np.ones(len(index), dtype=bool)
    found = exact_duplicates(index, spools.rows)
    for dup in found:
        keep[dup.index] = False
    result.duplicates = len(found)
    near: list[Duplicate] = []
    if opts.dedup == "near":
        near = near_duplicates(index, keep, opts.near_threshold, str(work_dir))
        for dup in near:
            keep[dup.index] = False
        result.near_duplicates = len(near)
    for dup in sorted(found + near, key=lambda d: d.index):
        result.rejects.add_entry(duplicate_entry(index, spools, dup))
    result.counts.rejected += len(found) + len(near)
    result.counts.converted -= len(found) + len(near)
    result.keep = keep
    return keep


def duplicate_entry(index: ConversationIndex, spools: Spools, dup: Duplicate) -> dict[str, Any]:
    """The rejects-file entry of a dropped duplicate (see :mod:`lfkit.data_tools.core.rejects`)."""
    path, line, element = index.source(dup.index)
    of_path, of_line, of_element = index.source(dup.of)
    where = f"{of_path}[{of_line}]" if of_element else f"{of_path}:{of_line}"
    if dup.similarity == 1.0:
        reason, message = "duplicate", f"the same conversation as {where} (whitespace aside)"
    else:
        reason = "near_duplicate"
        message = f"nearly the same conversation as {where} (estimated Jaccard similarity {dup.similarity})"
    entry: dict[str, Any] = {"file": path, "line": line, "field": None, "reason": reason, "message": message}
    if element:
        entry["element"] = True
    entry["duplicate_of"] = {"file": of_path, "line": of_line}
    entry["record"] = preview(spools.rows(dup.index).rstrip(b"\n"))
    return entry


def _write_splits(
    result: ConvertResult,
    spools: Spools,
    plan: SamplingPlan,
    opts: ConvertOptions,
    outputs: AtomicGroup,
    out_dir: Path,
) -> dict[str, dict[str, Any]]:
    """Write the training (and validation) file; returns their dataset_info.json entries."""
    features = np.frombuffer(result.index.features, dtype=np.uint8)
    splits = [(opts.name, plan.train, "train")]
    if opts.val_ratio > 0:
        splits.append((f"{opts.name}_val", plan.val, "validation"))
    seen: set[bytes] | None = set() if opts.context_only and opts.val_ratio > 0 else None
    entries = {}
    for name, picks, split in splits:
        picked = np.frombuffer(picks, dtype=np.uint32)
        used = int(np.bitwise_or.reduce(features[picked])) if len(picked) else 0
        columns = split_columns(used)
        path = out_dir / dataset_file(name, opts.fmt)
        writer = RowWriter(outputs.open(path), opts.fmt, columns, fill=columns[2:-1])
        if split == "train":
            result.train_samples, _ = spools.copy(picks, writer, collect=seen)
        else:
            result.val_samples, result.val_overlaps = spools.copy(picks, writer, skip=seen)
        writer.close()
        result.written[name] = path
        entries[name] = dataset_entry(path.name, opts, split, columns)
    return entries


def _check_roles(index: ConversationIndex, keep: np.ndarray, opts: ConvertOptions) -> None:
    """Refuse role sampling when some conversations have no role (see :class:`RoleRequiredError`)."""
    rid = index.role_lookup.get("")
    if not opts.roles_needed or rid is None:
        return
    without = int(np.count_nonzero((np.frombuffer(index.role_ids, dtype=np.uint32) == rid) & keep))
    if not without:
        return
    option = "--max-per-role" if opts.max_per_role is not None else "--val-by role"
    raise RoleRequiredError(
        f"{option} needs a role for every conversation, but {without:,} of {int(keep.sum()):,} have none "
        "(no --role-key, no PIPPA bot_id, not --role-from-filename): it would treat the whole dataset "
        "as one role. Give --role-key FIELD, or --role-from-filename for one file per character; "
        "nothing was written"
    )


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
    for fmt in OutputFormat:
        val_file = out_dir / dataset_file(val_name, fmt)
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
