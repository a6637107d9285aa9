"""The facts of one run that the report's tables show, each with its source or why it is unknown.

A :class:`Fact` either has a value (and the file it came from) or no value and the reason,
which the report prints as a footnote. The reason states what the files hold or lack; a
cause is only given when a file says it (the recipe in the run record, for instance).
Nothing is estimated: a number that no file holds stays empty. The few derived values
(minutes from seconds, perplexity = exp(cross-entropy)) say so in the report.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lfkit.reporting.runs import (
    ADAPTER_CONFIG_FILE,
    EVAL_RESULTS_FILE,
    MODEL_CARD_FILE,
    RUN_RECORD_FILE,
    TRAINER_STATE_FILE,
    Run,
    eval_key,
)
from lfkit.reporting.stages import UNKNOWN, Stage, comparison_keys, stage_of

NO_RECORD = (
    f"no {RUN_RECORD_FILE}: the run was made without the lfkit plugin or with lfkit_run_record: false, "
    "or it stopped before the end"
)
KNOWN_METHODS = ("lora", "oft", "freeze", "full")
"""LlamaFactory's finetuning types; its model card carries the one used as a tag."""
GIB = 2**30


@dataclass(frozen=True)
class Fact:
    """A value with the file it came from, or ``None`` with the reason it is missing."""

    value: Any = None
    source: str | None = None
    why: str | None = None

    @property
    def known(self) -> bool:
        return self.value is not None


def unknown(why: str) -> Fact:
    return Fact(None, None, why)


@dataclass
class RunFacts:
    """The table rows of one run."""

    run: Run
    model: Fact
    method: Fact
    quantization: Fact
    hardware: Fact
    peak_memory: Fact
    steps: Fact
    epochs: Fact
    seconds: Fact
    samples_per_second: Fact
    final_loss: Fact
    final_eval_loss: Fact
    components: dict[str, Fact] = field(default_factory=dict)
    parameters: Fact = field(default_factory=lambda: unknown(NO_RECORD))
    stage: Stage | None = None
    eval_losses: dict[str, Fact] = field(default_factory=dict)
    """Final loss of each eval set (``""``: plain ``eval_loss``)."""
    headline: Fact = field(default_factory=lambda: unknown("no stage metric"))
    trainable: Fact = field(default_factory=lambda: unknown(NO_RECORD))
    wall_seconds: Fact = field(default_factory=lambda: unknown(NO_RECORD))
    tokens_per_second: Fact = field(default_factory=lambda: unknown("no token count logged"))
    total_tokens: Fact = field(default_factory=lambda: unknown("no token count logged"))
    group: str | None = None
    """The comparison group among the reported runs (set by :func:`group_facts`)."""


def group_facts(facts: list[RunFacts]) -> list[RunFacts]:
    """Set each row's comparison group, which depends on the other runs (an unrecorded SFT/PT stage)."""
    stages = [f.stage or UNKNOWN for f in facts]
    for f, key in zip(facts, comparison_keys(stages), strict=True):
        f.group = key
    return facts


def run_facts(run: Run) -> RunFacts:
    """Collect a run's table facts from its files (see :mod:`lfkit.reporting.runs`)."""
    record = run.record
    card = run.model_card or {}
    state = run.state or {}
    results = run.results or {}
    stage = stage_of(run)

    model = _first(
        (record.model_name_or_path if record else None, RUN_RECORD_FILE),
        ((run.adapter_config or {}).get("base_model_name_or_path"), ADAPTER_CONFIG_FILE),
        (card.get("base_model"), MODEL_CARD_FILE),
        why="no lfkit_run.json, adapter_config.json or model card README.md names the base model",
    )
    method = _method(run)
    hardware = _first((record.hardware_summary if record else None, RUN_RECORD_FILE), why=NO_RECORD)
    total_params = _first((record.parameters_total if record else None, RUN_RECORD_FILE), why=NO_RECORD)
    trainable = _first((record.parameters_trainable if record else None, RUN_RECORD_FILE), why=NO_RECORD)

    missing_state = f"no {TRAINER_STATE_FILE} (LlamaFactory writes it when training ends)"
    missing_results = _missing_results_reason(run)
    steps = _first((state.get("global_step"), TRAINER_STATE_FILE), why=missing_state)
    if not steps.known and run.progress is not None:
        steps = Fact(f"{run.progress.current} of {run.progress.total}", run.progress.source)
    last_epoch = next((p.epoch for p in reversed(run.log) if p.epoch is not None), None)
    epochs = _first(
        (state.get("epoch"), TRAINER_STATE_FILE),
        (results.get("epoch"), run.results_source),
        (last_epoch, run.log_source),
        why=missing_state,
    )
    seconds = _first((results.get("train_runtime"), run.results_source), why=missing_results("train_runtime"))
    throughput = _first(
        (results.get("train_samples_per_second"), run.results_source),
        why=missing_results("train_samples_per_second"),
    )

    train = run.train_log
    if train:
        final_loss = Fact(train[-1].values["loss"], run.log_source)
    else:
        final_loss = unknown(f"no training loss in {_log_files(run)}")
    eval_losses = {}
    for name in run.eval_sets():
        series = run.eval_series(name)
        eval_losses[name] = Fact(series[-1][2], run.log_source)
    if not eval_losses and _number(run.eval_results, "eval_loss") is not None:
        eval_losses[""] = Fact(run.eval_results["eval_loss"], EVAL_RESULTS_FILE)
    first_eval = next(iter(eval_losses.values()), None)
    final_eval = first_eval or unknown(_no_eval_reason(run))

    components = {}
    for key in run.component_loss_keys():
        if any(key in panel.keys for panel in stage.panels):
            continue  # ORPO's sft_loss/odds_ratio_loss have their own panel
        last = [v for _, _, v in run.series(key)]
        components[key] = Fact(last[-1], run.log_source)

    return RunFacts(
        run=run,
        model=model,
        method=method,
        quantization=_quantization(run, method),
        hardware=hardware,
        peak_memory=_peak_memory(run),
        steps=steps,
        epochs=epochs,
        seconds=seconds,
        samples_per_second=throughput,
        final_loss=final_loss,
        final_eval_loss=final_eval,
        components=components,
        parameters=total_params,
        stage=stage,
        eval_losses=eval_losses,
        headline=_headline(run, stage, final_loss, first_eval),
        trainable=trainable,
        wall_seconds=_first(
            (record.process_wall_seconds if record else None, RUN_RECORD_FILE),
            why=NO_RECORD
            if record is None
            else f"{RUN_RECORD_FILE} (version {record.version}) has no wall time",
        ),
        tokens_per_second=_tokens_per_second(run),
        total_tokens=_total_tokens(run),
    )


def _first(*candidates: tuple[Any, str | None], why: str) -> Fact:
    for value, source in candidates:
        if value is not None and value != "":
            return Fact(value, source)
    return unknown(why)


def _number(data: dict[str, Any] | None, key: str) -> float | None:
    value = (data or {}).get(key)
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _log_files(run: Run) -> str:
    return run.log_source or "the logs (no trainer_state.json or trainer_log.jsonl with a loss)"


def _missing_results_reason(run: Run):
    def why(key: str) -> str:
        if run.results is None:
            return (
                "no train_results.json / all_results.json with training results (LlamaFactory writes them "
                "when training ends)"
            )
        return f"{run.results_source} has no {key}"

    return why


def _no_eval_reason(run: Run) -> str:
    """What the files say about a missing evaluation (a cause only where the recipe shows it)."""
    text = f"no eval loss in {_log_files(run)} or {EVAL_RESULTS_FILE}"
    if run.record is not None and run.record.arguments:
        args = run.record.arguments
        if not args.get("eval_dataset") and not args.get("val_size"):
            return f"{text}: the recipe sets no eval_dataset and no val_size ({RUN_RECORD_FILE})"
        if args.get("eval_strategy") == "no" and not args.get("do_eval"):
            return f"{text}: the recipe sets eval_strategy: no ({RUN_RECORD_FILE})"
    return text


def _headline(run: Run, stage: Stage, final_loss: Fact, final_eval: Fact | None) -> Fact:
    """The stage's summary metric: perplexity for SFT/PT, reward accuracy for DPO, reward for PPO..."""
    if stage.is_language_modelling:
        base, what = (final_eval, "eval") if final_eval is not None else (final_loss, "train")
        if base is None or not base.known or not math.isfinite(float(base.value)):
            return unknown("no finite loss to take a perplexity of")
        try:
            return Fact(f"{what} perplexity {math.exp(float(base.value)):.4g}", base.source)
        except OverflowError:
            return Fact(f"{what} perplexity inf", base.source)
    key = stage.headline
    if key is None:
        return unknown(f"{stage.name}: no metric beside the loss")
    train = run.series(key)
    sets = run.eval_sets() or [""]
    evals = run.eval_series(sets[0], key)
    if not evals and _number(run.eval_results, eval_key("", key)) is not None:
        evals = [(0, None, float(run.eval_results[eval_key("", key)]))]
    parts = []
    if train:
        parts.append(f"{key} {train[-1][2]:.4g}")
    if evals:
        parts.append(f"eval {key} {evals[-1][2]:.4g}")
    if not parts:
        return unknown(f"{stage.name}: {key} not logged")
    return Fact("; ".join(parts), run.log_source)


def _method(run: Run) -> Fact:
    record = run.record
    card = run.model_card or {}
    adapter = run.adapter_config or {}
    dora = bool((record.argument("use_dora") if record else None) or adapter.get("use_dora"))
    if record is not None and record.finetuning_type:
        # lfkit's KL loss changes the objective: a run with it is a different method to compare.
        kl = record.kl_beta
        suffix = f" + KL (kl_beta {kl:g})" if isinstance(kl, (int, float)) and kl > 0 else ""
        name = "lora (DoRA)" if record.finetuning_type == "lora" and dora else record.finetuning_type
        return Fact(name + suffix, RUN_RECORD_FILE)
    tags = card.get("tags") or []
    for tag in tags if isinstance(tags, list) else []:
        if tag in KNOWN_METHODS:
            return Fact("lora (DoRA)" if tag == "lora" and dora else tag, MODEL_CARD_FILE)
    peft_type = adapter.get("peft_type")
    if isinstance(peft_type, str):
        name = peft_type.lower()
        return Fact("lora (DoRA)" if name == "lora" and dora else name, ADAPTER_CONFIG_FILE)
    return unknown("no lfkit_run.json, model card tag or adapter_config.json says which method")


def _quantization(run: Run, method: Fact) -> Fact:
    """The record's quantization; for full/freeze runs ``none`` follows from LlamaFactory's rules.

    LlamaFactory refuses quantization unless the method is LoRA or OFT, so a full or freeze
    run was certainly not quantized; for a LoRA run without a record nothing says.
    """
    if run.record is not None and run.record.quantization:
        return Fact(run.record.quantization, RUN_RECORD_FILE)
    if method.value in ("full", "freeze"):
        return Fact("none", f"{method.source} (LlamaFactory quantizes only LoRA/OFT runs)")
    return unknown(f"{NO_RECORD}; LlamaFactory's own files do not record quantization")


def _peak_memory(run: Run) -> Fact:
    """Peak memory per device: CUDA allocator peaks (allocated/reserved), or each process's peak RSS."""
    record = run.record
    if record is None:
        return unknown(NO_RECORD)
    gpu = [
        d for d in record.devices if d.peak_allocated_bytes is not None and d.peak_reserved_bytes is not None
    ]
    if gpu:
        parts = [
            f"{d.device} {d.peak_allocated_bytes / GIB:.2f}/{d.peak_reserved_bytes / GIB:.2f}" for d in gpu
        ]
        return Fact("; ".join(parts) + " GiB alloc/reserved", RUN_RECORD_FILE)
    rss = [d for d in record.devices if d.peak_rss_bytes is not None]
    if len(rss) > 1:
        parts = [f"rank {d.rank} {d.peak_rss_bytes / GIB:.2f}" for d in rss]
        return Fact("; ".join(parts) + " GiB RSS (CPU)", RUN_RECORD_FILE)
    if record.peak_rss_bytes is not None:
        return Fact(f"{record.peak_rss_bytes / GIB:.2f} GiB RSS (CPU)", RUN_RECORD_FILE)
    return unknown(f"{RUN_RECORD_FILE} holds no memory figures")


NO_TOKENS = (
    "no token count in the run files: Transformers counts input tokens only with "
    "include_num_input_tokens_seen: true"
)


def _tokens_per_second(run: Run) -> Fact:
    """Tokens/s as the run's files report it, preferring the figure over the whole training run."""
    results = run.results or {}
    for key in ("train_tokens_per_second", "effective_tokens_per_sec"):
        if _number(results, key) is not None:
            return Fact(results[key], f"{run.results_source} ({key})")
    for key in ("train_tokens_per_second", "throughput"):
        series = run.series(key)
        if series:
            return Fact(series[-1][2], f"{run.log_source} (last {key})")
    return unknown(NO_TOKENS)


def _total_tokens(run: Run) -> Fact:
    state = run.state or {}
    seen = state.get("num_input_tokens_seen")
    if isinstance(seen, int) and seen > 0:
        return Fact(seen, TRAINER_STATE_FILE)
    if run.record is not None and run.record.num_input_tokens_seen:
        return Fact(run.record.num_input_tokens_seen, RUN_RECORD_FILE)
    series = run.series("num_input_tokens_seen")
    if series and series[-1][2] > 0:
        return Fact(int(series[-1][2]), run.log_source)
    return unknown(NO_TOKENS)


def short_model_name(name: str) -> str:
    """A local path shows as its last component; a hub id (``org/name``: one slash) stays as it is."""
    if name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") > 1:
        return PurePosixPath(name.replace("\\", "/")).name
    return name
