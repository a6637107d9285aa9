"""Run facts from an lfkit_run.json as a multi-GPU run writes it (no GPU here: the record is written out)."""

from __future__ import annotations

import json

from lfkit.reporting.facts import run_facts, short_model_name
from lfkit.reporting.runs import load_run


def test_gpu_record_fills_hardware_memory_and_method(tmp_path):
    record = {
        "lfkit_run_record": 1,
        "hardware": {"accelerator": "cuda", "gpu_count": 2, "summary": "2x NVIDIA H100 80GB HBM3"},
        "memory": {
            "kind": "cuda",
            "per_device": [
                {"device": "cuda:0", "peak_allocated_bytes": 12 * 2**30, "peak_reserved_bytes": 14 * 2**30},
                {"device": "cuda:1", "peak_allocated_bytes": 11.5 * 2**30, "peak_reserved_bytes": 13 * 2**30},
            ],
            "peak_rss_bytes": 8 * 2**30,
        },
        "model": {"name_or_path": "Qwen/Qwen2.5-7B-Instruct", "parameters_total": 7_600_000_000},
        "finetuning_type": "lora",
        "quantization": "bitsandbytes 4-bit nf4",
        "kl_beta": 0.1,
    }
    (tmp_path / "lfkit_run.json").write_text(json.dumps(record))
    facts = run_facts(load_run(tmp_path))
    assert facts.hardware.value == "2x NVIDIA H100 80GB HBM3"
    assert facts.peak_memory.value == "cuda:0 12.00/14.00; cuda:1 11.50/13.00 GiB alloc/reserved"
    assert facts.method.value == "lora + KL (kl_beta 0.1)"
    assert facts.quantization.value == "bitsandbytes 4-bit nf4"
    assert facts.model.value == "Qwen/Qwen2.5-7B-Instruct"
    # No trainer files at all: every number is unknown, with the reason.
    assert not facts.steps.known and "trainer_state.json" in facts.steps.why


def test_short_model_name_keeps_hub_ids_and_shortens_paths():
    assert short_model_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert short_model_name("/models/qwen7b") == "qwen7b"
    assert short_model_name("outputs/sample/tiny-model") == "tiny-model"
