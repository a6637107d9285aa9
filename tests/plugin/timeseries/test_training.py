"""End-to-end ``llamafactory-cli train`` runs of the tiny ChatTS models on ChatTS-format data.

Five training runs of the ChatTS-14B-style tiny model (full, freeze, LoRA+ with the encoder
under LoRA, LoRA with the encoder fully trained through ``additional_target``, and
``train_timeseries_modules: false``), each on single-turn and multi-turn ChatTS data (text-only
rows mixed in) that ``lfkit data convert --kind timeseries`` turned into a LlamaFactory
dataset; the full runs end in ``save_pretrained``, which transformers 5 cannot do for ChatTS's
remote code without lfkit's fix. The learning-rate checks use one optimizer step with a
constant schedule: Adam's first step moves every parameter that got a gradient by
``lr * |g| / (|g| + eps)``, i.e. by ``lr``, so the largest change in a tensor is its group's
learning rate.

Two prediction runs (``do_predict`` with ``predict_with_generate``), one per tiny layout
(ChatTS-14B and ChatTS-8B style), check the generated text against a greedy decode that
recomputes the whole sequence for every token, on a model built without any lfkit fix.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from safetensors.torch import load_file

from lfkit.tiny_chatts import build_tiny_chatts, write_chatts_sample

pytestmark = pytest.mark.train

LR, TS_LR = 1.0e-3, 5.0e-3
ENCODER = (
    "ts_encoder.mlp.0.weight",
    "ts_encoder.mlp.0.bias",
    "ts_encoder.mlp.2.weight",
    "ts_encoder.mlp.2.bias",
    "ts_encoder.position_embedding.weight",
)


@pytest.fixture(scope="module")
def chatts(tmp_path_factory):
    """The tiny model, and ChatTS-format JSONL converted by ``lfkit data convert --kind timeseries``."""
    model = build_tiny_chatts(tmp_path_factory.mktemp("tiny_chatts"))
    raw = write_chatts_sample(tmp_path_factory.mktemp("chatts_raw"))
    data = tmp_path_factory.mktemp("chatts_data")
    lfkit = Path(sys.executable).parent / "lfkit"
    inputs = [str(raw / "chatts_single.jsonl"), str(raw / "chatts_multi.jsonl")]
    options = ["--out", str(data), "--name", "chatts", "--kind", "timeseries", "--patch-size", "4"]
    subprocess.run(
        [str(lfkit), "data", "convert", *inputs, *options], check=True, capture_output=True, text=True
    )
    assert "timeseries" in json.loads((data / "dataset_info.json").read_text())["chatts"]["columns"]
    return model, data, load_file(model / "model.safetensors")


def recipe(chatts, out, **overrides):
    model, data, _ = chatts
    base = dict(
        template="chatts",
        trust_remote_code=True,
        cutoff_len=512,
        max_steps=1,
        lr_scheduler_type="constant",
        weight_decay=0.01,
        learning_rate=LR,
    )
    base.update(overrides)
    return tiny_recipe(model, data, "chatts", out, **base)


def load_dataset_rows(data_dir) -> list[str]:
    info = json.loads((data_dir / "dataset_info.json").read_text())
    return (data_dir / info["chatts"]["file_name"]).read_text().splitlines()


def audit(out) -> dict:
    return json.loads((out / "lfkit_param_groups.json").read_text())


def groups(out) -> dict:
    return {g["group"]: g for g in audit(out)["groups"]}


def max_change(before, after) -> float:
    return float((after.float() - before.float()).abs().max())


def assert_moved_by(before, after, lr):
    assert max_change(before, after) == pytest.approx(lr, rel=0.02)


def test_full_tuning_gives_the_encoder_its_own_lr_and_evaluates_with_series(chatts, run_train, tmp_path):
    out = tmp_path / "full"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            timeseries_sft_lr=TS_LR,
            eval_dataset="chatts",
            do_eval=True,
            per_device_eval_batch_size=2,
        )
    ).check()
    g = groups(out)
    assert set(g) == {"decay", "no_decay", "timeseries_decay", "timeseries_no_decay"}
    assert g["timeseries_decay"]["lr"] == g["timeseries_no_decay"]["lr"] == TS_LR
    assert g["decay"]["lr"] == g["no_decay"]["lr"] == LR
    assert g["timeseries_decay"]["weight_decay"] == g["decay"]["weight_decay"] == 0.01
    assert g["timeseries_no_decay"]["weight_decay"] == g["no_decay"]["weight_decay"] == 0.0
    assert g["timeseries_decay"]["tensors"] == 3 and g["timeseries_no_decay"]["tensors"] == 2
    before, after = chatts[2], load_file(out / "model.safetensors")
    assert sum(x["tensors"] for x in g.values()) == len(before)
    for name in ENCODER:
        assert_moved_by(before[name], after[name], TS_LR)
    assert_moved_by(
        before["model.layers.0.self_attn.q_proj.weight"], after["model.layers.0.self_attn.q_proj.weight"], LR
    )
    results = json.loads((out / "all_results.json").read_text())
    assert torch.isfinite(torch.tensor(results["eval_loss"])) and results["eval_loss"] > 0
    assert "lfkit: time-series encoder trained fully" in run.log


def test_freeze_tuning_trains_the_encoder_at_the_global_lr_when_unset(chatts, run_train, tmp_path):
    out = tmp_path / "freeze"
    run_train(
        recipe(
            chatts, out, finetuning_type="freeze", freeze_trainable_layers=1, lora_target=None, lora_rank=None
        )
    ).check()
    g = groups(out)
    assert not any(name.startswith("timeseries_") for name in g)
    assert {x["lr"] for x in g.values()} == {LR}
    before, after = chatts[2], load_file(out / "model.safetensors")
    for name in ENCODER:
        assert_moved_by(before[name], after[name], LR)
    frozen = "model.layers.0.mlp.up_proj.weight"
    assert torch.equal(before[frozen], after[frozen])
    assert_moved_by(
        before["model.layers.1.mlp.up_proj.weight"], after["model.layers.1.mlp.up_proj.weight"], LR
    )


def test_lora_trains_every_encoder_module_at_its_own_lr_keeping_loraplus_ratios(chatts, run_train, tmp_path):
    """Adapters on the encoder's linears, its position embedding in full; LoRA+ ratio 4 kept for both lrs.

    The same run then predicts through the PEFT-wrapped model (series-aware generation under PEFT).
    """
    out, ratio = tmp_path / "lora", 4.0
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="lora",
            lora_target="all",
            timeseries_sft_lr=TS_LR,
            loraplus_lr_ratio=ratio,
            eval_dataset="chatts",
            do_predict=True,
            predict_with_generate=True,
            per_device_eval_batch_size=2,
            max_new_tokens=4,
            do_sample=False,
        )
    ).check()
    predictions = (out / "generated_predictions.jsonl").read_text().splitlines()
    assert len(predictions) == len(load_dataset_rows(chatts[1]))
    adapter = load_file(out / "adapter_model.safetensors")
    encoder_b = [k for k in adapter if "ts_encoder" in k and "lora_B" in k]
    assert sorted(k.split("ts_encoder.")[1].split(".lora")[0] for k in encoder_b) == ["mlp.0", "mlp.2"]
    for key in encoder_b:  # lora_B starts at zero: after one step its largest entry is the group's lr
        assert float(adapter[key].abs().max()) == pytest.approx(ratio * TS_LR, rel=0.02)
    q_b = next(k for k in adapter if "layers.0.self_attn.q_proj.lora_B" in k)
    assert float(adapter[q_b].abs().max()) == pytest.approx(ratio * LR, rel=0.02)
    embedding = next(k for k in adapter if "ts_encoder.position_embedding" in k)  # saved with the adapter
    assert_moved_by(chatts[2]["ts_encoder.position_embedding.weight"], adapter[embedding], TS_LR)
    report = audit(out)
    assert report["timeseries_encoder"] == {
        "ts_encoder.mlp.0": "lora",
        "ts_encoder.mlp.2": "lora",
        "ts_encoder.position_embedding": "full",
    }
    encoder_lrs = sorted(g["lr"] for g in report["groups"] if g["group"].startswith("timeseries_"))
    assert encoder_lrs == pytest.approx([TS_LR, ratio * TS_LR])
    assert "lfkit: time-series encoder trained with LoRA on its linears, the rest in full" in run.log


def test_lora_with_additional_target_trains_the_encoder_fully(chatts, run_train, tmp_path):
    out = tmp_path / "lora_full_encoder"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="lora",
            lora_target="q_proj,v_proj",
            additional_target="ts_encoder",
            timeseries_sft_lr=TS_LR,
        )
    ).check()
    adapter = load_file(out / "adapter_model.safetensors")
    assert not any("ts_encoder" in k and "lora_" in k for k in adapter)
    before = chatts[2]
    for name in ENCODER:
        saved = next(k for k in adapter if k.endswith(name))
        assert_moved_by(before[name], adapter[saved], TS_LR)
    g = groups(out)
    assert g["timeseries_decay"]["tensors"] + g["timeseries_no_decay"]["tensors"] == len(ENCODER)
    assert set(audit(out)["timeseries_encoder"].values()) == {"full"}
    assert "lfkit: time-series encoder trained fully via additional_target" in run.log


def test_train_timeseries_modules_false_keeps_the_encoder_bit_identical(chatts, run_train, tmp_path):
    out = tmp_path / "frozen_encoder"
    run = run_train(
        recipe(
            chatts,
            out,
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            train_timeseries_modules=False,
            timeseries_sft_lr=TS_LR,
            max_steps=3,
        )
    ).check()
    before, after = chatts[2], load_file(out / "model.safetensors")
    for name in ENCODER:
        assert torch.equal(before[name], after[name]), name
    assert not torch.equal(before["lm_head.weight"], after["lm_head.weight"])
    g = groups(out)
    assert not any(name.startswith("timeseries_") for name in g)
    assert sum(x["tensors"] for x in g.values()) == len(before) - len(ENCODER)
    assert "lfkit: time-series encoder frozen" in run.log and "it has no effect" in run.log


def _prediction_rows(dataset_dir: Path) -> None:
    """Rows with and without series, ordered so that batches of 2 are mixed, then text-only (a dummy)."""
    series = [[float(i % 5) * 3.0 for i in range(22)], [1.0, 4.0, 9.0, 16.0, 25.0, 36.0, 49.0]]
    rows = [
        {"input": "Describe <ts><ts/> and <ts><ts/>.", "output": "Two series.", "timeseries": series},
        {"input": "Say hello.", "output": "Hello!", "timeseries": []},
        {"input": "Greet me twice.", "output": "Hi, hi!", "timeseries": []},
        {"input": "Is <ts><ts/> rising?", "output": "Yes.", "timeseries": series[1:]},
        {"input": "Count to three.", "output": "1 2 3", "timeseries": []},
    ]
    dataset_dir.mkdir(parents=True)
    (dataset_dir / "pred.json").write_text(json.dumps(rows))
    columns = {"prompt": "input", "response": "output", "timeseries": "timeseries"}
    (dataset_dir / "dataset_info.json").write_text(
        json.dumps({"pred": {"file_name": "pred.json", "columns": columns}})
    )


def _prediction_inputs(recipe_args: dict):
    """The prompts LlamaFactory's own data path builds for prediction: ``(tokenizer, processor, rows)``."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = {**recipe_args, "output_dir": str(Path(recipe_args["output_dir"]).parent / "reference")}
    model_args, data_args, training_args, _, _ = get_train_args(args)
    module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **module)
    return module["tokenizer"], module["processor"], dataset["eval_dataset"]


def _greedy_full_recompute(model, ids, series, eos: set[int], steps: int) -> list[int]:
    """Greedy tokens, each from one forward over the whole sequence and its series (no cache)."""
    generated = []
    with torch.no_grad():
        for _ in range(steps):
            full = torch.tensor([ids + generated])
            out = model(
                input_ids=full, attention_mask=torch.ones_like(full), timeseries=series, use_cache=False
            )
            generated.append(int(out.logits[0, -1].argmax()))
            if generated[-1] in eos:
                break
    return generated


@pytest.mark.parametrize("variant", ["14b", "8b"])
def test_predict_with_generate_equals_a_full_recompute_greedy_decode(variant, run_train, tmp_path):
    from transformers import AutoConfig, AutoModelForCausalLM

    model_dir = build_tiny_chatts(tmp_path / "model", variant=variant)
    _prediction_rows(tmp_path / "data")
    steps = 12
    args = dict(
        model_name_or_path=str(model_dir),
        trust_remote_code=True,
        stage="sft",
        do_train=False,
        do_predict=True,
        predict_with_generate=True,
        finetuning_type="full",
        eval_dataset="pred",
        dataset_dir=str(tmp_path / "data"),
        template="chatts",
        cutoff_len=512,
        output_dir=str(tmp_path / "out"),
        overwrite_output_dir=True,
        per_device_eval_batch_size=2,
        do_sample=False,
        max_new_tokens=steps,
        report_to="none",
        preprocessing_num_workers=None,
        dataloader_num_workers=0,
    )
    run = run_train({k: v for k, v in args.items() if v is not None}).check()
    predictions = [
        json.loads(line)
        for line in (tmp_path / "out" / "generated_predictions.jsonl").read_text().splitlines()
    ]
    assert "lfkit: ChatTS on transformers 5:" in run.log

    tokenizer, processor, rows = _prediction_inputs(args)
    # the reference: built directly from config and weights (transformers 4's buffers), no lfkit fix
    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=True)
    loaded = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True)
    reference = type(loaded)(config).eval()
    reference.load_state_dict(loaded.state_dict())
    # LlamaFactory stops at the eos token and at every extra special token (run_sft's gen_kwargs)
    extra = [str(t) for t in getattr(tokenizer, "_extra_special_tokens", [])]
    eos = {tokenizer.eos_token_id, *tokenizer.convert_tokens_to_ids(extra)}
    assert len(eos) == 4  # <|im_end|>, <|im_start|>, <ts>, <ts/>
    assert len(predictions) == len(rows) == 5
    decoded = []
    for row, prediction in zip(rows, predictions, strict=True):
        series = json.loads(row["timeseries"])["series"] if row["timeseries"] else []
        tensor = processor.encode_timeseries(series).float() if series else None
        tokens = _greedy_full_recompute(reference, row["input_ids"], tensor, eos, steps)
        decoded.append(tokenizer.decode(tokens, skip_special_tokens=True))
        assert prediction["predict"] == decoded[-1], (row, prediction)
    assert len(set(decoded)) > 1 and any(len(d) > 3 for d in decoded)  # not a degenerate comparison
