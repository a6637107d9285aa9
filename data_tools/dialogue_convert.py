"""``lfkit data convert`` for dialogue: inputs -> a registered LlamaFactory sharegpt dataset.

Pipeline: one streaming pass (:func:`lfkit.data_tools.dialogue_scan.scan`) renders every good
record into a spool file and rejects the rest; :func:`lfkit.data_tools.sampling.plan_sampling`
picks conversation indices (per-role draw, role-stratified validation split, resampled
epochs); the picked byte ranges are copied from the spool into ``DIR/NAME.jsonl`` (and
``DIR/NAME_val.jsonl``), and both are registered in ``DIR/dataset_info.json``.

Atomicity: the dataset files and the rejects file are written to temporary files and renamed
into place only after everything succeeded, then ``dataset_info.json`` is merged (itself
atomically). A run that fails or is interrupted before that leaves the previous outputs as
they were. With ``strict`` and at least one reject, only the rejects file is published.

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

from lfkit.data_tools.atomic import atomic_write
from lfkit.data_tools.dialogue import RoleSource
from lfkit.data_tools.dialogue_scan import ConversationIndex, scan
from lfkit.data_tools.registry import SHAREGPT_TAGS, read_dataset_info, register_datasets
from lfkit.data_tools.rejects import RejectsWriter
from lfkit.data_tools.sampling import SamplingPlan, group_by_role, plan_sampling
from lfkit.data_tools.summary import Accounting

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


def convert_dialogue(
    files: Sequence[str | Path],
    opts: ConvertOptions,
    on_progress: Callable[[int], None] | None = None,
) -> ConvertResult:
    """Run the whole conversion (see the module docstring) and return its :class:`ConvertResult`."""
    opts.validate()
    out_dir = Path(opts.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read_dataset_info(out_dir)  # a broken dataset_info.json fails the run before any output is written
    source = RoleSource(opts.role_key, opts.role_from_filename)
    train_path = out_dir / f"{opts.name}.jsonl"
    val_path = out_dir / f"{opts.name}_val.jsonl"
    with (
        RejectsWriter(out_dir, opts.name) as rejects,
        tempfile.TemporaryDirectory(dir=out_dir, prefix=f".{opts.name}.work.") as work_dir,
    ):
        index, counts = scan(
            files, source, opts.context_only, rejects, work_dir, on_progress=on_progress, workers=opts.workers
        )
        counts.check()
        result = ConvertResult(counts, index, rejects)
        if counts.converted == 0 or (opts.strict and rejects.count):
            return result
        groups = group_by_role(index.role_ids, len(index.role_names))
        plan = plan_sampling(
            groups, index.role_names, opts.max_per_role, opts.seed, opts.val_ratio, opts.resample_epochs
        )
        result.plan = plan
        with contextlib.ExitStack() as stack:
            spools = [stack.enter_context(open(path, "rb", buffering=0)) for path in index.spools]
            with atomic_write(train_path) as train_fh:
                result.train_samples = _copy_ranges(spools, index, plan.train, train_fh)
                result.written[opts.name] = train_path
                if opts.val_ratio > 0:
                    with atomic_write(val_path) as val_fh:
                        result.val_samples = _copy_ranges(spools, index, plan.val, val_fh)
                    result.written[f"{opts.name}_val"] = val_path
    entries = {opts.name: dataset_entry(train_path.name, opts, "train")}
    if opts.val_ratio > 0:
        entries[f"{opts.name}_val"] = dataset_entry(val_path.name, opts, "validation")
    result.dataset_info = register_datasets(out_dir, entries)
    return result
