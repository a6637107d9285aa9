"""A real two-process ``torchrun`` launch (DDP over gloo on the CPU).

It shows the two claims that only a multi-process run can: the plugin is active on every rank
(its keys parse and act there, through the ``.pth`` hook alone), and a rank whose batches carry
no time series still runs the encoder, so DDP's gradient all-reduce does not fail or hang.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe
from safetensors.torch import load_file

from lfkit.tiny_chatts import build_tiny_chatts

pytestmark = pytest.mark.train

DDP = {"FORCE_TORCHRUN": "1", "NPROC_PER_NODE": "2", "MASTER_ADDR": "127.0.0.1"}


def _alternating_rows(dataset_dir):
    """Rows with series at even indices and text-only rows at odd ones.

    With ``disable_shuffling`` and one sample per device, DDP's sampler gives rank 0 the even
    rows and rank 1 the odd ones: rank 1 never sees a series.
    """
    rows = []
    for i in range(8):
        if i % 2:
            rows.append({"input": f"Say hello {i}.", "output": "Hello there!", "timeseries": []})
        else:
            series = [float((i + j) % 7) - 3.0 for j in range(9 + i)]
            rows.append({"input": "Describe <ts><ts/>.", "output": "It oscillates.", "timeseries": [series]})
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "alt.json").write_text(json.dumps(rows))
    columns = {"prompt": "input", "response": "output", "timeseries": "timeseries"}
    (dataset_dir / "dataset_info.json").write_text(
        json.dumps({"alt": {"file_name": "alt.json", "columns": columns}})
    )


def test_two_rank_ddp_with_text_only_rank_trains_the_encoder(run_train, tmp_path):
    model = build_tiny_chatts(tmp_path / "model")
    _alternating_rows(tmp_path / "data")
    recipe = tiny_recipe(
        model,
        tmp_path / "data",
        "alt",
        tmp_path / "out",
        template="chatts",
        trust_remote_code=True,
        finetuning_type="full",
        lora_target=None,
        lora_rank=None,
        per_device_train_batch_size=1,
        disable_shuffling=True,
        max_steps=3,
        ddp_backend="gloo",
        timeseries_sft_lr=5.0e-3,
    )
    run = run_train(recipe, env=DDP, timeout=900).check()
    assert "world size: 2" in run.log

    record = json.loads((run.output_dir / "lfkit_run.json").read_text())
    assert record["world_size"] == 2
    assert len(record["hardware"]["devices"]) == 2

    # the plugin key acted on the ranks: the encoder got its own lr groups
    groups = json.loads((run.output_dir / "lfkit_param_groups.json").read_text())["groups"]
    assert {g["lr"] for g in groups if g["group"].startswith("timeseries")} == {5.0e-3}

    before, after = load_file(model / "model.safetensors"), load_file(run.output_dir / "model.safetensors")
    encoder = [k for k in before if k.startswith("ts_encoder.")]
    assert encoder and all(not before[k].equal(after[k]) for k in encoder)


def test_two_rank_ddp_kl_beta(tiny_model, run_train, tmp_path):
    rows = [
        {
            "instruction": f"Greet person {i}.",
            "input": "",
            "output": f"Hello, person {i}! Lovely to meet you.",
        }
        for i in range(8)
    ]
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "greet.json").write_text(json.dumps(rows))
    (tmp_path / "data" / "dataset_info.json").write_text(json.dumps({"greet": {"file_name": "greet.json"}}))
    recipe = tiny_recipe(
        tiny_model, tmp_path / "data", "greet", tmp_path / "out", ddp_backend="gloo", max_steps=3, kl_beta=0.1
    )
    run = run_train(recipe, env=DDP, timeout=900).check()
    assert "world size: 2" in run.log
    log = [json.loads(line) for line in (run.output_dir / "trainer_log.jsonl").read_text().splitlines()]
    steps = [r for r in log if "loss" in r]
    assert len(steps) == 3
    for r in steps:  # the KL term is logged, and averaged across ranks consistently with the loss
        assert r["loss"] == pytest.approx(r["ce_loss"] + 0.1 * r["kl_loss"], rel=1e-3, abs=1e-4)
    assert json.loads((run.output_dir / "lfkit_run.json").read_text())["world_size"] == 2
