"""The markdown results report: runs table, key findings, per-epoch analysis, plots, problems.

Every number in it is read from a run's files (see :mod:`lfkit.reporting.facts`); an
empty table cell carries a footnote saying why it is empty. Damaged runs stay in the
table with what could be read and are listed again under "Problems"; directories with
no run at all are listed there too.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from lfkit.atomic import write_text
from lfkit.reporting.epochs import per_epoch
from lfkit.reporting.facts import Fact, RunFacts, run_facts, short_model_name
from lfkit.reporting.findings import key_findings
from lfkit.reporting.plots import plot_comparison, plot_run
from lfkit.reporting.runs import NotARun, Run, find_runs
from lfkit.reporting.trends import Verdict, judge

RUNS_HEADER = [
    "run",
    "model",
    "method",
    "quantization",
    "hardware",
    "peak memory",
    "steps",
    "epochs",
    "train seconds",
    "train minutes",
    "final loss",
    "final eval loss",
    "samples/s",
]
"""Columns of the runs table, in order; component-loss columns (``final ce_loss``, ...) follow when logged."""


@dataclass
class Report:
    """What :func:`build_report` wrote and read."""

    markdown: str
    runs: list[Run]
    not_runs: list[NotARun]
    plots: list[Path] = field(default_factory=list)


class _Footnotes:
    """Numbered footnotes, one per distinct reason."""

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {}

    def ref(self, why: str) -> str:
        number = self.reasons.setdefault(why, len(self.reasons) + 1)
        return f"[^{number}]"

    def lines(self) -> list[str]:
        return [f"[^{n}]: {why}" for why, n in self.reasons.items()]


def _cell(fact: Fact, notes: _Footnotes, fmt: Callable[[object], str] = str) -> str:
    if not fact.known:
        return notes.ref(fact.why or "unknown")
    return _escape(fmt(fact.value))


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _loss(v: object) -> str:
    return f"{float(v):.4f}"


def _table(header: list[str], rows: Iterable[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def runs_table(facts: list[RunFacts], verdicts: dict[str, Verdict], notes: _Footnotes) -> list[str]:
    """The runs table in markdown (one row per run, broken runs included)."""
    components = list(dict.fromkeys(k for f in facts for k in f.components))
    header = RUNS_HEADER + [f"final {k}" for k in components] + ["trend"]
    rows = []
    for f in facts:
        minutes = Fact(f.seconds.value / 60, f.seconds.source) if f.seconds.known else f.seconds
        row = [
            f"`{_escape(f.run.label)}`",
            _cell(f.model, notes, lambda v: short_model_name(str(v))),
            _cell(f.method, notes),
            _cell(f.quantization, notes),
            _cell(f.hardware, notes),
            _cell(f.peak_memory, notes),
            _cell(f.steps, notes),
            _cell(f.epochs, notes, lambda v: f"{float(v):g}"),
            _cell(f.seconds, notes, lambda v: f"{float(v):.1f}"),
            _cell(minutes, notes, lambda v: f"{float(v):.2f}"),
            _cell(f.final_loss, notes, _loss),
            _cell(f.final_eval_loss, notes, _loss) + _eval_key_note(f.run),
            _cell(f.samples_per_second, notes, lambda v: f"{float(v):g}"),
        ]
        for key in components:
            fact = f.components.get(key) or Fact(why=f"{key} not logged by this run")
            row.append(_cell(fact, notes, _loss))
        verdict = verdicts.get(f.run.label)
        row.append(verdict.verdict if verdict else notes.ref("no training loss logged: no trend to judge"))
        rows.append(row)
    return _table(header, rows)


def epoch_section(f: RunFacts, verdict: Verdict | None, plot: Path | None, out_dir: Path) -> list[str]:
    """Per-epoch table, trend verdict and loss-curve link of one run."""
    run = f.run
    lines = [f"### `{run.label}`", ""]
    if verdict is not None:
        why = verdict.explain()
        lines += [f"Trend: **{verdict.verdict}**" + (f" ({why})." if why else "."), ""]
    load = (run.record or {}).get("load_average_1m_at_end")
    if load is not None:
        cores = run.record.get("cpu_count")
        lines += [
            f"Machine load at train end (`lfkit_run.json`): 1-minute load average {load:g}"
            + (f" on {cores} logical cores" if cores else "")
            + "; a busy machine makes every timing of this run slower.",
            "",
        ]
    components = run.component_loss_keys()
    stats = per_epoch(run.train_log, run.eval_log, components)
    if stats:
        eval_name = "eval loss" if run.eval_key in (None, "eval_loss") else f"`{run.eval_key}`"
        header = ["epoch", "logged steps", "mean train loss", f"{eval_name} (last in epoch)"]
        header += [f"mean {k}" for k in components]
        rows = []
        for s in stats:
            row = [
                str(s.epoch),
                str(s.train_points),
                _loss(s.mean_train_loss) if s.mean_train_loss is not None else "none logged",
                _loss(s.last_eval_loss) if s.last_eval_loss is not None else "no eval",
            ]
            row += [
                _loss(s.mean_components[k]) if k in s.mean_components else "not logged" for k in components
            ]
            rows.append(row)
        lines += _table(header, rows) + [""]
        lines.append(f"Source: `{run.log_source}`.")
        lines.append("")
    else:
        lines += ["No loss was logged with an epoch value: nothing to analyse per epoch.", ""]
    if plot is not None:
        lines += [f"![loss curve of {run.label}]({_rel(plot, out_dir)})", ""]
    return lines


def _eval_key_note(run: Run) -> str:
    """Names the eval set when the eval loss is not plain ``eval_loss`` (a named eval dataset)."""
    return f" (`{run.eval_key}`)" if run.eval_key not in (None, "eval_loss") else ""


def _rel(path: Path, base: Path) -> str:
    return Path(os.path.relpath(path.resolve(), base.resolve())).as_posix()


def verdict_for(run: Run) -> Verdict | None:
    """The trend verdict of a run, or ``None`` when it logged no training loss."""
    if not run.train_log:
        return None
    return judge(
        [p.values["loss"] for p in run.train_log],
        [(p.step, p.eval_loss) for p in run.eval_log],
    )


def build_report(
    roots: list[Path],
    out: Path,
    plots_dir: Path | None,
    *,
    title: str = "Training results",
    intro: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Read every run below ``roots``; write plots into ``plots_dir`` (if set) and the report to ``out``."""
    runs, not_runs = find_runs(roots)
    out = Path(out)
    facts = [run_facts(r) for r in runs]
    verdicts = {r.label: v for r in runs if (v := verdict_for(r)) is not None}
    plots: dict[str, Path] = {}
    comparison: list[Path] = []
    if plots_dir is not None:
        for run in runs:
            if progress:
                progress(run.label)
            path = plot_run(run, plots_dir)
            if path is not None:
                plots[run.label] = path
        comparison = plot_comparison(runs, plots_dir)

    notes = _Footnotes()
    lines = [f"# {title}", ""]
    generated = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    below = ", ".join(f"`{Path(r).resolve().name}`" for r in roots)
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
        lines += runs_table(facts, verdicts, notes)
        lines += [
            "",
            "Sources: steps and epochs from `trainer_state.json`; train seconds and samples/s from "
            "`train_results.json`/`all_results.json` (`train_runtime`, `train_samples_per_second`); final "
            "loss = last logged training loss; model, method, quantization, hardware and peak memory "
            "(per device: peak allocated/reserved by PyTorch, or the process's peak RSS on CPU) from "
            "`lfkit_run.json`, else from `adapter_config.json` and the model card. "
            "Trend rules: `lfkit/reporting/trends.py`.",
            "",
        ]
    else:
        lines += ["No run directories found.", ""]

    if facts:
        lines += ["## Key findings", ""]
        lines += [f"- {finding}" for finding in key_findings(facts, verdicts)]
        lines += [
            "",
            "Speed ratios compare `train_samples_per_second` as LlamaFactory reports it; runs with "
            "different batch sizes or sequence lengths are not like for like.",
            "",
        ]
        lines += ["## Loss by epoch", ""]
    for f in facts:
        lines += epoch_section(f, verdicts.get(f.run.label), plots.get(f.run.label), out.parent)
    if comparison:
        lines += ["## Comparison plots", ""]
        lines += [f"![{p.stem.replace('_', ' ')}]({_rel(p, out.parent)})" for p in comparison] + [""]

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
    return Report(markdown=markdown, runs=runs, not_runs=not_runs, plots=[*plots.values(), *comparison])
