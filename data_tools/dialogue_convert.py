"""``lfkit data convert`` for dialogue: inputs -> a registered LlamaFactory sharegpt dataset.

Pipeline: one streaming pass (:func:`lfkit.data_tools.dialogue_scan.scan`) renders every good
record into a spool file and rejects the rest; :func:`lfkit.data_tools.sampling.plan_sampling`
picks conversation indices (per-role draw, role-stratified validation split, resampled
epochs); the picked byte ranges are copied from the spool into ``DIR/NAME.jsonl`` (and
``DIR/NAME_val.jsonl``), and both are registered in ``DIR/dataset_info.json``.

Atomicity: every output (``NAME.jsonl``, ``NAME_val.jsonl``, the rejects file, the merged
``dataset_info.json``) is written to a temporary file first
(:class:`lfkit.atomic.AtomicGroup`) and all are renamed into place together, in that
order with ``dataset_info.json`` last, only after everything succeeded. A run that fails or is
interrupted before that (bad option, corrupt ``.gz`` input, full disk ...) leaves the previous
outputs as they were; records read before such a failure are not published either. With
``strict`` and at least one reject, only the rejects file is published.

A run without a validation split retires the ``NAME_val`` split an earlier lfkit run wrote into
the same directory (it would overlap the new training set); see :func:`_stale_validation`.

``mask_history`` (what LlamaFactory 0.9.5 does, read in ``data/processor/supervised.py`` and
``hparams/data_args.py``): it is a recipe key (DataArguments), not a dataset attribute;
``DatasetAttr.join`` reads only the keys it knows from ``dataset_info.json`` and ignores the
rest. With ``mask_history: true`` the supervised processor encodes the turns in reverse order,
so the last turns win when ``cutoff_len`` truncates, and gives labels only to the last
assistant turn; it also drops earlier reasoning for templates that do not preserve thinking.
It is SFT-only and cannot be combined with ``train_on_prompt``. So the converter records it
in the entry's ``lfkit`` key (``mask_history`` note, ``recipe_keys``) for the recipe to copy;
in ``--context-only`` datasets every sample has one assistant turn and it changes nothing.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lfkit.data_tools.dialogue import RoleSource
from lfkit.data_tools.dialogue_scan import ConversationIndex, scan
from lfkit.data_tools.registry import (
    DATASET_INFO,
    SHAREGPT_TAGS,
    is_lfkit_split,
    merged_info,
    read_dataset_info,
)
from lfkit.data_tools.rejects import RejectsWriter
from lfkit.data_tools.sampling import SamplingPlan, group_by_role, plan_sampling
from lfkit.data_tools.summary import Accounting

from lfkit.atomic import AtomicGroup

COPY_CHUNK = 1 << 20


@dataclass
class ConvertOptions:
    """Everything ``lfkit data convert --kind dialogue`` can be told."""

    out_dir: Path
    name: str
    role_key: str | None = None
    role_from_filename: bool = False
    max_per_role: int | None = None
    seed: int = 0
    val_ratio: float = 0.0
    resample_epochs: int = 1
    context_only: bool = False
    mask_history: bool = False
    strict: bool = False
    workers: int = 1

    def validate(self) -> None:
        """Raise ``ValueError`` for option combinations that cannot work."""
        if not self.name or "/" in self.name or self.name.startswith("."):
            raise ValueError(f"dataset name {self.name!r} must be a plain file-name stem")
        if self.max_per_role is not None and self.max_per_role < 1:
            raise ValueError("--max-per-role must be at least 1")
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError("--val-ratio must be in [0, 1)")
        if self.resample_epochs < 1:
            raise ValueError("--resample-epochs must be at least 1")
        if self.mask_history and self.context_only:
            raise ValueError("--mask-history has no effect with --context-only (one assistant turn a sample)")
        if self.workers < 1:
            raise ValueError("--workers must be at least 1")
        if self.role_key and self.role_from_filename:
            raise ValueError("give either --role-key or --role-from-filename, not both")


@dataclass
class ConvertResult:
    """What a conversion did: counts, index statistics, the chosen samples and the files written."""

    counts: Accounting
    index: ConversationIndex
    rejects: RejectsWriter
    plan: SamplingPlan | None = None
    train_samples: int = 0
    val_samples: int = 0
    written: dict[str, Path] = field(default_factory=dict)
    dataset_info: Path | None = None
    removed: list[str] = field(default_factory=list)  # stale outputs retired by this run
    warnings: list[str] = field(default_factory=list)

    @property
    def published(self) -> bool:
        return self.dataset_info is not None


def dataset_entry(file_name: str, opts: ConvertOptions, split: str) -> dict[str, Any]:
    """The ``dataset_info.json`` entry of one output file.

    The ``lfkit`` key (ignored by LlamaFactory's loader, which reads only the keys it knows)
    records how the file was built, including the recipe keys that go with it: LlamaFactory
    reads ``mask_history`` and ``num_train_epochs`` from the recipe, never from this file.
    """
    if opts.context_only:
        mask_note = "not applicable: each sample has exactly one assistant turn"
    elif opts.mask_history:
        mask_note = "requested: set mask_history: true in the recipe to train on the last assistant turn only"
    else:
        mask_note = "applies: mask_history: true in the recipe would train on the last assistant turn only"
    recipe_keys: dict[str, Any] = {}
    if opts.mask_history:
        recipe_keys["mask_history"] = True
    if opts.resample_epochs > 1 and split == "train":
        recipe_keys["num_train_epochs"] = 1
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {"messages": "messages", "system": "system"},
        "tags": dict(SHAREGPT_TAGS),
        "lfkit": {
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
        },
    }


def _copy_ranges(spools: list[IO[bytes]], index: ConversationIndex, picks: list[int], out: IO[bytes]) -> int:
    """Copy the spooled bytes of the picked conversations to ``out``; returns the samples written."""
    fds = [spool.fileno() for spool in spools]
    spool_ids, offsets, lengths, samples = index.spool_ids, index.offsets, index.lengths, index.samples
    buf: list[bytes] = []
    size = 0
    total = 0
    for i in picks:
        chunk = os.pread(fds[spool_ids[i]], lengths[i], offsets[i])
        buf.append(chunk)
        size += len(chunk)
        total += samples[i]
        if size >= COPY_CHUNK:
            out.write(b"".join(buf))
            buf.clear()
            size = 0
    out.write(b"".join(buf))
    return total


class RoleRequiredError(ValueError):
    """``--max-per-role`` on conversations that have no role: it would cap the whole dataset instead."""


def convert_dialogue(
    files: Sequence[str | Path],
    opts: ConvertOptions,
    on_progress: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Run the whole conversion (see the module docstring) and return its :class:`ConvertResult`.

    Raises :class:`RoleRequiredError` (nothing published) when ``opts.max_per_role`` is set
    and some conversation has no role.
    """
    opts.validate()
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read_dataset_info(out_dir)  # a broken dataset_info.json fails the run before any output is written
    source = RoleSource(opts.role_key, opts.role_from_filename)
    train_path = out_dir / f"{opts.name}.jsonl"
    val_path = out_dir / f"{opts.name}_val.jsonl"
    stale_files: list[Path] = []
    with (
        AtomicGroup() as outputs,
        RejectsWriter(out_dir, opts.name, outputs) as rejects,
        tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{opts.name}.work.") as work_dir,
    ):
        index, counts = scan(
            files, source, opts.context_only, rejects, work_dir, on_progress=on_progress, workers=opts.workers
        )
        counts.check()
        result = ConvertResult(counts, index, rejects)
        if counts.converted == 0 or (opts.strict and rejects.count):
            return result  # leaving the block publishes the rejects file alone
        _check_roles(index, opts)
        groups = group_by_role(index.role_ids, len(index.role_names))
        plan = plan_sampling(
            groups, index.role_names, opts.max_per_role, opts.seed, opts.val_ratio, opts.resample_epochs
        )
        result.plan = plan
        with contextlib.ExitStack() as stack:
            spools = [stack.enter_context(open(path, "rb", buffering=0)) for path in index.spools]
            result.train_samples = _copy_ranges(spools, index, plan.train, outputs.open(train_path))
            result.written[opts.name] = train_path
            if opts.val_ratio > 0:
                result.val_samples = _copy_ranges(spools, index, plan.val, outputs.open(val_path))
                result.written[f"{opts.name}_val"] = val_path
        entries = {opts.name: dataset_entry(train_path.name, opts, "train")}
        remove: list[str] = []
        if opts.val_ratio > 0:
            entries[f"{opts.name}_val"] = dataset_entry(val_path.name, opts, "validation")
        else:
            remove, stale_files = _stale_validation(out_dir, opts.name, result)
        outputs.move_to_end(rejects.path)  # publish order: train, val, rejects, dataset_info.json
        result.dataset_info = out_dir / DATASET_INFO
        outputs.open(result.dataset_info, "w").write(merged_info(out_dir, entries, remove))
    for path in stale_files:  # only now: the published dataset_info.json no longer names them
        path.unlink(missing_ok=True)
    return result


def _check_roles(index: ConversationIndex, opts: ConvertOptions) -> None:
    """Refuse ``--max-per-role`` when some conversations have no role (see :class:`RoleRequiredError`)."""
    rid = index.role_lookup.get("")
    if opts.max_per_role is None or rid is None:
        return
    without = index.per_role_counts()[rid]
    raise RoleRequiredError(
        f"--max-per-role needs a role for every conversation, but {without:,} of {len(index):,} have none "
        "(no --role-key, no PIPPA bot_id, not --role-from-filename): it would cap the whole dataset to "
        f"{opts.max_per_role}. Give --role-key FIELD, or --role-from-filename for one file per character; "
        "nothing was written"
    )


def _stale_validation(out_dir: Path, name: str, result: ConvertResult) -> tuple[list[str], list[Path]]:
    """A run without a validation split retires the ``NAME_val`` split an earlier lfkit run wrote.

    That split was drawn from the earlier sampling, so it overlaps the new training set. Only an
    entry carrying lfkit's metadata (``lfkit.split == "validation"``, ``file_name`` NAME_val.jsonl)
    is removed, with its file; anything else of that name is left alone with a warning. Returns
    the names to drop from ``dataset_info.json`` and the files to delete once it is published.
    """
    val_name, val_file = f"{name}_val", out_dir / f"{name}_val.jsonl"
    entry = read_dataset_info(out_dir).get(val_name)
    if entry is None:
        if val_file.exists():
            result.warnings.append(
                f"{val_file} is left from an earlier run but not registered in dataset_info.json; "
                "left alone (delete it if it is a stale validation split)"
            )
        return [], []
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
