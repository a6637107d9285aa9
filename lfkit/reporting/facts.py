"""The facts of one run that the report's table shows, each with its source or why it is unknown.

A :class:`Fact` either has a value (and the file it came from) or no value and the reason,
which the report prints as a footnote. Nothing is estimated: a number that no file holds
stays empty.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from lfkit.reporting.runs import (
    ADAPTER_CONFIG_FILE,
    MODEL_CARD_FILE,
    RUN_RECORD_FILE,
    TRAINER_STATE_FILE,
    Run,
)

NO_RECORD = (
    f"no {RUN_RECORD_FILE}: the run was made without the lfkit plugin or with lfkit_run_record: false, "
    "or it stopped before the end"
)
KNOWN_METHODS = ("lora", "oft", "freeze", "full")
"""LlamaFactory's finetuning types; its model card carries the one used as a tag."""


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
    """The table row of one run."""

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


def run_facts(run: Run) -> RunFacts:
    """Collect a run's table facts from its files (see :mod:`lfkit.reporting.runs`)."""
    record = run.record or {}
    card = run.model_card or {}
    state = run.state or {}
    results = run.results or {}

    model = _first(
        (record.get("model", {}).get("name_or_path"), RUN_RECORD_FILE),
        ((run.adapter_config or {}).get("base_model_name_or_path"), ADAPTER_CONFIG_FILE),
        (card.get("base_model"), MODEL_CARD_FILE),
        why="no lfkit_run.json, adapter_config.json or model card README.md names the base model",
    )
    method = _method(run, record, card)
    quantization = _quantization(record, method)

    hardware = _first(
        (record.get("hardware", {}).get("summary"), RUN_RECORD_FILE),
        why=NO_RECORD,
    )
    peak = _peak_memory(record)
    params = _first((record.get("model", {}).get("parameters_total"), RUN_RECORD_FILE), why=NO_RECORD)

    missing_state = f"{TRAINER_STATE_FILE} missing or unreadable"
    missing_results = "no train_results.json / all_results.json (training did not finish)"
    steps = _first((state.get("global_step"), TRAINER_STATE_FILE), why=missing_state)
    epochs = _first(
        (state.get("epoch"), TRAINER_STATE_FILE),
        (results.get("epoch"), run.results_source),
        why=missing_state,
    )
    seconds = _first((results.get("train_runtime"), run.results_source), why=missing_results)
    throughput = _first((results.get("train_samples_per_second"), run.results_source), why=missing_results)

    if run.train_log:
        final_loss = Fact(run.train_log[-1].values["loss"], run.log_source)
    else:
        final_loss = unknown(
            "no training loss was logged (trainer_state.json and trainer_log.jsonl hold none)"
        )
    if run.eval_log:
        final_eval = Fact(run.eval_log[-1].eval_loss, run.log_source)
    elif results.get("eval_loss") is not None:
        final_eval = Fact(results["eval_loss"], run.results_source)
    else:
        final_eval = unknown("no evaluation in this run (no eval_dataset/val_size, or eval_strategy: no)")

    components = {}
    for key in run.component_loss_keys():
        last = [p.values[key] for p in run.train_log if key in p.values]
        components[key] = Fact(last[-1], run.log_source)

    return RunFacts(
        run=run,
        model=model,
        method=method,
        quantization=quantization,
        hardware=hardware,
        peak_memory=peak,
        steps=steps,
        epochs=epochs,
        seconds=seconds,
        samples_per_second=throughput,
        final_loss=final_loss,
        final_eval_loss=final_eval,
        components=components,
        parameters=params,
    )


def _first(*candidates: tuple[Any, str | None], why: str) -> Fact:
    for value, source in candidates:
        if value is not None and value != "":
            return Fact(value, source)
    return unknown(why)


def _method(run: Run, record: dict, card: dict) -> Fact:
    if record.get("finetuning_type"):
        # lfkit's KL loss changes the objective: a run with it is a different method to compare.
        kl = record.get("kl_beta")
        suffix = f" + KL (kl_beta {kl:g})" if isinstance(kl, (int, float)) and kl > 0 else ""
        return Fact(record["finetuning_type"] + suffix, RUN_RECORD_FILE)
    tags = card.get("tags") or []
    for tag in tags if isinstance(tags, list) else []:
        if tag in KNOWN_METHODS:
            return Fact(tag, MODEL_CARD_FILE)
    peft_type = (run.adapter_config or {}).get("peft_type")
    if isinstance(peft_type, str):
        return Fact(peft_type.lower(), ADAPTER_CONFIG_FILE)
    return unknown("no lfkit_run.json, model card tag or adapter_config.json says which method")


def _quantization(record: dict, method: Fact) -> Fact:
    """The record's quantization; for full/freeze runs ``none`` follows from LlamaFactory's rules.

    LlamaFactory refuses quantization unless the method is LoRA or OFT, so a full or freeze
    run was certainly not quantized; for a LoRA run without a record nothing says.
    """
    if record.get("quantization"):
        return Fact(record["quantization"], RUN_RECORD_FILE)
    if method.value in ("full", "freeze"):
        return Fact("none", f"{method.source} (LlamaFactory quantizes only LoRA/OFT runs)")
    return unknown(f"{NO_RECORD}; LlamaFactory's own files do not record quantization")


def _peak_memory(record: dict) -> Fact:
    memory = record.get("memory")
    if not isinstance(memory, dict):
        return unknown(NO_RECORD)
    devices = memory.get("per_device") or []
    if devices:
        gib = 2**30
        parts = [
            f"{d.get('device', '?')} "
            f"{d['peak_allocated_bytes'] / gib:.2f}/{d['peak_reserved_bytes'] / gib:.2f}"
            for d in devices
            if isinstance(d, dict) and "peak_allocated_bytes" in d and "peak_reserved_bytes" in d
        ]
        if parts:
            return Fact("; ".join(parts) + " GiB alloc/reserved", RUN_RECORD_FILE)
    if memory.get("peak_rss_bytes") is not None:
        return Fact(f"{memory['peak_rss_bytes'] / 2**30:.2f} GiB RSS (CPU)", RUN_RECORD_FILE)
    return unknown(f"{RUN_RECORD_FILE} holds no memory figures")


def short_model_name(name: str) -> str:
    """A local path shows as its last component; a hub id (``org/name``: one slash) stays as it is."""
    if name.startswith(("/", "./", "../", "~")) or "\\" in name or name.count("/") > 1:
        return PurePosixPath(name.replace("\\", "/")).name
    return name
