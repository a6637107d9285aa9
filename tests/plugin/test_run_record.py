"""lfkit_run.json: what a real run records about itself, checked against the run's own files."""

from __future__ import annotations

import json
import math
import os
from importlib import metadata

import pytest
from conftest import tiny_recipe
from lfkit.plugin import run_record


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
    record = json.loads((run.output_dir / "lfkit_run.json").read_text())
    state = json.loads((run.output_dir / "trainer_state.json").read_text())
    results = json.loads((run.output_dir / "train_results.json").read_text())

    assert record["lfkit_run_record"] == run_record.RECORD_VERSION
    assert record["recipe"] == {"path": str(tmp_path / "recipe_0.yaml"), "overrides": []}
    assert record["hardware"]["accelerator"] == "cpu" and record["hardware"]["gpu_count"] == 0
    assert record["hardware"]["summary"] == run_record.cpu_name()
    assert record["world_size"] == 1
    assert record["cpu_count"] == os.cpu_count() and record["load_average_1m_at_end"] >= 0
    assert record["memory"]["kind"] == "cpu_rss" and "per_device" not in record["memory"]
    total_ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    assert 50 * 2**20 < record["memory"]["peak_rss_bytes"] < total_ram
    for name in ("llamafactory", "transformers", "torch", "peft", "trl", "lfkit"):
        assert record["versions"][name] == metadata.version(name)
    assert (record["stage"], record["finetuning_type"], record["quantization"]) == ("sft", "lora", "none")
    assert record["model"]["name_or_path"] == str(tiny_model)
    assert (record["global_step"], record["epoch"]) == (state["global_step"], state["epoch"])
    # The Trainer times the same span (train begin to end) with its own clock.
    assert record["train_wall_seconds"] == pytest.approx(results["train_runtime"], abs=1.0)

    # Trainable parameters are exactly the LoRA weights the run saved.
    with safe_open(run.output_dir / "adapter_model.safetensors", "pt") as f:
        names = f.keys()
        saved = sum(math.prod(f.get_slice(name).get_shape()) for name in names)
    assert record["model"]["parameters_trainable"] == saved
    assert record["model"]["parameters_total"] > saved


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


def test_write_record_is_atomic_and_leaves_no_temp_file(tmp_path):
    path = run_record.write_record(tmp_path / "out", {"a": 1})
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["lfkit_run.json"]


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
    assert record["hardware"]["gpu_count"] == 4
    assert record["hardware"]["summary"] == f"4x {name}"
    assert len(record["memory"]["per_device"]) == 5  # memory stays per rank
    cpus = [{"device": "cpu", "name": "cpu: X (2 logical cores)", "peak_rss_bytes": 3}] * 2
    record = callback.build(args, state, None, cpus, ended=0.0)
    assert (record["hardware"]["accelerator"], record["hardware"]["gpu_count"]) == ("cpu", 0)


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
