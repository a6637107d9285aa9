"""The time-series data path through LlamaFactory's real code, on the tiny ChatTS model.

No training here: LlamaFactory's own parser, dataset loader, template and collator run in
process (with lfkit's patches active through the installed hook), and the tiny model's forward
is called on the batches they produce.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch
from lfkit.plugin.timeseries import encoding

from lfkit.tiny_chatts import build_tiny_chatts, write_chatts_sample

IGNORE = -100


@pytest.fixture(scope="module")
def chatts_dir(tmp_path_factory):
    return build_tiny_chatts(tmp_path_factory.mktemp("tiny_chatts"))


@pytest.fixture(scope="module")
def chatts_model(chatts_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(chatts_dir, trust_remote_code=True).eval()


@pytest.fixture
def data_dir(tmp_path):
    return write_chatts_sample(tmp_path / "data")


def load(model_dir, data_dir, out_dir, dataset="chatts_single", **overrides):
    """LlamaFactory's own argument parsing, tokenizer/processor loading, template and dataset."""
    from llamafactory.data import get_dataset, get_template_and_fix_tokenizer
    from llamafactory.hparams import get_train_args
    from llamafactory.model import load_tokenizer

    args = dict(
        model_name_or_path=str(model_dir),
        trust_remote_code=True,
        stage="sft",
        do_train=True,
        finetuning_type="lora",
        dataset=dataset,
        dataset_dir=str(data_dir),
        template="chatts",
        cutoff_len=512,
        output_dir=str(out_dir),
        overwrite_cache=True,
        report_to="none",
    )
    args.update(overrides)
    model_args, data_args, training_args, _, _ = get_train_args(args)
    tokenizer_module = load_tokenizer(model_args)
    template = get_template_and_fix_tokenizer(tokenizer_module["tokenizer"], data_args)
    dataset = get_dataset(template, model_args, data_args, training_args, stage="sft", **tokenizer_module)
    return template, tokenizer_module, dataset["train_dataset"]


def collate(template, tokenizer_module, rows):
    from llamafactory.data import SFTDataCollatorWith4DAttentionMask

    collator = SFTDataCollatorWith4DAttentionMask(
        template=template, label_pad_token_id=IGNORE, compute_dtype=torch.float32, **tokenizer_module
    )
    return collator([dict(r) for r in rows])


def source_series(data_dir, name="chatts_single.jsonl"):
    return [json.loads(line)["timeseries"] for line in (data_dir / name).read_text().splitlines()]


def test_chatts_template_is_registered():
    from lfkit.plugin.timeseries.mm_plugin import is_timeseries_plugin
    from llamafactory.data.template import TEMPLATES

    assert is_timeseries_plugin(TEMPLATES["chatts"].mm_plugin)


def test_prompt_gets_offset_scaling_text_and_one_token_pair_per_series(chatts_dir, data_dir, tmp_path):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out")
    tokenizer = tm["tokenizer"]
    start, end = tokenizer.convert_tokens_to_ids(["<ts>", "<ts/>"])
    for row, series in zip(ds, source_series(data_dir), strict=True):
        text = tokenizer.decode(row["input_ids"])
        assert row["input_ids"].count(start) == row["input_ids"].count(end) == len(series)
        for s in series:
            assert encoding.prompt_text(s) in text  # ChatTS's own text, from the model's processor
        assert json.loads(row["timeseries"])["series"] == series if series else row["timeseries"] == ""


def test_multi_turn_series_follow_their_turns(chatts_dir, data_dir, tmp_path):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out", dataset="chatts_multi")
    tokenizer = tm["tokenizer"]
    for row, series in zip(ds, source_series(data_dir, "chatts_multi.jsonl"), strict=True):
        text = tokenizer.decode(row["input_ids"])
        first, second = (text.index(encoding.prompt_text(s)) for s in series)
        assert first < text.index("Any anomaly?") < text.index("And this one?") < second


def test_batch_of_different_lengths_pads_masks_and_expands_to_patch_count(
    chatts_dir, chatts_model, data_dir, tmp_path
):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out")
    rows = [ds[0], ds[1], ds[2]]
    series = [s for r in source_series(data_dir)[:3] for s in r]
    assert len({len(s) for s in series}) > 2, "the sample must mix series lengths"
    batch = collate(template, tm, rows)
    ts = batch["timeseries"]
    max_len = max(len(s) for s in series)
    assert ts.shape == (len(series), 2 * max_len, 1)
    pairs = ts.reshape(len(series), max_len, 2)
    for i, s in enumerate(series):
        scaled, _, _ = encoding.normalise(s)
        torch.testing.assert_close(pairs[i, : len(s), 0], torch.tensor(scaled, dtype=torch.float32))
        assert pairs[i, : len(s), 1].eq(1).all() and pairs[i, len(s) :].eq(0).all()

    patch = chatts_model.config.ts["patch_size"]
    with torch.no_grad():
        features, patch_cnt = chatts_model.ts_encoder(ts)
        embeds = chatts_model.get_input_embeddings()(batch["input_ids"])
        merged = chatts_model.merge_timeseries(
            batch["input_ids"], embeds, batch["attention_mask"], batch["labels"], features, patch_cnt
        )
    assert patch_cnt.tolist() == [math.ceil(len(s) / patch) for s in series]
    assert [count for _, _, count in merged.ts_positions] == patch_cnt.tolist()
    for (row, first, count), k in zip(merged.ts_positions, range(len(series)), strict=True):
        offset = int(patch_cnt[:k].sum())
        torch.testing.assert_close(
            merged.inputs_embeds[row, first : first + count], features[offset : offset + count]
        )
        assert merged.labels[row, first : first + count].eq(IGNORE).all()
    valid = batch["attention_mask"].sum(1)
    for b in range(3):
        grown = sum(c - 2 for r, _, c in merged.ts_positions if r == b)
        assert int(merged.attention_mask[b].sum()) == int(valid[b]) + grown


def test_loss_ignores_prompt_and_padding(chatts_dir, chatts_model, data_dir, tmp_path):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out")
    tokenizer = tm["tokenizer"]
    rows = [ds[0], ds[3]]  # one row with two series, one text-only row: different lengths
    outputs = [
        json.loads(line)["output"] for line in (data_dir / "chatts_single.jsonl").read_text().splitlines()
    ]
    responses = [tokenizer(outputs[i] + "<|im_end|>\n")["input_ids"] for i in (0, 3)]
    batch = collate(template, tm, rows)
    labels = batch["labels"]
    for b, row in enumerate(rows):
        kept = labels[b][labels[b] != IGNORE].tolist()
        assert kept == responses[b]  # only the answer (and its end tokens) is trained on
        assert labels[b][len(row["input_ids"]) :].eq(IGNORE).all()  # padding
    assert batch["attention_mask"].eq(0).any(), "rows of different lengths must be padded"

    with torch.no_grad():
        out = chatts_model(**batch)
        repadded = {**batch, "input_ids": batch["input_ids"].masked_fill(batch["attention_mask"] == 0, 7)}
        out_repadded = chatts_model(**repadded)
    torch.testing.assert_close(out.loss, out_repadded.loss, rtol=0, atol=1e-6)

    with torch.no_grad():  # the loss is the mean CE over exactly the response tokens
        features, patch_cnt = chatts_model.ts_encoder(batch["timeseries"])
        embeds = chatts_model.get_input_embeddings()(batch["input_ids"])
        merged = chatts_model.merge_timeseries(
            batch["input_ids"], embeds, batch["attention_mask"], labels, features, patch_cnt
        )
    target = merged.labels[:, 1:]
    logits = out.logits[:, :-1]
    picked = target != IGNORE
    assert int(picked.sum()) == sum(len(r) for r in responses)
    manual = torch.nn.functional.cross_entropy(logits[picked], target[picked])
    torch.testing.assert_close(out.loss, manual)


def test_text_only_batch_runs_encoder_on_a_masked_dummy_with_zero_effect(
    chatts_dir, chatts_model, data_dir, tmp_path
):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out")
    text_row = ds[3]
    assert text_row["timeseries"] == ""
    batch = collate(template, tm, [text_row])
    spec_ids = tm["tokenizer"].convert_tokens_to_ids(["<ts>", "<ts/>"])
    assert batch["input_ids"][0, -2:].tolist() == spec_ids
    assert (
        batch["attention_mask"][0, -2:].tolist() == [0, 0]
        and batch["labels"][0, -2:].tolist() == [IGNORE] * 2
    )
    assert batch["timeseries"].shape[0] == 1

    model = chatts_model
    model.zero_grad()
    loss = model(**batch).loss
    loss.backward()
    grads = [p.grad for p in model.ts_encoder.parameters()]
    assert all(g is not None and g.eq(0).all() for g in grads)  # the encoder ran, contributing nothing
    with torch.no_grad():
        plain = model(
            input_ids=batch["input_ids"][:, :-2],
            attention_mask=batch["attention_mask"][:, :-2],
            labels=batch["labels"][:, :-2],
        ).loss
    torch.testing.assert_close(loss.detach(), plain)
    model.zero_grad()


def _write_rows(data_dir, rows):
    (data_dir / "bad.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    info = json.loads((data_dir / "dataset_info.json").read_text())
    info["bad"] = {
        "file_name": "bad.jsonl",
        "columns": {"prompt": "input", "response": "output", "timeseries": "ts"},
    }
    (data_dir / "dataset_info.json").write_text(json.dumps(info))


def test_surplus_placeholder_is_refused_with_file_and_row(chatts_dir, data_dir, tmp_path):
    good = {"input": "a <ts><ts/>", "output": "b", "ts": [[1.0, 2.0]]}
    surplus = {"input": "a <ts><ts/> then <ts><ts/> and text after", "output": "b", "ts": [[1.0, 2.0]]}
    _write_rows(data_dir, [good, surplus])
    with pytest.raises(ValueError, match=r"bad\.jsonl: row 1: 2 '<ts><ts/>' placeholder\(s\).*1 series"):
        load(chatts_dir, data_dir, tmp_path / "out", dataset="bad")


def test_cutoff_that_would_cut_a_series_is_refused(chatts_dir, data_dir, tmp_path):
    long_prompt = "word " * 60 + "then <ts><ts/>"
    _write_rows(data_dir, [{"input": long_prompt, "output": "ok", "ts": [[float(i) for i in range(40)]]}])
    with pytest.raises(ValueError, match=r"bad\.jsonl: row 0: cutoff_len 64 keeps 0 of 1"):
        load(chatts_dir, data_dir, tmp_path / "out", dataset="bad", cutoff_len=64)


def test_series_with_a_template_that_cannot_place_them_is_refused(chatts_dir, data_dir, tmp_path):
    with pytest.raises(ValueError, match="template 'qwen' cannot place them"):
        load(chatts_dir, data_dir, tmp_path / "out", template="qwen")


def test_token_ids_come_from_the_config_and_must_match_the_tokenizer(chatts_dir, tmp_path):
    from lfkit.plugin.timeseries.spec import spec_for_tokenizer
    from transformers import AutoTokenizer

    copy = tmp_path / "model"
    shutil.copytree(chatts_dir, copy)
    tokenizer = AutoTokenizer.from_pretrained(copy)
    spec = spec_for_tokenizer(tokenizer)
    assert (spec.start_id, spec.end_id) == tuple(tokenizer.convert_tokens_to_ids(["<ts>", "<ts/>"]))
    config = json.loads((copy / "config.json").read_text())
    config["ts_token_start_index"], config["ts_token_end_index"] = spec.end_id, spec.start_id
    other = tmp_path / "swapped"
    shutil.copytree(copy, other)
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="ts_token_start_index="):
        spec_for_tokenizer(AutoTokenizer.from_pretrained(other))


def test_prediction_rows_keep_their_series_and_generation_uses_them(
    chatts_dir, chatts_model, data_dir, tmp_path
):
    """LlamaFactory's unsupervised (predict_with_generate) processor, then left-padded generation."""
    from lfkit.plugin.timeseries.dataset import encode_payload
    from llamafactory.data.processor import UnsupervisedDatasetProcessor

    template, tm, _ = load(chatts_dir, data_dir, tmp_path / "out")
    tokenizer = tm["tokenizer"]
    series = [[0.0, 0.0, 0.0, 40.0, 3.5], [1.0, 2.0]]
    prompts = [
        [{"role": "user", "content": "What about <ts><ts/> and <ts><ts/>?"}],
        [{"role": "user", "content": "Hi"}],
    ]
    examples = {
        "_prompt": prompts,
        "_response": [[], []],
        "_system": ["", ""],
        "_tools": ["", ""],
        "_images": [None, None],
        "_videos": [None, None],
        "_audios": [None, None],
        "_timeseries": [encode_payload(series, "x.jsonl: row 0"), ""],
    }
    from llamafactory.hparams import DataArguments

    processor = UnsupervisedDatasetProcessor(
        template, tokenizer, tm["processor"], DataArguments(cutoff_len=256)
    )
    rows = processor.preprocess_dataset(examples)
    assert json.loads(rows["timeseries"][0])["series"] == series and rows["timeseries"][1] == ""
    assert all(encoding.prompt_text(s) in tokenizer.decode(rows["input_ids"][0]) for s in series)

    tokenizer.padding_side = "left"
    try:
        features = [{k: rows[k][i] for k in rows} for i in range(2)]
        batch = collate(template, tm, features)
    finally:
        tokenizer.padding_side = "right"
    assert batch["attention_mask"][1, 0] == 0, "generation batches are left-padded"
    assert batch["timeseries"].shape == (2, 2 * 5, 1)  # no dummy with left padding: only the real series
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "timeseries")}
    with torch.no_grad():
        generated = chatts_model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 4)
    with torch.no_grad():  # the series reach the model: swapping them changes row 0's next-token logits
        a = chatts_model(**inputs).logits[0, -1]
        b = chatts_model(**{**inputs, "timeseries": torch.flip(inputs["timeseries"], [0])}).logits[0, -1]
    assert not torch.allclose(a, b)
