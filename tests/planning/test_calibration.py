"""``lfkit plan calibrate``: the fit, its residuals, and GPU runs recorded with lfkit."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from lfkit.plugin.run_record_schema import DeviceStats, RunRecord
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.calibration import calibrate
from lfkit.planning.measurements import (
    TEAM_THROUGHPUT,
    MemoryMeasurement,
    ThroughputMeasurement,
    gpu_run_measurements,
    steady_samples_per_s,
)
from lfkit.planning.throughput import load_constants

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(scope="module")
def report():
    return calibrate(REPO)


def test_stored_constants_are_the_fit_of_todays_measurements(report):
    # lfkit plan uses the stored constants; after new measurements: lfkit plan calibrate --write.
    stored, fresh = load_constants(), report.constants
    assert stored.fitted == fresh.fitted and stored.liger_speedup == fresh.liger_speedup
    assert dict(stored.mfu) == pytest.approx(dict(fresh.mfu), rel=1e-3)  # the fit, to its stored 4 decimals
    assert stored.moe_efficiency == pytest.approx(fresh.moe_efficiency, rel=1e-3)


def test_fitted_constants_are_the_ones_measurements_determine(report):
    c = report.constants
    assert set(c.fitted) == {"mfu:turing", "mfu:ampere-ada", "moe_efficiency"}
    assert len(c.fitted) < len(report.throughput) == len(TEAM_THROUGHPUT) == 7
    assert c.mfu_for("datacenter") == 0.40  # no dense datacenter measurement: the stated assumption
    assert any(name == "mfu:datacenter" for name, _ in report.fixed)
    assert all(0.02 <= v <= 1 for _, v in c.mfu) and 0.02 <= c.moe_efficiency <= 1


def test_every_measured_throughput_is_within_30_percent(report):
    for row in report.throughput:
        assert abs(row.residual) <= 0.30, (row.key, row.residual)
        if row.measured_range:
            low, high = row.measured_range
            assert low <= row.predicted <= high, row.key


def test_30b_full_zero3_vs_lora_zero2_ratio(report):
    rows = {r.key: r for r in report.throughput}
    full = rows["qwen3-30b-a3b full, 8 gpus, zero-3"]
    lora = rows["qwen3-30b-a3b lora r64, 8 gpus, zero-2"]
    measured, predicted = full.measured / lora.measured, full.predicted / lora.predicted
    assert predicted > 1  # full ZeRO-3 is the slow path
    assert measured / 1.5 <= predicted <= measured * 1.5


def test_leave_one_out_is_reported_where_the_rest_determine_the_constants(report):
    rows = {r.key: r for r in report.throughput}
    # The only RTX 6000 Ada measurement sets its class's MFU alone: no out-of-sample figure.
    assert rows["chatts-14b lora r16, 2x rtx-6000-ada, ddp"].loo_residual is None
    others = [r for r in report.throughput if r.loo_residual is not None]
    assert len(others) == 6 and all(r.loo_predicted > 0 for r in others)


def test_memory_and_ratio_checks_are_reported(report):
    assert len(report.memory) == 5 and len(report.ratios) == 4
    ratios = {r.key: r for r in report.ratios}
    assert abs(ratios["liger, checkpointing on: memory"].residual) < 0.2
    assert ratios["liger, checkpointing off: throughput"].predicted > 1.3


def test_trainer_log_timing(tmp_path):
    lines = [
        {"current_steps": 5, "elapsed_time": "0:00:20"},
        {"current_steps": 10, "elapsed_time": "0:00:40", "loss": 1.0},
        {"current_steps": 30, "elapsed_time": "1 day, 0:02:00"},
    ]
    path = tmp_path / "trainer_log.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    # LlamaFactory's elapsed_time is str(timedelta): "1 day, 0:02:00" after a day.
    assert steady_samples_per_s(path, 16) == pytest.approx(25 * 16 / (86400 + 120 - 20))
    path.write_text(json.dumps(lines[0]) + "\n")
    assert steady_samples_per_s(path, 16) is None  # one timed step says nothing about the rate


def _gpu_run(directory: Path, *, gpu="NVIDIA H100 80GB HBM3", steps=(5, 30), seconds=(20, 120)) -> Path:
    """A run directory as lfkit's plugin and LlamaFactory write it (lfkit_run.json, trainer_log.jsonl)."""
    directory.mkdir(parents=True)
    record = RunRecord(  # written by the plugin's own schema, as a real run writes it
        written_at="2026-11-30T10:00:00+00:00",
        hardware_summary=f"1x {gpu}",
        accelerator="cuda",
        gpu_count=1,
        devices=(
            DeviceStats(
                rank=0,
                device="cuda:0",
                name=gpu,
                peak_allocated_bytes=20 * 2**30,
                peak_reserved_bytes=23 * 2**30,
            ),
        ),
        memory_kind="cuda",
        peak_rss_bytes=6 * 2**30,
        world_size=1,
        recipe_path="/home/someone/lfkit/recipes/h100_lora.yaml",
        recipe_overrides=("max_steps=30", "cutoff_len=1024", "model_name_or_path=/tmp/qwen2.5-7b-random"),
        model_name_or_path="/tmp/qwen2.5-7b-random",
        parameters_total=7_655_986_688,
        finetuning_type="lora",
    )
    (directory / "lfkit_run.json").write_text(record.to_json())
    log = [
        {"current_steps": s, "total_steps": 30, "loss": 1.0, "elapsed_time": f"0:{t // 60:02d}:{t % 60:02d}"}
        for s, t in zip(steps, seconds, strict=True)
    ]
    (directory / "trainer_log.jsonl").write_text("".join(json.dumps(x) + "\n" for x in log))
    return directory


def test_gpu_runs_become_measurements_and_calibrate_their_class(tmp_path):
    runs = tmp_path / "gpu"
    _gpu_run(runs / "h100-lora")
    _gpu_run(runs / "v100-run", gpu="Tesla V100-SXM2-32GB")
    cpu = _gpu_run(runs / "cpu-run")
    text = (cpu / "lfkit_run.json").read_text().replace('"accelerator": "cuda"', '"accelerator": "cpu"')
    (cpu / "lfkit_run.json").write_text(text)
    (runs / "old-lfkit").mkdir()  # a record from a future lfkit is skipped, saying why
    (runs / "old-lfkit" / "lfkit_run.json").write_text('{"lfkit_run_record": 99}')
    found, skipped = gpu_run_measurements(runs, REPO)
    assert len(skipped) == 3 and any("not one model in the planner's table" in s for s in skipped)
    assert any("not a GPU run" in s for s in skipped) and any("upgrade lfkit" in s for s in skipped)
    (rate,) = [m for m in found if isinstance(m, ThroughputMeasurement)]
    assert rate.value == pytest.approx(25 * 16 / 100)  # 25 steps of batch 4 x accumulation 4 in 100 s
    assert dict(rate.setting.values)["cutoff_len"] == 1024 and rate.setting.gpu == "h100x1"
    (memory,) = [m for m in found if isinstance(m, MemoryMeasurement)]
    assert memory.kind == "torch-reserved" and memory.low_gib == 23
    report = calibrate(REPO, runs)
    assert "mfu:datacenter" in report.constants.fitted  # a dense run on an H100 now sets it
    run_row = [r for r in report.throughput if r.key.startswith("run h100-lora")]
    assert run_row and abs(run_row[0].residual) < 0.05
    assert any(m.key.startswith("run h100-lora") and m.kind == "torch-reserved" for m in report.memory)


def test_calibrate_command(tmp_path):
    result = runner.invoke(app, ["plan", "calibrate", "--root", str(REPO)], terminal_width=200)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert (
        "fitted mfu:turing" in text
        and "leave-one-out" in text
        and "7 measurements, 3 fitted constants" in text
    )
    data = json.loads(runner.invoke(app, ["plan", "calibrate", "--root", str(REPO), "--json"]).stdout)
    assert len(data["throughput"]) == 7 and data["constants"]["fitted"]
    # --write stores the constants in the checkout given as --root.
    root = tmp_path / "checkout"
    (root / "lfkit" / "planning").mkdir(parents=True)
    shutil.copytree(REPO / "recipes", root / "recipes")
    result = runner.invoke(app, ["plan", "calibrate", "--root", str(root), "--write"])
    assert result.exit_code == 0, result.output
    stored = json.loads((root / "lfkit/planning/calibration.json").read_text())
    assert (
        stored["constants"] == json.loads((REPO / "lfkit/planning/calibration.json").read_text())["constants"]
    )
    missing = runner.invoke(app, ["plan", "calibrate", "--root", str(tmp_path)])
    assert missing.exit_code == 2 and "has no recipes/" in missing.output
