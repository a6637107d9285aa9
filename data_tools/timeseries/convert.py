"""``lfkit data convert|stats --kind timeseries``: ChatTS-style JSONL -> a LlamaFactory dataset.

One streaming pass (:func:`scan`) parses and validates each record
(:mod:`lfkit.data_tools.timeseries.records`), measures its sequence budget
(:mod:`lfkit.data_tools.timeseries.budget`) and, for ``convert``, writes it at once; nothing but
per-sample counters stays in memory.

Output (``DIR/NAME.jsonl``), one layout for single- and multi-turn records, the sharegpt layout
of the dialogue converter plus the series::

    {"messages": [{"role": "user", "content": "... <ts><ts/> ..."}, {"role": "assistant", ...}],
     "system": "", "timeseries": [[1.0, 2.5, ...], ...]}

The values are the raw input values and the placeholders stay bare ``<ts><ts/>``: the model's
processor writes the offset/scaling text and normalises the series at training time, so
writing either here would apply them twice. ``dataset_info.json`` registers the ``timeseries``
column (``"columns": {..., "timeseries": "timeseries"}``), which the lfkit plugin reads.

``ts_format="text"`` writes each series as compact text in place of its placeholder and no
``timeseries`` column (:mod:`lfkit.data_tools.timeseries.text`): a plain LLM trains on it with
stock LlamaFactory.

With ``cutoff_len`` a sample whose budget exceeds it is rejected (``over_cutoff``), never cut:
LlamaFactory would otherwise truncate it and silently drop the end of a series or the answer.
``converted + rejected = read`` always holds; with ``strict`` and any reject only the rejects
file is published. Outputs are staged in the run's work folder and published together at the
end of a run that succeeded; a run that fails or is interrupted (a truncated ``.gz`` input, a
``SIGTERM``) publishes nothing, not even the records read so far (see
:mod:`lfkit.data_tools.core.workdir`). ``fmt="parquet"`` writes ``NAME.parquet`` instead.
"""

from __future__ import annotations

import statistics
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from lfkit.data_tools.core.inputs import iter_lines
from lfkit.data_tools.core.output import OutputFormat, RowWriter, dataset_file
from lfkit.data_tools.core.records import RecordError, parse_record
from lfkit.data_tools.core.registry import DATASET_INFO, SHAREGPT_TAGS, merged_info, read_dataset_info
from lfkit.data_tools.core.rejects import RejectsWriter, RejectTally
from lfkit.data_tools.core.summary import Accounting
from lfkit.data_tools.core.workdir import work_folder
from lfkit.data_tools.timeseries.budget import Budget, CharEstimate, TextCounter, sample_budget
from lfkit.data_tools.timeseries.chatts import DEFAULT_PATCH_SIZE, patch_count
from lfkit.data_tools.timeseries.records import TsSample, validate_record
from lfkit.data_tools.timeseries.text import DEFAULT_DECIMALS, render_text

from lfkit.atomic import AtomicGroup

TS_FORMATS = ("encoder", "text")


@dataclass
class TsOptions:
    """Everything ``--kind timeseries`` can be told (shared by ``convert`` and ``stats``)."""

    ts_format: str = "encoder"
    max_series_length: int | None = None
    cutoff_len: int | None = None
    patch_size: int = DEFAULT_PATCH_SIZE
    decimals: int = DEFAULT_DECIMALS
    counter: TextCounter = field(default_factory=CharEstimate)
    fmt: OutputFormat = OutputFormat.jsonl

    def validate(self) -> None:
        """Raise ``ValueError`` for values that cannot work."""
        if self.ts_format not in TS_FORMATS:
            raise ValueError(f"--ts-format must be one of {TS_FORMATS}, got {self.ts_format!r}")
        if self.max_series_length is not None and self.max_series_length < 1:
            raise ValueError("--max-series-length must be at least 1")
        if self.cutoff_len is not None and self.cutoff_len < 1:
            raise ValueError("--cutoff-len must be at least 1")
        if self.patch_size < 1:
            raise ValueError("--patch-size must be at least 1")
        if not 0 <= self.decimals <= 12:
            raise ValueError("--ts-decimals must be between 0 and 12")


@dataclass
class TsScan:
    """Counts and per-sample columns of one pass."""

    counts: Accounting = field(default_factory=Accounting)
    totals: array = field(default_factory=lambda: array("Q"))
    text_tokens: array = field(default_factory=lambda: array("Q"))
    series_lengths: array = field(default_factory=lambda: array("Q"))
    series_per_sample: Counter[int] = field(default_factory=Counter)
    multi_turn: int = 0

    def add(self, sample: TsSample, budget: Budget) -> None:
        self.counts.converted += 1
        self.totals.append(budget.total)
        self.text_tokens.append(budget.text_tokens)
        self.series_lengths.extend(budget.series_lengths)
        self.series_per_sample[len(sample.timeseries)] += 1
        self.multi_turn += sample.turns > 1


def over_cutoff(budget: Budget, opts: TsOptions) -> RecordError | None:
    """The ``over_cutoff`` reject for a sample longer than ``opts.cutoff_len``, if it is."""
    if opts.cutoff_len is None or budget.total <= opts.cutoff_len:
        return None
    kind = "tokens" if opts.counter.exact else "tokens (estimated)"
    detail = f"{budget.text_tokens} text {kind}"
    if opts.ts_format == "encoder" and budget.series_lengths:
        detail += f" + {budget.series_positions} series positions"
    return RecordError(
        "over_cutoff",
        f"sample needs {budget.total} positions ({detail}) > --cutoff-len {opts.cutoff_len}; "
        "rejected rather than truncated",
        None,
    )


def render_sample(sample: TsSample, opts: TsOptions) -> bytes:
    """The output JSONL line of a valid sample (see the module docstring)."""
    if opts.ts_format == "text":
        messages = render_text(sample.messages, sample.timeseries, opts.decimals)
        return orjson.dumps({"messages": messages, "system": sample.system}) + b"\n"
    return (
        orjson.dumps({"messages": sample.messages, "system": sample.system, "timeseries": sample.timeseries})
        + b"\n"
    )


def scan(
    inputs: Sequence[str | Path],
    opts: TsOptions,
    rejects: RejectTally,
    out: RowWriter | None = None,
    on_progress: Callable[[int], None] | None = None,
    enforce_cutoff: bool = True,
) -> TsScan:
    """Read every record of ``inputs``; write it to ``out`` (if given) or reject it.

    ``enforce_cutoff=False`` (``stats``) counts samples over ``opts.cutoff_len`` instead of
    rejecting them, so the report shows how many a conversion would reject.
    """
    result = TsScan()
    counts = result.counts
    for line in iter_lines(inputs, on_progress):
        counts.read += 1
        try:
            sample = validate_record(parse_record(line), line, opts.max_series_length)
            budget = sample_budget(
                sample,
                opts.counter,
                ts_format=opts.ts_format,
                patch_size=opts.patch_size,
                decimals=opts.decimals,
            )
            err = over_cutoff(budget, opts) if enforce_cutoff else None
            if err is not None:
                raise err
        except RecordError as err:
            rejects.add(line, err)
            counts.rejected += 1
            continue
        result.add(sample, budget)
        if out is not None:
            out.write(render_sample(sample, opts))
    counts.check()
    return result


def output_columns(opts: TsOptions) -> list[str]:
    """The columns of the output rows."""
    return ["messages", "system", "timeseries"] if opts.ts_format == "encoder" else ["messages", "system"]


def dataset_entry(file_name: str, opts: TsOptions) -> dict[str, Any]:
    """The ``dataset_info.json`` entry; ``lfkit`` records how the file was built (LlamaFactory ignores it)."""
    return {
        "file_name": file_name,
        "formatting": "sharegpt",
        "columns": {c: c for c in output_columns(opts)},
        "tags": dict(SHAREGPT_TAGS),
        "lfkit": {
            "kind": "timeseries",
            "ts_format": opts.ts_format,
            "patch_size": opts.patch_size,
            "max_series_length": opts.max_series_length,
            "cutoff_len": opts.cutoff_len,
            "ts_decimals": opts.decimals if opts.ts_format == "text" else None,
            "budget_counter": opts.counter.label,
        },
    }


@dataclass
class TsConvertResult:
    """What a conversion did; ``dataset_info`` is ``None`` when nothing was published."""

    scan: TsScan
    rejects: RejectsWriter
    dataset: Path | None = None
    dataset_info: Path | None = None
    stale_work: list[Path] = field(default_factory=list)  # work folders of killed runs removed


def convert_timeseries(
    inputs: Sequence[str | Path],
    out_dir: str | Path,
    name: str,
    opts: TsOptions,
    strict: bool = False,
    on_progress: Callable[[int], None] | None = None,
) -> TsConvertResult:
    """Convert ``inputs`` into ``out_dir/name.jsonl`` and register it (see the module docstring).

    The rejects file, the dataset and ``dataset_info.json`` are staged and published together
    (:class:`~lfkit.atomic.AtomicGroup`): an error anywhere (a corrupt ``.gz`` input
    included) leaves the previous outputs as they were.
    """
    opts.validate()
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"dataset name {name!r} must be a plain file-name stem")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    read_dataset_info(out_dir)  # a broken dataset_info.json fails the run before the long pass
    path = out_dir / dataset_file(name, opts.fmt)
    with (
        work_folder(out_dir, name) as work,
        AtomicGroup(tmp_dir=work.path) as outputs,
        RejectsWriter(out_dir, name, outputs) as rejects,
    ):
        writer = RowWriter(outputs.open(path), opts.fmt, output_columns(opts), fill=[])
        result = TsConvertResult(scan(inputs, opts, rejects, writer, on_progress), rejects)
        result.stale_work = work.removed_stale
        writer.close()
        if result.scan.counts.converted == 0 or (strict and rejects.count):
            outputs.discard(path)  # only the rejects file is published
            return result
        result.dataset = path
        result.dataset_info = out_dir / DATASET_INFO
        info = merged_info(out_dir, {name: dataset_entry(path.name, opts)})
        outputs.open(result.dataset_info, "w").write(info)
    return result


def timeseries_stats(
    inputs: Sequence[str | Path], opts: TsOptions, on_progress: Callable[[int], None] | None = None
) -> tuple[TsScan, RejectTally]:
    """The same pass as ``convert`` without writing anything."""
    opts.validate()
    rejects = RejectTally()
    return scan(inputs, opts, rejects, None, on_progress, enforce_cutoff=False), rejects


def percentiles(values: Sequence[int]) -> dict[str, float]:
    """min / median / p95 / max of ``values`` (empty dict for no values)."""
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]
    return {"min": ordered[0], "median": statistics.median(ordered), "p95": p95, "max": ordered[-1]}


def stats_rows(result: TsScan, opts: TsOptions) -> list[tuple[str, str]]:
    """Label/value rows describing the budget, for the summary table."""
    exact = "" if opts.counter.exact else " (estimated)"
    rows = [("text tokens from", opts.counter.label)]
    n = result.counts.converted
    rows.append(("multi-turn samples", f"{result.multi_turn:,} of {n:,}"))
    series = len(result.series_lengths)
    rows.append(("series", f"{series:,}"))
    if series:
        lengths = percentiles(result.series_lengths)
        rows.append(("series length min/median/p95/max", _fmt(lengths)))
        if opts.ts_format == "encoder":
            patches = [patch_count(x, opts.patch_size) for x in result.series_lengths]
            rows.append((f"patches per series (patch_size {opts.patch_size})", _fmt(percentiles(patches))))
    if n:
        rows.append((f"text tokens{exact} min/median/p95/max", _fmt(percentiles(result.text_tokens))))
        label = "sequence budget" if opts.ts_format == "encoder" else "sequence budget (text form)"
        rows.append((f"{label}{exact} min/median/p95/max", _fmt(percentiles(result.totals))))
        rows.append(("cutoff_len that cuts nothing", f"{max(result.totals):,}"))
        if opts.cutoff_len is not None:
            over = sum(1 for t in result.totals if t > opts.cutoff_len)
            rows.append((f"over cutoff_len {opts.cutoff_len} (convert rejects these)", f"{over:,}"))
    return rows


def _fmt(p: dict[str, float]) -> str:
    return " / ".join(
        f"{p[k]:,.0f}" if float(p[k]).is_integer() else f"{p[k]:,.1f}"
        for k in ("min", "median", "p95", "max")
    )
