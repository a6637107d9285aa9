"""Run facts from an lfkit_run.json as a multi-GPU run writes it (no GPU here: the record is written out)."""

from __future__ import annotations

from lfkit.plugin.run_record_schema import DeviceStats, RunRecord

from lfkit.reporting.facts import run_facts, short_model_name
from lfkit.reporting.runs import load_run


def test_gpu_record_fills_hardware_memory_and_method(tmp_path):
    gpu = "NVIDIA H100 80GB HBM3"
    record = RunRecord(
        written_at="2026-01-01T00:00:00+00:00",
        hardware_summary=f"2x {gpu}",
        accelerator="cuda",
        gpu_count=2,
        devices=(
            DeviceStats(0, "cuda:0", gpu, "a", 12 * 2**30, 14 * 2**30, 9 * 2**30),
            DeviceStats(1, "cuda:1", gpu, "a", int(11.5 * 2**30), 13 * 2**30, 8 * 2**30),
        ),
        memory_kind="cuda",
        peak_rss_bytes=9 * 2**30,
        model_name_or_path="Qwen/Qwen2.5-7B-Instruct",
        parameters_total=7_600_000_000,
        parameters_trainable=40_000_000,
        process_wall_seconds=600.0,
        stage="sft",
        finetuning_type="lora",
        quantization="bitsandbytes 4-bit nf4",
        kl_beta=0.1,
        arguments={"use_dora": True},
    )
    (tmp_path / "lfkit_run.json").write_text(record.to_json())
    facts = run_facts(load_run(tmp_path))
    assert facts.hardware.value == f"2x {gpu}"
    assert facts.peak_memory.value == "cuda:0 12.00/14.00; cuda:1 11.50/13.00 GiB alloc/reserved"
    assert facts.method.value == "lora (DoRA) + KL (kl_beta 0.1)"
    assert facts.quantization.value == "bitsandbytes 4-bit nf4"
    assert facts.model.value == "Qwen/Qwen2.5-7B-Instruct"
    assert (facts.trainable.value, facts.parameters.value, facts.wall_seconds.value) == (40e6, 7.6e9, 600.0)
    assert facts.stage.name == "SFT"
    # No trainer files at all: every number is unknown, with the reason.
    assert not facts.steps.known and "trainer_state.json" in facts.steps.why


def test_short_model_name_keeps_hub_ids_and_shortens_paths():
    assert short_model_name("Qwen/Qwen2.5-7B-Instruct") == "Qwen/Qwen2.5-7B-Instruct"
    assert short_model_name("/models/qwen7b") == "qwen7b"
    assert short_model_name("outputs/sample/tiny-model") == "tiny-model"
