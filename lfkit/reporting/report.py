"""The markdown results report: runs, resources, settings, findings, evaluation, predictions, plots.

Every number in it is read from a run's files (see :mod:`lfkit.reporting.facts`); an
empty table cell carries a footnote saying why it is empty. Damaged runs stay in the
tables with what could be read and are listed again under "Problems"; directories with
no run at all are listed there too. The runs table can also be written as CSV and JSON
(:func:`write_table_csv`, :func:`write_table_json`) for other tools.

The same renderer makes the one-run summary the lfkit plugin writes at the end of a run
(:mod:`lfkit.plugin.run_summary`): with one run, comparisons give way to that run's settings.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from lfkit.atomic import write_text
from lfkit.reporting.epochs import per_epoch
from lfkit.reporting.facts import Fact, RunFacts, group_facts, run_facts, short_model_name, unknown
from lfkit.reporting.findings import human_count, key_findings
from lfkit.reporting.health import DIVERGED, HEALTHY, ZERO_LOSS, Assessment, assess
from lfkit.reporting.plots import PlotOptions, plot_comparisons, plot_run
from lfkit.reporting.runs import (
    PREDICTIONS_FILE,
    RUN_RECORD_FILE,
    NotARun,
    Run,
    eval_key,
    eval_set_label,
    find_runs,
)
from lfkit.reporting.settings import differing_settings, display, summary_settings
from lfkit.reporting.stages import loss_label

PREDICT_METRICS = ("bleu-4", "rouge-1", "rouge-2", "rouge-l")
"""``predict_<name>`` metrics of LlamaFactory's ComputeSimilarity, shown in this order (percent)."""
PREDICT_OVERHEAD = ("runtime", "samples_per_second", "steps_per_second", "model_preparation_time")


@dataclass(frozen=True)
class Column:
    """A runs-table column: markdown header, CSV/JSON key, and how to get and show its value."""

    header: str
    key: str
    get: Callable[[RunFacts, Assessment], Fact]
    fmt: Callable[[Any], str] = str


def _loss(v: object) -> str:
    value = float(v)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.4f}"


def _minutes(fact: Fact) -> Fact:
    return Fact(float(fact.value) / 60, fact.source) if fact.known else fact


def _final_loss(f: RunFacts, a: Assessment) -> Fact:
    return f.final_loss


def _eval_losses(f: RunFacts, a: Assessment) -> Fact:
    if len(f.eval_losses) <= 1:
        return f.final_eval_loss
    parts = [f"{_loss(v.value)} ({name or 'eval'})" for name, v in f.eval_losses.items()]
    return Fact("; ".join(parts), f.final_eval_loss.source)


def _verdict(f: RunFacts, a: Assessment) -> Fact:
    return Fact(a.verdict, "lfkit/reporting/health.py, trends.py")


RUN_COLUMNS = [
    Column(
        "stage", "stage", lambda f, a: Fact(f.stage.name, f.stage.source) if f.stage else unknown("no stage")
    ),
    Column("model", "model", lambda f, a: f.model, lambda v: short_model_name(str(v))),
    Column("method", "method", lambda f, a: f.method),
    Column("quantization", "quantization", lambda f, a: f.quantization),
    Column("hardware", "hardware", lambda f, a: f.hardware),
    Column("steps", "steps", lambda f, a: f.steps),
    Column("epochs", "epochs", lambda f, a: f.epochs, lambda v: f"{float(v):g}"),
    Column("final loss", "final_loss", _final_loss, _loss),
    Column(
        "final eval loss", "final_eval_loss", _eval_losses, lambda v: v if isinstance(v, str) else _loss(v)
    ),
    Column("stage metric (last)", "stage_metric", lambda f, a: f.headline),
]
"""The runs table; loss-term columns (``final ce_loss``, ...) and the verdict follow."""
RESOURCE_COLUMNS = [
    Column("train minutes", "train_minutes", lambda f, a: _minutes(f.seconds), lambda v: f"{float(v):.2f}"),
    Column(
        "wall minutes", "wall_minutes", lambda f, a: _minutes(f.wall_seconds), lambda v: f"{float(v):.2f}"
    ),
    Column("samples/s", "samples_per_second", lambda f, a: f.samples_per_second, lambda v: f"{float(v):g}"),
    Column("tokens/s", "tokens_per_second", lambda f, a: f.tokens_per_second, lambda v: f"{float(v):.4g}"),
    Column("input tokens", "input_tokens", lambda f, a: f.total_tokens, lambda v: f"{int(v):,}"),
    Column(
        "trainable parameters", "trainable_parameters", lambda f, a: f.trainable, lambda v: human_count(v)
    ),
    Column("total parameters", "total_parameters", lambda f, a: f.parameters, lambda v: human_count(v)),
    Column("peak memory per device", "peak_memory", lambda f, a: f.peak_memory),
]
VERDICT = Column("verdict", "verdict", _verdict)


@dataclass
class Report:
    """What :func:`build_report` wrote and read."""

    markdown: str
    runs: list[Run]
    not_runs: list[NotARun]
    plots: list[Path] = field(default_factory=list)
    table: list[dict[str, Fact]] = field(default_factory=list)
    """The runs table, one ``{key: Fact}`` per training run (for CSV/JSON)."""
    notes: list[str] = field(default_factory=list)
    """Comparisons that could not be drawn, and why."""


class _Footnotes:
    """Numbered footnotes, one per distinct reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def ref(self, why: str) -> str:
        number = self.reasons.setdefault(why, len(self.reasons) + 1)
        return f"[^{number}]"

    def lines(self) -> list[str]:
        return [f"[^{n}]: {why}" for why, n in self.reasons.items()]


def _cell(fact: Fact, notes: _Footnotes, fmt: Callable[[Any], str] = str) -> str:
    if not fact.known:
        return notes.ref(fact.why or "unknown")
    return _escape(fmt(fact.value))


def _escape(text: str) -> str:
    """Text for one markdown table cell: pipes escaped, line breaks and control characters shown."""
    out = []
    for ch in str(text):
        if ch == "|":
            out.append("\\|")
        elif ch == "\n":
            out.append("⏎")
        elif ord(ch) < 32 or ord(ch) == 127:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    return "".join(out)


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _component_columns(facts: list[RunFacts]) -> list[Column]:
    keys = list(dict.fromkeys(k for f in facts for k in f.components))
    return [
        Column(
            f"final {k}",
            f"final_{k}",
            lambda f, a, k=k: f.components.get(k) or unknown(f"{k} not logged by this run"),
            _loss,
        )
        for k in keys
    ]


def table_rows(facts: list[RunFacts], assessments: dict[str, Assessment]) -> list[dict[str, Fact]]:
    """Every column of the runs and resources tables, per run, keyed for CSV/JSON."""
    columns = RUN_COLUMNS + _component_columns(facts) + [VERDICT] + RESOURCE_COLUMNS
    rows = []
    for f in facts:
        a = assessments[f.run.label]
        row = {"run": Fact(f.run.label, None)}
        row |= {c.key: c.get(f, a) for c in columns}
        row["verdict_detail"] = Fact(a.health.detail or (a.trend.explain() if a.trend else None), None)
        row["path"] = Fact(str(f.run.path), None)
        rows.append(row)
    return rows


def runs_table(facts: list[RunFacts], assessments: dict[str, Assessment], notes: _Footnotes) -> list[str]:
    """The runs table in markdown (one row per training run, broken runs included)."""
    columns = RUN_COLUMNS + _component_columns(facts) + [VERDICT]
    rows = []
    for f in facts:
        a = assessments[f.run.label]
        row = [f"`{_escape(f.run.label)}`"]
        for column in columns:
            cell = _cell(column.get(f, a), notes, column.fmt)
            if column is VERDICT and a.health.state != HEALTHY:
                cell = f"**{cell}**"
            if column.key == "final_loss" and a.health.state in (DIVERGED, ZERO_LOSS):
                cell += f" ({a.health.label})"
            row.append(cell)
        rows.append(row)
    return _table(["run"] + [c.header for c in columns], rows)


def resources_table(
    facts: list[RunFacts], assessments: dict[str, Assessment], notes: _Footnotes
) -> list[str]:
    rows = []
    for f in facts:
        a = assessments[f.run.label]
        rows.append(
            [f"`{_escape(f.run.label)}`"] + [_cell(c.get(f, a), notes, c.fmt) for c in RESOURCE_COLUMNS]
        )
    return _table(["run"] + [c.header for c in RESOURCE_COLUMNS], rows)


def settings_section(runs: list[Run], notes: _Footnotes) -> list[str]:
    """The settings that differ between the runs, or a one-run summary's main settings."""
    if len(runs) == 1:
        settings = summary_settings(runs[0])
        if not settings:
            return []
        lines = ["## Settings", ""]
        rows = [
            [
                f"`{s.key}`",
                _cell(s.values[0], notes, lambda v, k=s.key: display(k, v)),
                s.values[0].source or "",
            ]
            for s in settings
        ]
        return lines + _table(["setting", "value", "from"], rows) + [""]
    settings = differing_settings(runs)
    lines = ["## Settings that differ", ""]
    if not settings:
        return lines + ["No setting recorded in the runs' files differs between them.", ""]
    header = ["setting"] + [f"`{_escape(r.label)}`" for r in runs]
    rows = []
    for s in settings:
        rows.append([f"`{s.key}`"] + [_cell(v, notes, lambda v, k=s.key: display(k, v)) for v in s.values])
    lines += _table(header, rows)
    lines += [
        "",
        "Read from each run's own files: the arguments in `lfkit_run.json` (every recipe key as "
        "LlamaFactory parsed it), LlamaBoard's `training_args.yaml`, `adapter_config.json` and "
        "`trainer_state.json`; output and cache locations are left out.",
        "",
    ]
    return lines


def evaluation_section(facts: list[RunFacts]) -> list[str]:
    """Every eval set of every run: evaluations, final and best loss, final stage metrics."""
    rows = []
    for f in facts:
        run = f.run
        for name in run.eval_sets():
            series = run.eval_series(name)
            finite = [(s, v) for s, _, v in series if math.isfinite(v)]
            best = min(finite, key=lambda p: p[1]) if finite else None
            extras = []
            for key in sorted({k for p in run.log for k in p.values}):
                prefix = eval_key(name, "")
                if not key.startswith(prefix) or key.endswith(("_loss", "runtime", "_per_second")):
                    continue
                metric = key[len(prefix) :]
                if metric.startswith(("logits/", "logps/")):
                    continue  # DPO/KTO diagnostics: the rewards and accuracies summarise them
                if name == "" and any(
                    key.startswith(eval_key(other, "")) for other in run.eval_sets() if other
                ):
                    continue
                extras.append(f"{metric} {run.eval_series(name, metric)[-1][2]:.4g}")
            if (
                f.stage is not None
                and f.stage.is_language_modelling
                and series
                and math.isfinite(series[-1][2])
            ):
                try:
                    extras.append(f"perplexity {math.exp(series[-1][2]):.4g}")
                except OverflowError:
                    extras.append("perplexity inf")
            rows.append(
                [
                    f"`{_escape(run.label)}`",
                    _escape(eval_set_label(name)),
                    str(len(series)),
                    _loss(series[-1][2]) if series else "–",
                    f"{_loss(best[1])} (step {best[0]})" if best else "none finite",
                    _escape("; ".join(extras)) or "–",
                ]
            )
    if not rows:
        return []
    lines = ["## Evaluation", ""]
    lines += _table(["run", "set", "evaluations", "final loss", "best loss", "final metrics"], rows)
    lines += [
        "",
        "Perplexity = exp(final eval loss), for SFT/PT runs whose loss is a per-token cross-entropy.",
        "",
    ]
    return lines


def predictions_section(runs: list[Run], notes: _Footnotes, facts_by: dict[str, RunFacts]) -> list[str]:
    """Prediction metrics (BLEU-4, ROUGE from ``predict_results.json``) and a few example generations."""
    runs = [r for r in runs if r.predict_results is not None or r.predictions is not None]
    if not runs:
        return []
    lines = ["## Predictions", ""]
    rows = []
    for run in runs:
        results = run.predict_results or {}
        record = run.record
        model = record.model_name_or_path if record else None
        adapter = record.argument("adapter_name_or_path") if record else None
        if model is None and run.label in facts_by:
            model = facts_by[run.label].model.value
        row = [
            f"`{_escape(run.label)}`",
            _cell(
                Fact(model, RUN_RECORD_FILE) if model else unknown("no lfkit_run.json names the model"),
                notes,
                lambda v: short_model_name(str(v)),
            ),
            _escape(", ".join(short_model_name(str(a)) for a in _as_list(adapter))) if adapter else "–",
            str(run.predictions.count) if run.predictions else notes.ref(f"no {PREDICTIONS_FILE}"),
        ]
        for metric in PREDICT_METRICS:
            value = results.get(f"predict_{metric}")
            row.append(
                f"{value:.2f}"
                if isinstance(value, (int, float))
                else notes.ref(
                    f"predict_{metric} not in {run.predict_source or 'predict_results.json'} (LlamaFactory "
                    "computes BLEU/ROUGE only with predict_with_generate)"
                )
            )
        others = [
            f"{k.removeprefix('predict_')} {v:.4g}"
            for k, v in results.items()
            if k.startswith("predict_")
            and k.removeprefix("predict_") not in PREDICT_METRICS + PREDICT_OVERHEAD
            and isinstance(v, (int, float))
        ]
        row.append(_escape("; ".join(others)) or "–")
        speed = results.get("predict_samples_per_second")
        row.append(f"{speed:g}" if isinstance(speed, (int, float)) else "–")
        runtime = results.get("predict_runtime")
        row.append(f"{runtime:.1f}" if isinstance(runtime, (int, float)) else "–")
        rows.append(row)
    header = [
        "run",
        "model",
        "adapter",
        "predictions",
        "BLEU-4",
        "ROUGE-1",
        "ROUGE-2",
        "ROUGE-L",
        "other metrics",
        "samples/s",
        "seconds",
    ]
    lines += _table(header, rows)
    lines += ["", "BLEU-4 and ROUGE are LlamaFactory's (percent, averaged over the predictions).", ""]
    for run in runs:
        if run.predictions and run.predictions.examples:
            lines += _examples(run)
    return lines


def _as_list(value: Any) -> list[Any]:
    """LlamaFactory parses comma-separated paths (adapter_name_or_path) into a list."""
    return list(value) if isinstance(value, (list, tuple)) else [value]


EXAMPLE_PROMPT_CHARS = 80
EXAMPLE_TEXT_CHARS = 160


def _examples(run: Run) -> list[str]:
    examples = run.predictions.examples
    keys = list(dict.fromkeys(k for e in examples for k in e))
    lines = [
        f"Examples from `{_escape(run.label)}/{PREDICTIONS_FILE}` (the first {len(examples)} of "
        f"{run.predictions.count}; a prompt shows its end):",
        "",
    ]
    rows = []
    for number, example in enumerate(examples, start=1):
        row = [str(number)]
        for key in keys:
            text = str(example.get(key, ""))
            if key == "prompt" and len(text) > EXAMPLE_PROMPT_CHARS:
                text = "…" + text[-EXAMPLE_PROMPT_CHARS:]
            elif len(text) > EXAMPLE_TEXT_CHARS:
                text = text[:EXAMPLE_TEXT_CHARS] + "…"
            row.append(_escape(text))
        rows.append(row)
    return lines + _table(["#"] + keys, rows) + [""]


def run_section(f: RunFacts, a: Assessment, plot: Path | None, out_dir: Path) -> list[str]:
    """Stage, verdict with its evidence, per-epoch table and plot of one run."""
    run = f.run
    lines = [f"### `{run.label}`", ""]
    if f.stage is not None:
        source = f" (from {f.stage.source})" if f.stage.source else ""
        label = loss_label(f.stage, run.component_loss_keys())
        lines += [f"Stage: **{f.stage.name}**{source}; loss: {label}.", ""]
    health = a.health
    if health.state != HEALTHY:
        lines += [f"Verdict: **{health.label}**: {health.detail}.", ""]
        if a.trend is not None:
            why = a.trend.explain()
            lines += [f"Trend so far: {a.trend.verdict}" + (f" ({why})." if why else "."), ""]
    elif a.trend is not None:
        why = a.trend.explain()
        several = len(run.eval_sets()) > 1 and a.eval_set is not None
        on = f"; eval rule on the {eval_set_label(a.eval_set)} loss" if several else ""
        lines += [f"Trend: **{a.trend.verdict}**" + (f" ({why}{on})." if why else "."), ""]
        if health.detail:
            lines += [f"Note: {health.detail}.", ""]
    record = run.record
    if record is not None and record.load_average_1m_at_end is not None:
        cores = record.cpu_count
        lines += [
            "Machine load at train end (`lfkit_run.json`): 1-minute load average "
            f"{record.load_average_1m_at_end:g}"
            + (f" on {cores} logical cores" if cores else "")
            + "; a busy machine makes every timing of this run slower.",
            "",
        ]
    extra = list(f.components)
    if f.stage is not None:
        extra += [k for panel in f.stage.panels for k in panel.keys if run.series(k)]
    stats = per_epoch(run, extra)
    if stats:
        sets = run.eval_sets()
        header = ["epoch", "logged steps", "mean train loss"]
        if any(s.non_finite for s in stats):
            header.append("non-finite losses")
        header += [f"{eval_set_label(n)} loss (last in epoch)" for n in sets]
        header += [f"mean {k}" for k in extra]
        rows = []
        for s in stats:
            row = [
                str(s.epoch),
                str(s.train_points),
                _loss(s.mean_train_loss) if s.mean_train_loss is not None else "none logged",
            ]
            if "non-finite losses" in header:
                row.append(str(s.non_finite))
            row += [_loss(s.last_eval[n]) if n in s.last_eval else "no eval" for n in sets]
            row += [f"{s.means[k]:.4f}" if k in s.means else "not logged" for k in extra]
            rows.append(row)
        lines += _table(header, rows) + ["", f"Source: `{run.log_source}`.", ""]
    elif run.has_losses:
        lines += ["No loss was logged with an epoch value: nothing to analyse per epoch.", ""]
    if plot is not None:
        lines += [f"![loss curve of {run.label}]({_rel(plot, out_dir)})", ""]
    return lines


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def build_report(
    roots: list[Path],
    out: Path,
    plots_dir: Path | None,
    *,
    title: str = "Training results",
    intro: str | None = None,
    progress: Callable[[str], None] | None = None,
    compare_axes: Iterable[str] = ("step", "epoch"),
    compare_name: str | None = None,
    plot_options: PlotOptions = PlotOptions(),
) -> Report:
    """Read every run below ``roots``; write plots into ``plots_dir`` (if set) and the report to ``out``."""
    runs, not_runs = find_runs(roots)
    out = Path(out)
    training = [r for r in runs if not r.is_predict_only]
    facts = group_facts([run_facts(r) for r in training])
    facts_by = {f.run.label: f for f in facts}
    assessments = {r.label: assess(r) for r in training}
    plots: dict[str, Path] = {}
    comparison_paths: list[Path] = []
    comparison_notes: list[str] = []
    if plots_dir is not None:
        for f in facts:
            if progress:
                progress(f.run.label)
            path = plot_run(
                f.run, plots_dir, stage=f.stage, assessment=assessments[f.run.label], options=plot_options
            )
            if path is not None:
                plots[f.run.label] = path
        if len(training) > 1:
            comparisons = plot_comparisons(
                training, plots_dir, axes=compare_axes, name=compare_name, options=plot_options
            )
            comparison_paths, comparison_notes = comparisons.paths, comparisons.notes

    notes = _Footnotes()
    lines = [f"# {title}", ""]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    below = ", ".join(f"`{Path(r).resolve().name}`" for r in dict.fromkeys(Path(r).resolve() for r in roots))
    lines += [
        f"Generated by `lfkit results report` on {generated} from {len(runs)} run "
        f"director{'y' if len(runs) == 1 else 'ies'} "
        f"below {below}. Regenerate it instead of editing it.",
        "",
    ]
    if intro:
        lines += [intro, ""]
    lines += ["## Runs", ""]
    if facts:
        lines += runs_table(facts, assessments, notes)
        lines += [
            "",
            "Sources: stage from `lfkit_run.json`, LlamaBoard's `training_args.yaml` or the log keys each "
            "stage writes; steps and epochs from `trainer_state.json` (while a run is unfinished, "
            "`trainer_log.jsonl`); final loss = the last logged training loss, as logged (NaN included); "
            "stage metric = perplexity (exp of the final loss) for SFT/PT, else the stage's own metric, last "
            "logged "
            "value; model, method, quantization and hardware from `lfkit_run.json`, else from "
            "`adapter_config.json` and the model card. Verdict rules: `lfkit/reporting/health.py` (diverged, "
            "unstable, unfinished), then `lfkit/reporting/trends.py`.",
            "",
            "## Resources",
            "",
        ]
        lines += resources_table(facts, assessments, notes)
        lines += [
            "",
            "Train minutes and samples/s from `train_results.json`/`all_results.json` (`train_runtime`, "
            "`train_samples_per_second`); wall minutes from `lfkit_run.json` (process start to the end of "
            "training, model loading included); tokens/s and input tokens from Transformers' token count; "
            "parameters and peak memory (per device: peak allocated/reserved by PyTorch on a GPU, each "
            "process's peak RSS on CPU) from `lfkit_run.json`.",
            "",
        ]
        lines += settings_section(training, notes)
    elif not runs:
        lines += ["No run directories found.", ""]
    else:
        lines += ["No training run below (prediction runs are listed under Predictions).", ""]

    if facts:
        lines += ["## Key findings", ""]
        found = key_findings(facts, assessments, compare=len(facts) > 1)
        lines += [f"- {finding}" for finding in found] or ["- Nothing to report: the run is healthy."]
        if len(facts) > 1:
            lines += [
                "",
                "Speed ratios compare `train_samples_per_second` as LlamaFactory reports it, between runs of "
                "one stage; runs with different batch sizes or sequence lengths (see the settings table) "
                "are not like for like.",
            ]
        lines.append("")
    lines += evaluation_section(facts)
    lines += predictions_section(runs, notes, facts_by)
    if facts:
        lines += ["## Runs in detail", ""]
    for f in facts:
        lines += run_section(f, assessments[f.run.label], plots.get(f.run.label), out.parent)
    if comparison_paths or comparison_notes:
        lines += ["## Comparison plots", ""]
        lines += [f"![{p.stem.replace('_', ' ')}]({_rel(p, out.parent)})" for p in comparison_paths]
        lines += [f"- {note}" for note in comparison_notes]
        lines.append("")

    lines += ["## Problems", ""]
    problem_lines = []
    for run in runs:
        for problem in run.problems:
            problem_lines.append(f"- `{run.label}`: {problem}")
    for other in not_runs:
        problem_lines.append(f"- `{other.label}`: not a run: {other.reason}")
    lines += problem_lines or ["None: every run directory is complete."]
    lines.append("")
    if notes.reasons:
        lines += notes.lines() + [""]

    markdown = "\n".join(lines)
    write_text(out, markdown)
    return Report(
        markdown=markdown,
        runs=runs,
        not_runs=not_runs,
        plots=[*plots.values(), *comparison_paths],
        table=table_rows(facts, assessments),
        notes=comparison_notes,
    )


def write_table_csv(path: Path, table: list[dict[str, Fact]]) -> Path:
    """The runs table as CSV: one row per run, raw values, empty where unknown."""
    keys = list(dict.fromkeys(k for row in table for k in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=keys, lineterminator="\n")
    writer.writeheader()
    for row in table:
        writer.writerow({k: "" if not row[k].known else row[k].value for k in row})
    return write_text(path, buffer.getvalue())


def write_table_json(path: Path, table: list[dict[str, Fact]]) -> Path:
    """The runs table as JSON: per run, each column's value, and why it is missing where it is."""
    runs = []
    for row in table:
        runs.append(
            {
                "values": {k: _json_value(f.value) for k, f in row.items()},
                "missing": {k: f.why for k, f in row.items() if not f.known and f.why},
            }
        )
    return write_text(path, json.dumps({"runs": runs}, indent=2) + "\n")


def _json_value(value: Any) -> Any:
    """NaN and infinities as strings: strict JSON has no literal for them."""
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
