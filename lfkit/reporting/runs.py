"""Find LlamaFactory runs below a directory and read what each one left behind.

A LlamaFactory ``train`` writes its results into ``output_dir``: ``trainer_state.json``
(the full ``log_history``, written when training ends), ``trainer_log.jsonl`` (one line per
log event, written while training runs, so it survives a crash), ``train_results.json`` /
``eval_results.json`` / ``all_results.json`` (runtime, throughput, final metrics),
``adapter_config.json`` (PEFT runs), a ``README.md`` model card (base model, dataset, the
finetuning type as a tag), ``value_head.safetensors`` (reward models) and, for
``do_predict``, ``predict_results.json`` (BLEU-4, ROUGE) and ``generated_predictions.jsonl``.
LlamaBoard (the web UI) also saves the recipe as ``training_args.yaml``; the lfkit plugin
adds ``lfkit_run.json`` (hardware, peak memory, versions, every parsed argument; see
:mod:`lfkit.plugin.run_record_schema`). ``training_args.bin`` is a pickle (reading it would
run code), so it is never read.

Nothing here raises on a damaged run: every unreadable file or field becomes a
:class:`Problem` naming the file, line and field, and the run is still reported with
whatever could be read, so a crashed run shows up in the report instead of vanishing.
Non-finite numbers (``NaN``, ``Infinity``, which Python's JSON writer emits for a diverged
loss) are kept as values: they are the evidence of divergence, not damage.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from lfkit.plugin.run_record_schema import RUN_RECORD_FILE, RunRecord, RunRecordError, read_run_record

TRAINER_STATE_FILE = "trainer_state.json"
TRAINER_LOG_FILE = "trainer_log.jsonl"
ALL_RESULTS_FILE = "all_results.json"
TRAIN_RESULTS_FILE = "train_results.json"
EVAL_RESULTS_FILE = "eval_results.json"
PREDICT_RESULTS_FILE = "predict_results.json"
PREDICTIONS_FILE = "generated_predictions.jsonl"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_CARD_FILE = "README.md"
TRAINING_ARGS_FILE = "training_args.yaml"
"""The recipe LlamaBoard (LlamaFactory's web UI) saves into output_dir when it starts a run."""
VALUE_HEAD_FILES = ("value_head.safetensors", "value_head.bin")
"""The value head LlamaFactory saves for reward models (stage rm) and PPO."""

MARKER_FILES = (
    TRAINER_STATE_FILE,
    TRAINER_LOG_FILE,
    ALL_RESULTS_FILE,
    TRAIN_RESULTS_FILE,
    EVAL_RESULTS_FILE,
    PREDICT_RESULTS_FILE,
    PREDICTIONS_FILE,
    ADAPTER_CONFIG_FILE,
    RUN_RECORD_FILE,
    TRAINING_ARGS_FILE,
    "training_args.bin",
)
"""Any one of these files makes a directory a run directory (possibly a broken one)."""

TRAINER_LOG_RENAMES = {
    "current_steps": "step",
    "lr": "learning_rate",
    "accuracy": "rewards/accuracies",
    "total_tokens": "num_input_tokens_seen",
}
"""``trainer_log.jsonl`` names (LlamaFactory's LogCallback) -> the ``log_history`` names they copy."""
BOOKKEEPING_KEYS = frozenset({"step", "epoch", "total_steps", "percentage", "total_flos"})
"""Numeric log fields that are no metric of the run."""
KNOWN_COMPONENTS = ("sft", "odds_ratio", "ce", "kl")
"""Loss terms logged beside ``loss`` (ORPO's, lfkit's KL loss): ``eval_sft_loss`` is no eval set named sft."""
PREDICTION_EXAMPLES = 3
"""How many generated predictions the report quotes."""


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
    """One log event: the step, the fractional epoch and every numeric value logged (NaN/inf kept)."""

    step: int
    epoch: float | None
    values: dict[str, float]


@dataclass(frozen=True)
class Progress:
    """How far a run's training got, as its own files say: ``current`` of ``total`` optimizer steps."""

    current: int
    total: int
    source: str


@dataclass(frozen=True)
class Predictions:
    """``generated_predictions.jsonl``: how many lines it has and the first few, as written."""

    count: int
    examples: list[dict[str, Any]]


@dataclass
class Run:
    """Everything read from one run directory; missing pieces are ``None`` plus a :class:`Problem`."""

    path: Path
    label: str
    files: list[str]
    log: list[LogPoint] = field(default_factory=list)
    """Every log event with a step and a metric (training and evaluation), in logged order."""
    log_source: str | None = None
    state: dict[str, Any] | None = None
    results: dict[str, Any] | None = None
    results_source: str | None = None
    eval_results: dict[str, Any] | None = None
    predict_results: dict[str, Any] | None = None
    predict_source: str | None = None
    predictions: Predictions | None = None
    progress: Progress | None = None
    record: RunRecord | None = None
    adapter_config: dict[str, Any] | None = None
    model_card: dict[str, Any] | None = None
    training_args: dict[str, Any] | None = None
    problems: list[Problem] = field(default_factory=list)

    @property
    def train_log(self) -> list[LogPoint]:
        """The training events (those with a ``loss``)."""
        return [p for p in self.log if "loss" in p.values]

    @property
    def has_losses(self) -> bool:
        return any("loss" in p.values for p in self.log)

    @property
    def finished(self) -> bool:
        """Whether LlamaFactory's end-of-training files are there (written after the last step)."""
        return self.state is not None or TRAIN_RESULTS_FILE in self.files

    @property
    def is_predict_only(self) -> bool:
        """A ``do_predict`` directory without training: prediction metrics, no training log."""
        return not self.has_losses and self.state is None and self.predict_results is not None

    def train_keys(self) -> list[str]:
        """Every metric key logged with a training loss, in first-logged order."""
        keys: dict[str, None] = {}
        for point in self.train_log:
            keys.update(dict.fromkeys(point.values))
        return list(keys)

    def component_loss_keys(self) -> list[str]:
        """Loss terms logged next to ``loss`` (lfkit's ``ce_loss``/``kl_loss``, ORPO's ``sft_loss``...)."""
        return [k for k in self.train_keys() if k.endswith("_loss") and k not in ("loss", "train_loss")]

    def eval_sets(self) -> list[str]:
        """The evaluation sets logged: ``""`` for ``eval_loss``, ``name`` for ``eval_<name>_loss``.

        ``eval_on_each_dataset`` (and several ``eval_dataset`` names) make Transformers log one
        ``eval_<name>_loss`` per set. An ``eval_<x>_loss`` whose ``<x>_loss`` is a training loss
        term (ORPO's ``eval_sft_loss``) is that term's evaluation, not a set.
        """
        components = {k.removesuffix("_loss") for k in self.component_loss_keys()} | set(KNOWN_COMPONENTS)
        names: dict[str, None] = {}
        for point in self.log:
            for key in point.values:
                match = _EVAL_LOSS.match(key)
                if not match:
                    continue
                name = match.group(1) or ""
                if name in components or any(name.endswith("_" + c) for c in components):
                    continue
                names[name] = None
        return list(names)

    def eval_series(self, name: str, metric: str = "loss") -> list[tuple[int, float | None, float]]:
        """``(step, epoch, value)`` of one eval set's ``metric`` (``loss``, ``accuracy``, ...)."""
        key = eval_key(name, metric)
        return [(p.step, p.epoch, p.values[key]) for p in self.log if key in p.values]

    def series(self, key: str) -> list[tuple[int, float | None, float]]:
        """``(step, epoch, value)`` of every event that logged ``key``."""
        return [(p.step, p.epoch, p.values[key]) for p in self.log if key in p.values]


_EVAL_LOSS = re.compile(r"^eval_(?:(.+)_)?loss$")


def eval_key(name: str, metric: str = "loss") -> str:
    """The log key of ``metric`` in eval set ``name``: ``eval_loss``, ``eval_a_loss``, ``eval_a_accuracy``."""
    return f"eval_{name}_{metric}" if name else f"eval_{metric}"


def eval_set_label(name: str) -> str:
    return f"eval set `{name}`" if name else "eval"


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
    A directory given twice, or reached from two roots, is read and reported once.
    """
    runs: list[Run] = []
    others: list[NotARun] = []
    seen_dirs: set[Path] = set()
    for root in dict.fromkeys(Path(r).resolve() for r in roots):
        if not root.is_dir():
            others.append(NotARun(root, root.name or str(root), "not a directory"))
            continue
        if root in seen_dirs:
            continue  # below a root read before: already reported
        found_before = len(runs)
        for directory in _walk(root):
            if directory in seen_dirs:
                continue
            seen_dirs.add(directory)
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
    counts: dict[str, int] = {}
    for run in runs:  # two roots with the same name: keep labels (and plot names) distinct
        counts[run.label] = counts.get(run.label, 0) + 1
        if counts[run.label] > 1:
            run.label = f"{run.label} ({counts[run.label]})"
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
            continue  # a run: its checkpoint-*/runs/lfkit_plots subdirectories are part of it
        stack.extend(c for c in children if not c.name.startswith("."))


def _label(root: Path, directory: Path) -> str:
    rel = directory.relative_to(root)
    return root.name if str(rel) == "." else f"{root.name}/{rel.as_posix()}"


def load_run(directory: Path, label: str | None = None) -> Run:
    """Read one run directory; never raises for damaged content (see :class:`Problem`)."""
    directory = Path(directory)
    files = sorted(p.name for p in directory.iterdir()) if directory.is_dir() else []
    run = Run(path=directory, label=label or directory.name, files=files)

    state = _read_json(directory / TRAINER_STATE_FILE, run)
    if isinstance(state, dict):
        run.state = state
        run.log = _history(state, TRAINER_STATE_FILE, run)
        run.log_source = TRAINER_STATE_FILE if run.log else None

    jsonl_log, jsonl_progress = _read_trainer_log(directory / TRAINER_LOG_FILE, run)
    run.progress = jsonl_progress
    if run.log_source is None and jsonl_log:
        run.log, run.log_source = jsonl_log, TRAINER_LOG_FILE

    checkpoint = latest_checkpoint(directory)
    if run.state is None and checkpoint is not None:
        name = f"{checkpoint.name}/{TRAINER_STATE_FILE}"
        saved = _read_json(checkpoint / TRAINER_STATE_FILE, run, label=name)
        if isinstance(saved, dict):
            if run.log_source is None:
                run.log = _history(saved, name, run)
                run.log_source = name if run.log else None
            step, total = saved.get("global_step"), saved.get("max_steps")
            if run.progress is None and _is_int(step) and _is_int(total):
                run.progress = Progress(step, total, name)
        run.problems.append(
            Problem(checkpoint.name, "latest checkpoint saved before the end (resume_from_checkpoint)")
        )

    for name in (ALL_RESULTS_FILE, TRAIN_RESULTS_FILE):
        results = _read_json(directory / name, run)
        if isinstance(results, dict) and run.results is None and _has_train_results(results):
            run.results, run.results_source = results, name
    eval_results = _read_json(directory / EVAL_RESULTS_FILE, run)
    run.eval_results = eval_results if isinstance(eval_results, dict) else None
    predict = _read_json(directory / PREDICT_RESULTS_FILE, run)
    if isinstance(predict, dict):
        run.predict_results, run.predict_source = predict, PREDICT_RESULTS_FILE
    else:
        combined = _read_json(directory / ALL_RESULTS_FILE, run, report=False)
        if isinstance(combined, dict) and any(k.startswith("predict_") for k in combined):
            run.predict_results, run.predict_source = combined, ALL_RESULTS_FILE
    run.predictions = _read_predictions(directory / PREDICTIONS_FILE, run)

    if (directory / RUN_RECORD_FILE).exists():
        try:
            run.record = read_run_record(directory / RUN_RECORD_FILE)
        except (RunRecordError, OSError) as err:
            message = str(err).removeprefix(f"{directory / RUN_RECORD_FILE}: ")
            run.problems.append(Problem(RUN_RECORD_FILE, message))
    adapter = _read_json(directory / ADAPTER_CONFIG_FILE, run)
    run.adapter_config = adapter if isinstance(adapter, dict) else None
    run.model_card = _read_model_card(directory / MODEL_CARD_FILE, run)
    run.training_args = _read_yaml(directory / TRAINING_ARGS_FILE, run)

    if not run.is_predict_only and run.eval_results is None and not run.finished:
        left = (
            f"trainer_log.jsonl ends at step {run.progress.current} of {run.progress.total}"
            if run.progress
            else "no step count in the files"
        )
        for name in (TRAINER_STATE_FILE, ALL_RESULTS_FILE):
            if name not in files:
                run.problems.append(
                    Problem(name, f"missing: LlamaFactory writes it when training ends ({left})")
                )
    elif run.state is None and TRAIN_RESULTS_FILE in files:
        run.problems.append(
            Problem(TRAINER_STATE_FILE, f"missing, although {TRAIN_RESULTS_FILE} says training ended")
        )
    return run


def latest_checkpoint(directory: Path) -> Path | None:
    """The ``checkpoint-<step>`` subdirectory with the highest step, if any."""
    steps = []
    for child in directory.glob("checkpoint-*"):
        suffix = child.name.removeprefix("checkpoint-")
        if child.is_dir() and suffix.isdigit():
            steps.append((int(suffix), child))
    return max(steps)[1] if steps else None


def _has_train_results(results: dict[str, Any]) -> bool:
    return any(k.startswith("train_") or k == "epoch" for k in results)


def _read_json(path: Path, run: Run, *, label: str | None = None, report: bool = True) -> Any:
    """The parsed file, or ``None`` when it is absent or unreadable (then a :class:`Problem`)."""
    if not path.exists():
        return None
    name = label or path.name
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        if report:
            run.problems.append(
                Problem(name, f"invalid JSON: {err.msg} (column {err.colno})", line=err.lineno)
            )
    except (OSError, UnicodeDecodeError) as err:
        if report:
            run.problems.append(Problem(name, f"unreadable: {err}"))
    return None


def _history(state: dict[str, Any], source: str, run: Run) -> list[LogPoint]:
    history = state.get("log_history")
    if not isinstance(history, list):
        run.problems.append(Problem(source, "missing or not a list", field="log_history"))
        return []
    return _points(history, source, run, line_of=None)


def _json_object(line: str, file: str, number: int, run: Run) -> dict[str, Any] | None:
    """One JSONL line as an object, or ``None`` and a :class:`Problem` naming the file and line."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as err:
        run.problems.append(
            Problem(file, f"invalid JSON ({err.msg}); line truncated or corrupt", line=number)
        )
        return None
    if not isinstance(entry, dict):
        run.problems.append(Problem(file, "not a JSON object", line=number))
        return None
    return entry


def _read_trainer_log(path: Path, run: Run) -> tuple[list[LogPoint], Progress | None]:
    """Parse ``trainer_log.jsonl`` line by line; a bad line is a problem, the rest is kept."""
    if not path.exists():
        return [], None
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(Problem(TRAINER_LOG_FILE, f"unreadable: {err}"))
        return [], None
    entries: list[dict[str, Any]] = []
    lines: list[int] = []
    progress = None
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        entry = _json_object(line, TRAINER_LOG_FILE, number, run)
        if entry is None:
            continue
        current, total = entry.get("current_steps"), entry.get("total_steps")
        # Training lines carry an epoch; the progress lines of a predict-only run count batches.
        if _is_int(current) and _is_int(total) and total > 0 and "epoch" in entry:
            progress = Progress(current, total, TRAINER_LOG_FILE)
        entries.append({TRAINER_LOG_RENAMES.get(k, k): v for k, v in entry.items()})
        lines.append(number)
    if not entries and not any(p.file == TRAINER_LOG_FILE for p in run.problems):
        run.problems.append(Problem(TRAINER_LOG_FILE, "empty"))
    return _points(entries, TRAINER_LOG_FILE, run, line_of=lines), progress


def _points(history: list[Any], source: str, run: Run, *, line_of: list[int] | None) -> list[LogPoint]:
    """The log events that carry a metric, type-checked (a bad field is a :class:`Problem`).

    The final summary event (``train_loss``, ``train_runtime``) and bookkeeping-only lines
    (progress of prediction) are no points.
    """
    points: list[LogPoint] = []
    for index, entry in enumerate(history):
        line = line_of[index] if line_of else None
        where = {"line": line} if line is not None else {}
        if not isinstance(entry, dict):
            run.problems.append(Problem(source, f"log entry {index} is not an object", **where))
            continue
        if "train_loss" in entry:
            continue  # the end-of-training summary, also in train_results.json
        values: dict[str, float] = {}
        for key, value in entry.items():
            if key in BOOKKEEPING_KEYS or value is None:
                continue
            if _is_number(value):
                values[key] = float(value)
            elif key.endswith("loss"):
                run.problems.append(
                    Problem(source, f"log entry {index}: not a number: {value!r}", field=key, **where)
                )
        if not any(_is_metric(k) for k in values):
            continue
        step = entry.get("step")
        if not _is_int(step):
            run.problems.append(
                Problem(source, f"log entry {index}: not an integer: {step!r}", field="step", **where)
            )
            continue
        epoch = entry.get("epoch")
        if epoch is not None and not (_is_number(epoch) and math.isfinite(epoch)):
            run.problems.append(
                Problem(source, f"log entry {index}: not a number: {epoch!r}", field="epoch", **where)
            )
            epoch = None
        points.append(LogPoint(step=step, epoch=None if epoch is None else float(epoch), values=values))
    return points


_NOT_METRICS = ("_runtime", "_per_second", "num_input_tokens_seen", "throughput")


def _is_metric(key: str) -> bool:
    return not key.endswith(_NOT_METRICS) and key not in ("learning_rate", "grad_norm")


def _is_number(value: Any) -> bool:
    """An int or float, NaN and infinities included (a diverged loss is a value, not damage)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _read_predictions(path: Path, run: Run) -> Predictions | None:
    """Line count and the first :data:`PREDICTION_EXAMPLES` records of ``generated_predictions.jsonl``."""
    if not path.exists():
        return None
    examples: list[dict[str, Any]] = []
    count = 0
    try:
        with path.open(encoding="utf-8") as fh:
            for number, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                count += 1
                if len(examples) < PREDICTION_EXAMPLES:
                    record = _json_object(line, PREDICTIONS_FILE, number, run)
                    if record is not None:
                        examples.append(record)
    except (OSError, UnicodeDecodeError) as err:
        run.problems.append(Problem(PREDICTIONS_FILE, f"unreadable: {err}"))
        return None
    return Predictions(count=count, examples=examples)


def _read_yaml(path: Path, run: Run) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        run.problems.append(Problem(path.name, f"unreadable: {err}"))
        return None
    if not isinstance(data, dict):
        run.problems.append(Problem(path.name, "not a mapping of recipe keys"))
        return None
    return data


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
