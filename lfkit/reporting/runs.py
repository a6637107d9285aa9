"""Find LlamaFactory runs below a directory and read what each one left behind.

A LlamaFactory ``train`` writes its results into ``output_dir``: ``trainer_state.json``
(the full ``log_history``), ``trainer_log.jsonl`` (one line per log event, written while
training runs, so it survives a crash), ``train_results.json`` / ``all_results.json``
(runtime and throughput), ``adapter_config.json`` (PEFT runs), a ``README.md`` model card
(base model, dataset and the finetuning type as a tag) and, when the lfkit plugin was
active, ``lfkit_run.json`` (hardware, peak memory, versions; see
:mod:`lfkit.plugin.run_record`). LlamaFactory's CLI does not save the recipe itself and
``training_args.bin`` is a pickle (reading it would run code), so the run's arguments are
taken from those files only.

Nothing here raises on a damaged run: every unreadable file or field becomes a
:class:`Problem` naming the file, line and field, and the run is still reported with
whatever could be read, so a crashed run shows up in the report instead of vanishing.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUN_RECORD_FILE = "lfkit_run.json"
"""Name of the record :mod:`lfkit.plugin.run_record` writes into ``output_dir``."""

TRAINER_STATE_FILE = "trainer_state.json"
TRAINER_LOG_FILE = "trainer_log.jsonl"
ALL_RESULTS_FILE = "all_results.json"
TRAIN_RESULTS_FILE = "train_results.json"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"

MARKER_FILES = (
    TRAINER_STATE_FILE,
    TRAINER_LOG_FILE,
    ALL_RESULTS_FILE,
    TRAIN_RESULTS_FILE,
    ADAPTER_CONFIG_FILE,
    RUN_RECORD_FILE,
    "training_args.bin",
)
"""Any one of these files makes a directory a run directory (possibly a broken one)."""

STANDARD_LOSS_KEYS = frozenset({"loss", "eval_loss", "train_loss", "predict_loss"})


@dataclass(frozen=True)
class Problem:
    """Something in a run directory that could not be read, with where it is."""

    file: str
    message: str
    line: int | None = None
    field: str | None = None

    def __str__(self) -> str:
        where = self.file + (f" line {self.line}" if self.line is not None else "")
        where += f" field '{self.field}'" if self.field else ""
        return f"{where}: {self.message}"


@dataclass(frozen=True)
class LogPoint:
    """One training-loss log event: the step, the fractional epoch and every numeric value logged."""

    step: int
    epoch: float | None
    values: dict[str, float]
    eval_loss: float | None = None
    """The event's eval loss: ``eval_loss``, or ``eval_<set>_loss`` for a named eval dataset."""


@dataclass
class Run:
    """Everything read from one run directory; missing pieces are ``None`` plus a :class:`Problem`."""

    path: Path
    label: str
    files: list[str]
    train_log: list[LogPoint] = field(default_factory=list)
    eval_log: list[LogPoint] = field(default_factory=list)
    log_source: str | None = None
    eval_key: str | None = None
    """The key of the eval loss in :attr:`eval_log` (the first eval set logged, when there are several)."""
    state: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    results_source: str | None = None
    record: dict[str, Any] | None = None
    adapter_config: dict[str, Any] | None = None
    model_card: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def has_losses(self) -> bool:
        return bool(self.train_log)

    def component_loss_keys(self) -> list[str]:
        """Extra loss terms logged next to ``loss`` (``ce_loss`` and ``kl_loss`` of lfkit's KL loss)."""
        keys: dict[str, None] = {}
        for point in self.train_log:
            for key in point.values:
                if key.endswith("_loss") and key not in STANDARD_LOSS_KEYS and not key.startswith("eval_"):
                    keys[key] = None
        return list(keys)


@dataclass(frozen=True)
class NotARun:
    """A directory below a saves dir that holds no LlamaFactory output (listed, never skipped)."""

    path: Path
    label: str
    reason: str


def find_runs(roots: Iterable[Path]) -> tuple[list[Run], list[NotARun]]:
    """Every run directory below ``roots`` (read), plus leaf directories that hold no run.

    A directory holding any of :data:`MARKER_FILES` is a run; its ``checkpoint-*``
    subdirectories belong to it and are not reported separately. A directory with no
    marker file and no subdirectory (an empty or foreign leaf) is returned as
    :class:`NotARun` so an empty output dir of a run that never started is visible.
    """
    runs: list[Run] = []
    others: list[NotARun] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            others.append(NotARun(root, root.name or str(root), "not a directory"))
            continue
        found_before = len(runs)
        for directory in _walk(root):
            label = _label(root, directory)
            names = sorted(p.name for p in directory.iterdir())
            if any(name in MARKER_FILES for name in names):
                runs.append(load_run(directory, label))
            elif not any((directory / n).is_dir() for n in names):
                reason = (
                    "empty directory"
                    if not names
                    else "no LlamaFactory output files (has: " + ", ".join(names[:5])
                )
                reason += "" if not names else (", ...)" if len(names) > 5 else ")")
                others.append(NotARun(directory, label, reason))
        if len(runs) == found_before and not any(o.path == root for o in others):
            others.append(NotARun(root, root.name, "no run directory found below it"))
    seen: dict[str, int] = {}
    for run in runs:  # two roots with the same name: keep labels (and plot names) distinct
        seen[run.label] = seen.get(run.label, 0) + 1
        if seen[run.label] > 1:
            run.label = f"{run.label} ({seen[run.label]})"
    return runs, others


def _walk(root: Path) -> Iterable[Path]:
    """Directories below ``root`` (itself included), sorted, not descending into runs."""
    stack = [root]
    while stack:
        directory = stack.pop()
        yield directory
        try:
            children = sorted((p for p in directory.iterdir() if p.is_dir()), reverse=True)
        except OSError:
            continue
        if any((directory / m).exists() for m in MARKER_FILES):
            continue  # a run: its checkpoint-*/runs/ subdirectories are part of it
        stack.extend(c for c in children if not c.name.startswith("."))


def _label(root: Path, directory: Path) -> str:
    rel = directory.relative_to(root)
    name = root.resolve().name
    return name if str(rel) == "." else f"{name}/{rel.as_posix()}"


def load_run(directory: Path, label: str | None = None) -> Run:
    """Read one run directory; never raises for damaged content (see :class:`Problem`)."""
    directory = Path(directory)
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    run = Run(path=directory, label=label or directory.name, files=files)

    state = _read_json(directory / TRAINER_STATE_FILE, run, required=True)
    checkpoint = latest_checkpoint(directory)
    if state is None and checkpoint is not None:
        run.problems.append(
            Problem(checkpoint.name, "latest checkpoint saved before the end (resume_from_checkpoint)")
        )
    if isinstance(state, dict):
        run.state = state
        history = state.get("log_history")
        if isinstance(history, list):
            run.train_log, run.eval_log, run.eval_key = _split_history(
                history, TRAINER_STATE_FILE, run, line_of=None
            )
            run.log_source = TRAINER_STATE_FILE
        else:
            run.problems.append(Problem(TRAINER_STATE_FILE, "missing or not a list", field="log_history"))

    jsonl_train, jsonl_eval, jsonl_eval_key = _read_trainer_log(directory / TRAINER_LOG_FILE, run)
    if run.log_source is None and (jsonl_train or jsonl_eval):
        run.train_log, run.eval_log, run.eval_key = jsonl_train, jsonl_eval, jsonl_eval_key
        run.log_source = TRAINER_LOG_FILE

    for name in (ALL_RESULTS_FILE, TRAIN_RESULTS_FILE):
        results = _read_json(directory / name, run, required=name == ALL_RESULTS_FILE)
        if isinstance(results, dict) and run.results is None:
            run.results, run.results_source = results, name

    record = _read_json(directory / RUN_RECORD_FILE, run, required=False)
    run.record = record if isinstance(record, dict) else None
    adapter = _read_json(directory / ADAPTER_CONFIG_FILE, run, required=False)
    run.adapter_config = adapter if isinstance(adapter, dict) else None
    run.model_card = _read_model_card(directory / MODEL_CARD_FILE, run)
    return run


def latest_checkpoint(directory: Path) -> Path | None:
    """The ``checkpoint-<step>`` subdirectory with the highest step, if any."""
    steps = []
    for child in directory.glob("checkpoint-*"):
        suffix = child.name.removeprefix("checkpoint-")
        if child.is_dir() and suffix.isdigit():
            steps.append((int(suffix), child))
    return max(steps)[1] if steps else None


def _read_json(path: Path, run: Run, *, required: bool) -> Any:
    if not path.exists():
        if required:
            run.problems.append(Problem(path.name, "missing (training did not finish or was interrupted)"))
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        run.problems.append(
            Problem(path.name, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno)
        )
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(Problem(path.name, f"unreadable: {err}"))
    return None


def _read_trainer_log(path: Path, run: Run) -> tuple[list[LogPoint], list[LogPoint], str | None]:
    """Parse ``trainer_log.jsonl`` line by line; a bad line is a problem, the rest is kept."""
    if not path.exists():
        run.problems.append(Problem(TRAINER_LOG_FILE, "missing (LlamaFactory writes it while training)"))
        return [], [], None
    entries: list[dict[str, Any]] = []
    lines: list[int] = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(Problem(TRAINER_LOG_FILE, f"unreadable: {err}"))
        return [], [], None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as err:
            run.problems.append(
                Problem(TRAINER_LOG_FILE, f"invalid JSON ({err.msg}); line truncated or corrupt", line=number)
            )
            continue
        if not isinstance(entry, dict):
            run.problems.append(Problem(TRAINER_LOG_FILE, "not a JSON object", line=number))
            continue
        # LlamaFactory names the step "current_steps" here; log_history calls it "step".
        if "current_steps" in entry and "step" not in entry:
            entry["step"] = entry.pop("current_steps")
        entries.append(entry)
        lines.append(number)
    if not entries and not any(p.file == TRAINER_LOG_FILE for p in run.problems):
        run.problems.append(Problem(TRAINER_LOG_FILE, "empty"))
    return _split_history(entries, TRAINER_LOG_FILE, run, line_of=lines)


def _split_history(
    history: list[Any], source: str, run: Run, *, line_of: list[int] | None
) -> tuple[list[LogPoint], list[LogPoint], str | None]:
    """Training-loss events, eval-loss events and the eval-loss key of a log history.

    Fields are type-checked (a bad one is a :class:`Problem`). With several named eval
    datasets only the first one's losses are kept as the eval series.
    """
    train: list[LogPoint] = []
    evals: list[LogPoint] = []
    primary_eval_key: str | None = None
    for index, entry in enumerate(history):
        line = line_of[index] if line_of else None
        where = {"line": line} if line is not None else {}
        if not isinstance(entry, dict):
            run.problems.append(Problem(source, f"log entry {index} is not an object", **where))
            continue
        eval_key = _eval_loss_key(entry)
        if "loss" not in entry and eval_key is None:
            continue  # the final summary entry (train_loss, train_runtime) or a non-loss event
        step = entry.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            run.problems.append(
                Problem(source, f"log entry {index}: not an integer: {step!r}", field="step", **where)
            )
            continue
        epoch = entry.get("epoch")
        if epoch is not None and not _is_number(epoch):
            run.problems.append(
                Problem(source, f"log entry {index}: not a number: {epoch!r}", field="epoch", **where)
            )
            epoch = None
        values: dict[str, float] = {}
        for key, value in entry.items():
            if key in ("step", "epoch") or value is None:
                continue
            if _is_number(value):
                values[key] = float(value)
            elif key.endswith("loss"):
                run.problems.append(
                    Problem(source, f"log entry {index}: not a number: {value!r}", field=key, **where)
                )
        if eval_key is not None and eval_key not in values:
            eval_key = None  # its value was not a number (reported above)
        if eval_key is not None:
            primary_eval_key = primary_eval_key or eval_key
            if eval_key != primary_eval_key:
                eval_key = None  # a second eval set: the report follows the first one
        point = LogPoint(
            step=step,
            epoch=None if epoch is None else float(epoch),
            values=values,
            eval_loss=values[eval_key] if eval_key else None,
        )
        if "loss" in values:
            train.append(point)
        if point.eval_loss is not None:
            evals.append(point)
    return train, evals, primary_eval_key


def _eval_loss_key(entry: dict[str, Any]) -> str | None:
    """``eval_loss``, or the ``eval_<set>_loss`` key Transformers logs for a named eval dataset."""
    if "eval_loss" in entry:
        return "eval_loss"
    for key in entry:
        if key.startswith("eval_") and key.endswith("_loss"):
            return key
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _read_model_card(path: Path, run: Run) -> dict[str, Any] | None:
    """The YAML front matter of the model card LlamaFactory writes (base_model, tags, datasets)."""
    if not path.exists():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(Problem(MODEL_CARD_FILE, f"unreadable: {err}"))
        return None
    if not text.startswith("---"):
        return None
    end = text.find("\n---", 3)
    if end < 0:
        run.problems.append(Problem(MODEL_CARD_FILE, "front matter not closed by '---'", line=1))
        return None
    try:
        meta = yaml.safe_load(text[3:end])
    except yaml.YAMLError as err:
        run.problems.append(Problem(MODEL_CARD_FILE, f"invalid YAML front matter: {err}"))
        return None
    return meta if isinstance(meta, dict) else None
