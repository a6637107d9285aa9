"""The time-series data path through LlamaFactory's real code, on the tiny ChatTS model.

No training here: LlamaFactory's own parser, dataset loader, template and collator run in
process (with lfkit's patches active through the installed hook), and the tiny model's forward
is called on the batches they produce.
"""

from __future__ import annotations

import json
import math
import re
import shutil

import pytest
import torch
from lfkit.data_tools.timeseries.chatts import processor_text
from lfkit.plugin.timeseries import encoding
from lfkit.plugin.timeseries.compat import apply_chatts_compat

from lfkit.tiny_chatts import build_tiny_chatts, write_chatts_sample

IGNORE = -100


@pytest.fixture(scope="module")
def chatts_dir(tmp_path_factory):
    return build_tiny_chatts(tmp_path_factory.mktemp("tiny_chatts"))


@pytest.fixture(scope="module")
def chatts_model(chatts_dir):
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(chatts_dir, trust_remote_code=True).eval()
    apply_chatts_compat(model)  # what the plugin does to every ChatTS model LlamaFactory loads
    return model


def merge(model, batch, labels=None):
    """The model's own series merge on a collated batch: ``(features, patch_cnt, merged tuple)``."""
    with torch.no_grad():
        features, patch_cnt = model.ts_encoder(batch["timeseries"])
        embeds = model.get_input_embeddings()(batch["input_ids"])
        merged = model._merge_input_ids_with_time_series_features(
            features, embeds, batch["input_ids"], batch["attention_mask"], labels, patch_cnt
        )
    return features, patch_cnt, merged


def series_blocks(batch, merged, patch_cnt, spec_ids):
    """``(row, first merged position, patch count)`` of each series, from ChatTS's new_token_positions."""
    new_positions = merged[4]
    blocks = []
    for row, start in (batch["input_ids"] == spec_ids[0]).nonzero().tolist():
        last = int(new_positions[row, start + 1])  # ChatTS maps <ts/> to the last patch of its block
        count = int(patch_cnt[len(blocks)])
        blocks.append((row, last - count + 1, count))
    return blocks


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
            assert processor_text(s) in text  # ChatTS's own text, from the model's processor
        assert json.loads(row["timeseries"])["series"] == series if series else row["timeseries"] == ""


def test_multi_turn_series_follow_their_turns(chatts_dir, data_dir, tmp_path):
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out", dataset="chatts_multi")
    tokenizer = tm["tokenizer"]
    for row, series in zip(ds, source_series(data_dir, "chatts_multi.jsonl"), strict=True):
        text = tokenizer.decode(row["input_ids"])
        first, second = (text.index(processor_text(s)) for s in series)
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
        scaled, _, _ = encoding.normalise(s)  # ChatTS's processor hands them over in float16
        torch.testing.assert_close(pairs[i, : len(s), 0], torch.tensor(scaled).half().float())
        assert pairs[i, : len(s), 1].eq(1).all() and pairs[i, len(s) :].eq(0).all()

    patch = chatts_model.config.ts["patch_size"]
    features, patch_cnt, merged = merge(chatts_model, batch, batch["labels"])
    embeds, mask, _, labels, _ = merged
    assert patch_cnt.tolist() == [math.ceil(len(s) / patch) for s in series]
    blocks = series_blocks(batch, merged, patch_cnt, tm["tokenizer"].convert_tokens_to_ids(["<ts>", "<ts/>"]))
    for (row, first, count), k in zip(blocks, range(len(series)), strict=True):
        offset = int(patch_cnt[:k].sum())
        torch.testing.assert_close(embeds[row, first : first + count], features[offset : offset + count])
        assert labels[row, first : first + count].eq(IGNORE).all()
    valid = batch["attention_mask"].sum(1)
    for b in range(3):
        grown = sum(c - 2 for r, _, c in blocks if r == b)
        assert int(mask[b].sum()) == int(valid[b]) + grown


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

    target = merge(chatts_model, batch, labels)[2][3][:, 1:]  # the loss: mean CE over the response tokens
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


def test_left_padded_text_only_batch_runs_the_encoder_on_a_dummy_that_changes_no_token(
    chatts_dir, chatts_model, data_dir, tmp_path
):
    """Generation batches (left padding): the dummy goes before the prompt, masked, and is merged once."""
    template, tm, ds = load(chatts_dir, data_dir, tmp_path / "out")
    rows = [ds[3], ds[7]]  # text-only rows of equal length
    assert rows[0]["timeseries"] == rows[1]["timeseries"] == "" and len(rows[0]["input_ids"]) == len(
        rows[1]["input_ids"]
    )
    tm["tokenizer"].padding_side = "left"
    try:
        batch = collate(template, tm, rows)
    finally:
        tm["tokenizer"].padding_side = "right"
    start, end = tm["tokenizer"].convert_tokens_to_ids(["<ts>", "<ts/>"])
    assert batch["input_ids"][0, :2].tolist() == [start, end] and batch["attention_mask"][:, :2].eq(0).all()
    assert batch["timeseries"].shape[0] == 1

    calls = []
    hook = chatts_model.ts_encoder.register_forward_hook(lambda *_: calls.append(1))
    options = dict(max_new_tokens=6, do_sample=False, output_logits=True, return_dict_in_generate=True)
    try:
        with torch.no_grad():
            dummy = chatts_model.generate(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                timeseries=batch["timeseries"],
                **options,
            )
    finally:
        hook.remove()
    assert len(calls) == 1  # the encoder ran, in the first forward only
    with torch.no_grad():  # the same prompts without the dummy (row 1's two left pads were its room)
        plain = chatts_model.generate(
            input_ids=batch["input_ids"][:, 2:], attention_mask=batch["attention_mask"][:, 2:], **options
        )
    width = batch["input_ids"].shape[1]
    assert torch.equal(dummy.sequences[:, width:], plain.sequences[:, width - 2 :])
    for a, b in zip(dummy.logits, plain.logits, strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)


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


def _overlong_rows(data_dir, n_long: int):
    """Two rows that fit cutoff_len 200 around ``n_long`` whose series truncation would cut."""
    good = {"input": "a <ts><ts/>", "output": "b", "ts": [[1.0, 2.0]]}
    long = {"input": "word " * 60 + "then <ts><ts/>", "output": "ok", "ts": [[float(i) for i in range(40)]]}
    _write_rows(data_dir, [good] + [long] * n_long + [good])


def test_overlong_rows_are_reported_all_at_once_with_the_cutoff_that_fits(chatts_dir, data_dir, tmp_path):
    _overlong_rows(data_dir, 7)
    with pytest.raises(ValueError) as refused:
        load(chatts_dir, data_dir, tmp_path / "out", dataset="bad", cutoff_len=200)
    message = str(refused.value)
    assert message.startswith("7 of 9 ChatTS training rows do not fit cutoff_len 200")
    named = [f"bad.jsonl: row {i}" for i in range(1, 6)]
    assert all(n in message for n in named) and "row 6" not in message and "; ..." in message
    fits = int(re.search(r"cutoff_len (\d+) fits all of them", message)[1])
    assert "timeseries_drop_overlong: true" in message
    _, _, dataset = load(chatts_dir, data_dir, tmp_path / "out2", dataset="bad", cutoff_len=fits)
    assert len(dataset) == 9 and "_timeseries_overlong" not in dataset.column_names


def test_overlong_rows_are_dropped_and_counted_when_asked(chatts_dir, data_dir, tmp_path):
    import logging

    _overlong_rows(data_dir, 3)
    records = []
    handler = logging.Handler()
    handler.emit = records.append
    logger = logging.getLogger("llamafactory.lfkit.timeseries")
    logger.addHandler(handler)
    try:
        _, tm, dataset = load(
            chatts_dir,
            data_dir,
            tmp_path / "out",
            dataset="bad",
            cutoff_len=200,
            timeseries_drop_overlong=True,
        )
    finally:
        logger.removeHandler(handler)
    assert len(dataset) == 2 and "_timeseries_overlong" not in dataset.column_names
    assert all(tm["tokenizer"].decode(row["input_ids"]).count("<ts>") == 1 for row in dataset)
    assert any("dropped 3 of 5 ChatTS training rows" in r.getMessage() for r in records)


def test_streamed_overlong_rows_are_refused_when_read_or_dropped_when_asked(chatts_dir, data_dir, tmp_path):
    """With streaming, rows exist only while iterating: each over-long one is refused or dropped then."""
    _overlong_rows(data_dir, 3)
    stream = dict(dataset="bad", cutoff_len=200, streaming=True, max_steps=1, dataloader_num_workers=1)
    _, _, dataset = load(chatts_dir, data_dir, tmp_path / "out", timeseries_drop_overlong=True, **stream)
    rows = list(dataset)
    assert len(rows) == 2 and "_timeseries_overlong" not in rows[0]
    _, _, dataset = load(chatts_dir, data_dir, tmp_path / "out2", **stream)
    with pytest.raises(ValueError, match=r"bad\.jsonl: row \d: does not fit cutoff_len 200 .* it needs \d+"):
        list(dataset)


def _without_processor(chatts_dir, tmp_path):
    """A copy of the model whose AutoProcessor finds no ChatTS processor (LlamaFactory then passes None)."""
    copy = tmp_path / "no_processor"
    shutil.copytree(chatts_dir, copy)
    (copy / "processor_config.json").unlink()
    config = json.loads((copy / "tokenizer_config.json").read_text())
    config.pop("processor_class"), config.pop("auto_map")
    (copy / "tokenizer_config.json").write_text(json.dumps(config))
    return copy


def test_series_without_the_checkpoints_processor_are_refused(chatts_dir, data_dir, tmp_path):
    model = _without_processor(chatts_dir, tmp_path)
    with pytest.raises(
        ValueError, match=r"no_processor: no processor loaded.*timeseries_legacy_prompt: true"
    ):
        load(model, data_dir, tmp_path / "out")


def test_legacy_prompt_text_only_when_asked(chatts_dir, data_dir, tmp_path):
    model = _without_processor(chatts_dir, tmp_path)
    _, tm, dataset = load(model, data_dir, tmp_path / "out", timeseries_legacy_prompt=True)
    for row, series in zip(dataset, source_series(data_dir), strict=True):
        text = tm["tokenizer"].decode(row["input_ids"])
        assert all(encoding.prompt_text(s) in text for s in series)  # [Value Offset: ..|Value Scaling: ..]


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
    assert all(processor_text(s) in tokenizer.decode(rows["input_ids"][0]) for s in series)

    tokenizer.padding_side = "left"
    try:
        features = [{k: rows[k][i] for k in rows if k != "_timeseries_overlong"} for i in range(2)]
        batch = collate(template, tm, features)
    finally:
        tokenizer.padding_side = "right"
    assert batch["attention_mask"][1, 0] == 0, "generation batches are left-padded"
    assert batch["timeseries"].shape == (2, 2 * 5, 1)  # the batch has series: no dummy, only the real ones
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "timeseries")}
    with torch.no_grad():
        generated = chatts_model.generate(**inputs, max_new_tokens=4, do_sample=False)
    assert generated.shape == (2, batch["input_ids"].shape[1] + 4)
    with torch.no_grad():  # the series reach the model: swapping them changes row 0's next-token logits
        a = chatts_model(**inputs).logits[0, -1]
        b = chatts_model(**{**inputs, "timeseries": torch.flip(inputs["timeseries"], [0])}).logits[0, -1]
    assert not torch.allclose(a, b)
