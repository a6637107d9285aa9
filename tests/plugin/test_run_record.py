"""lfkit_run.json: what a real run records about itself, checked against the run's own files."""

from __future__ import annotations

import json
import math
import os
from importlib import metadata

import pytest
from conftest import tiny_recipe
from lfkit.plugin import run_record
from lfkit.plugin.run_record_schema import (
    RECORD_VERSION,
    DeviceStats,
    RunRecord,
    RunRecordError,
    read_run_record,
)


def _write_sharegpt(dataset_dir, name="rec"):
    rows = [
        {
            "messages": [
                {"role": "user", "content": f"Hello {i}, how are you?"},
                {"role": "assistant", "content": f"I am fine, thank you {i}."},
            ]
        }
        for i in range(8)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / f"{name}.json").write_text(json.dumps(rows))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    entry = {"file_name": f"{name}.json", "formatting": "sharegpt", "columns": {"messages": "messages"}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps({name: {**entry, "tags": tags}}))


@pytest.mark.train
def test_lora_run_writes_a_record_that_matches_its_files(tiny_model, run_train, tmp_path):
    from safetensors import safe_open

    _write_sharegpt(tmp_path / "data")
    run = run_train(tiny_recipe(tiny_model, tmp_path / "data", "rec", tmp_path / "out")).check()
    raw = json.loads((run.output_dir / "lfkit_run.json").read_text())
    record = read_run_record(run.output_dir)
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    results = json.loads((run.output_dir / "train_results.json").read_text())

    assert raw["lfkit_run_record"] == record.version == RECORD_VERSION
    assert (record.recipe_path, record.recipe_overrides) == (str(tmp_path / "recipe_0.yaml"), ())
    assert (record.accelerator, record.gpu_count) == ("cpu", 0)
    assert record.hardware_summary == run_record.cpu_name()
    assert record.world_size == 1
    assert record.cpu_count == os.cpu_count() and record.load_average_1m_at_end >= 0
    assert record.memory_kind == "cpu_rss"
    total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 50 * 2**20 < record.peak_rss_bytes < total_ram
    [device] = record.devices  # on CPU too, each rank's own peak
    assert (device.rank, device.device, device.peak_rss_bytes) == (0, "cpu", record.peak_rss_bytes)
    for name in ("llamafactory", "transformers", "torch", "peft", "trl", "lfkit"):
        assert record.versions[name] == metadata.version(name)
    assert (record.stage, record.finetuning_type, record.quantization) == ("sft", "lora", "none")
    assert record.model_name_or_path == str(tiny_model)
    assert (record.global_step, record.epoch) == (state["global_step"], state["epoch"])
    # The Trainer times the same span (train begin to end) with its own clock.
    assert record.train_wall_seconds == pytest.approx(results["train_runtime"], abs=1.0)
    assert record.process_wall_seconds > record.train_wall_seconds  # model loading included

    # The arguments are the recipe as LlamaFactory parsed it, defaults and resolved keys included.
    args = record.arguments
    assert (args["learning_rate"], args["lora_rank"], args["dataset"], args["max_steps"]) == (
        1e-3,
        4,
        ["rec"],  # LlamaFactory splits the comma-separated dataset names into a list
        4,
    )
    assert args["lora_alpha"] == 8  # LlamaFactory's default: twice the rank
    assert args["pref_loss"] == "sigmoid" and args["lr_scheduler_type"] == "linear"  # enum -> its value
    assert "output_dir" not in args and not [k for k in args if "token" in k and k.endswith("_token")]

    # Trainable parameters are exactly the LoRA weights the run saved.
    with safe_open(run.output_dir / "adapter_model.safetensors", "pt") as f:
        names = f.keys()
        saved = sum(math.prod(f.get_slice(name).get_shape()) for name in names)
    assert record.parameters_trainable == saved
    assert record.parameters_total > saved


def test_recipe_from_argv():
    argv = ["llamafactory-cli", "r.yaml", "learning_rate=1e-4", "--flag"]
    assert run_record.recipe_from_argv(argv) == {
        "path": os.path.abspath("r.yaml"),
        "overrides": ["learning_rate=1e-4"],
    }
    assert run_record.recipe_from_argv(["python", "-c"]) == {"path": None, "overrides": []}


def test_hardware_summary_counts_gpus_by_name():
    gpus = [{"device": f"cuda:{i}", "name": "NVIDIA H100 80GB HBM3"} for i in range(2)]
    assert run_record.hardware_summary(gpus) == "2x NVIDIA H100 80GB HBM3"
    cpus = [{"device": "cpu", "name": "cpu: X (2 logical cores)"}] * 2
    assert run_record.hardware_summary(cpus) == "cpu: X (2 logical cores), 2 processes"


def test_quantization_of_reads_the_models_quantization_config():
    from transformers import BitsAndBytesConfig, Qwen2Config

    class Loaded:  # what the callback reads: the model's config, as transformers attaches it
        def __init__(self, config):
            self.config = config

    plain = Qwen2Config()
    assert run_record.quantization_of(Loaded(plain)) == "none"
    q4 = Qwen2Config()
    q4.quantization_config = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4")
    assert run_record.quantization_of(Loaded(q4)) == "bitsandbytes 4-bit nf4"
    q8 = Qwen2Config()
    q8.quantization_config = BitsAndBytesConfig(load_in_8bit=True)
    assert run_record.quantization_of(Loaded(q8)) == "bitsandbytes 8-bit"


def _record(**changes) -> RunRecord:
    fields = dict(
        written_at="2026-01-01T00:00:00+00:00",
        hardware_summary="2x NVIDIA H100 80GB HBM3",
        accelerator="cuda",
        gpu_count=2,
        devices=(
            DeviceStats(0, "cuda:0", "NVIDIA H100 80GB HBM3", "a", 12 * 2**30, 14 * 2**30, 9 * 2**30),
            DeviceStats(1, "cuda:1", "NVIDIA H100 80GB HBM3", "a", 11 * 2**30, 13 * 2**30, 8 * 2**30),
        ),
        memory_kind="cuda",
        peak_rss_bytes=9 * 2**30,
        world_size=2,
        stage="dpo",
        finetuning_type="lora",
        arguments={"learning_rate": 5e-6, "pref_loss": "sigmoid", "lora_target": "all"},
    )
    return RunRecord(**(fields | changes))


def test_write_record_is_atomic_and_leaves_no_temp_file(tmp_path):
    record = _record()
    path = run_record.write_record(tmp_path / "out", record)
    assert read_run_record(path) == record
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["lfkit_run.json"]


def test_reader_checks_the_version_and_names_a_bad_field(tmp_path):
    data = json.loads(_record().to_json())
    data["lfkit_run_record"] = RECORD_VERSION + 1
    with pytest.raises(
        RunRecordError, match=f"record version {RECORD_VERSION + 1} was written by a newer lfkit"
    ):
        RunRecord.from_json(json.dumps(data))
    data["lfkit_run_record"] = RECORD_VERSION
    data["memory"]["per_device"][1]["peak_reserved_bytes"] = "13 GiB"
    with pytest.raises(
        RunRecordError, match=r"field 'memory\.per_device\[1\]\.peak_reserved_bytes': expected int"
    ):
        RunRecord.from_json(json.dumps(data))
    (tmp_path / "lfkit_run.json").write_text("{")
    with pytest.raises(RunRecordError, match="lfkit_run.json: invalid JSON"):
        read_run_record(tmp_path)


def test_reader_reads_a_version_1_record():
    """The layout lfkit wrote before version 2 (results/ held such records): fields added later are None."""
    v1 = {
        "lfkit_run_record": 1,
        "written_at": "2026-11-23T12:50:00+00:00",
        "train_started_at": "2026-11-23T12:49:53+00:00",
        "train_wall_seconds": 6.7,
        "hardware": {
            "accelerator": "cpu",
            "gpu_count": 0,
            "devices": [{"rank": 0, "device": "cpu", "name": "cpu: AMD EPYC (2 logical cores)"}],
            "summary": "cpu: AMD EPYC (2 logical cores)",
        },
        "world_size": 1,
        "load_average_1m_at_end": 0.93,
        "cpu_count": 2,
        "memory": {"kind": "cpu_rss", "peak_rss_bytes": 987654321},
        "versions": {"lfkit": "0.1.0", "deepspeed": None},
        "recipe": {"path": "/r.yaml", "overrides": []},
        "model": {"name_or_path": "/m", "parameters_total": 723000, "parameters_trainable": 8192},
        "stage": "sft",
        "finetuning_type": "lora",
        "quantization": "none",
        "kl_beta": 0.0,
        "global_step": 51,
        "epoch": 3.0,
    }
    record = RunRecord.from_json(json.dumps(v1))
    assert (record.version, record.stage, record.parameters_trainable) == (1, "sft", 8192)
    assert record.devices == (DeviceStats(0, "cpu", "cpu: AMD EPYC (2 logical cores)"),)
    assert record.arguments == {} and record.process_wall_seconds is None


def test_parsed_arguments_leave_out_locations_and_secrets():
    from dataclasses import dataclass, field
    from enum import Enum

    class Strategy(str, Enum):
        NO = "no"

    @dataclass
    class Args:
        learning_rate: float = 1e-3
        output_dir: str = "/where"
        hf_hub_token: str = "secret"
        swanlab_api_key: str = "secret"
        eval_strategy: Strategy = Strategy.NO
        lora_target: list = field(default_factory=lambda: ["q_proj", "v_proj"])
        _private: int = 1
        derived: int = field(default=3, init=False)

    assert run_record.parsed_arguments(Args(), None) == {
        "learning_rate": 1e-3,
        "eval_strategy": "no",
        "lora_target": ["q_proj", "v_proj"],
    }


def test_a_workflow_llamafactory_changed_is_left_unwrapped_with_a_warning():
    from lfkit.plugin.workflows import with_lfkit_run

    def run_new(model_args, data_args, training_args, finetuning_args):  # no callbacks parameter
        return "ran"

    with pytest.warns(UserWarning, match="takes no callbacks; this run gets no lfkit_run.json"):
        wrapped = with_lfkit_run(run_new)
    assert wrapped is run_new


def test_gpu_count_is_the_distinct_gpus_the_ranks_used():
    """Ranks on two nodes: cuda:0 and cuda:1 on each, plus a second rank sharing node-a's cuda:0."""
    from types import SimpleNamespace

    name = "NVIDIA H100 80GB HBM3"
    stats = {"name": name, "peak_allocated_bytes": 1, "peak_reserved_bytes": 2, "peak_rss_bytes": 3}
    placement = [("a", 0), ("a", 1), ("b", 0), ("b", 1), ("a", 0)]
    devices = [{"device": f"cuda:{i}", "node": node, **stats} for node, i in placement]
    callback = run_record.RunRecordCallback(SimpleNamespace(stage="sft", finetuning_type="lora"))
    args = SimpleNamespace(world_size=len(devices))
    state = SimpleNamespace(global_step=4, epoch=1.0)
    record = callback.build(args, state, None, devices, ended=0.0)
    assert record.gpu_count == 4
    assert record.hardware_summary == f"4x {name}"
    assert len(record.devices) == 5  # memory stays per rank
    assert RunRecord.from_json(record.to_json()) == record
    cpus = [{"device": "cpu", "name": "cpu: X (2 logical cores)", "peak_rss_bytes": 3}] * 2
    record = callback.build(args, state, None, cpus, ended=0.0)
    assert (record.accelerator, record.gpu_count) == ("cpu", 0)


def test_parameter_counts_use_the_size_of_zero3_partitioned_parameters():
    import torch
    from lfkit.plugin.params import param_numel

    partitioned = torch.nn.Parameter(torch.empty(0))  # what ZeRO-3 leaves in the module
    partitioned.ds_numel = 12
    frozen = torch.nn.Parameter(torch.zeros(2, 3), requires_grad=False)
    assert (param_numel(partitioned), param_numel(frozen)) == (12, 6)

    model = torch.nn.Module()
    model.a, model.b = partitioned, frozen
    assert run_record.count_parameters(model) == (18, 12)
