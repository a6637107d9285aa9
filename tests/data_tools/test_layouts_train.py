"""Converted tool-use and role-play datasets train with real ``llamafactory-cli train``.

Each run trains a few steps on the tiny local Qwen2 with the ``qwen`` template (a tool-capable
one: its tool format is ``qwen``), finding the data only through ``dataset_dir`` /
``dataset_info.json``, and the first training sample that LlamaFactory itself prints
(``inputs:``, decoded from the token ids it trains on) is checked to show the persona, the
tools and the turns in order.
"""

from __future__ import annotations

import json

import pytest
from conftest import tiny_recipe
from dialogue_helpers import chat, run_cli, write_jsonl
from layout_fixtures import glaive_record, openai_tool_record, pippa_record, write_json_array

pytestmark = pytest.mark.train


def decoded_sample(log: str) -> str:
    """The first training sample as LlamaFactory printed it (``inputs:`` ... ``label_ids:``)."""
    start = log.index("inputs:\n") + len("inputs:\n")
    return log[start : log.index("\nlabel_ids:", start)]


def in_order(text: str, *parts: str) -> None:
    at = 0
    for part in parts:
        found = text.find(part, at)
        assert found >= 0, f"{part!r} missing after position {at} in:\n{text}"
        at = found + len(part)


def trained_steps(run) -> int:
    lines = (run.output_dir / "trainer_log.jsonl").read_text().splitlines()
    return json.loads(lines[-1])["current_steps"]


def test_tool_use_datasets_train_with_tools_in_the_prompt(tmp_path, tiny_model, run_train):
    glaive = write_json_array(tmp_path / "glaive_toolcall_demo.json", [glaive_record(c, w) for c, w in (
        ("Paris", "sunny"), ("Rome", "rainy"), ("Oslo", "snowy"))])  # fmt: skip
    openai = write_jsonl(
        tmp_path / "openai_tools.jsonl", [openai_tool_record(c) for c in ("Bern", "Graz", "Turin")]
    )
    data = tmp_path / "data"
    result = run_cli("convert", "dialogue", glaive, openai, "--out", data, "--name", "tools", "--strict")
    assert result.exit_code == 0, result.output
    recipe = tiny_recipe(tiny_model, data, "tools", tmp_path / "run", cutoff_len=1024, disable_shuffling=True)
    run = run_train(recipe).check()
    assert trained_steps(run) == 4
    sample = decoded_sample(run.log)
    first = json.loads((data / "tools.jsonl").read_text().splitlines()[0])
    user = first["messages"][0]["content"]
    call = json.loads(first["messages"][1]["content"])
    call = call[0] if isinstance(call, list) else call
    in_order(
        sample,
        "<|im_start|>system\n",
        first["system"],  # the persona (empty for glaive records: then the tools come first)
        "<tools>",
        '"name": "get_weather"',
        "</tools>",
        f"<|im_start|>user\n{user}",
        "<tool_call>",
        f'"arguments": {{"city": "{call["arguments"]["city"]}"}}',
        "</tool_call>",
        "<tool_response>",
        "</tool_response>",
        f"<|im_start|>assistant\n{first['messages'][3]['content']}",
    )


def test_role_play_datasets_train_with_persona_and_greeting(tmp_path, tiny_model, run_train):
    pippa = write_jsonl(tmp_path / "pippa.jsonl", [pippa_record(f"b{i % 2}", "Mira", i) for i in range(4)])
    chars = tmp_path / "chars"
    write_jsonl(
        chars / "captain.jsonl", [{"messages": chat("c", 2, tag=str(i))["messages"]} for i in range(3)]
    )
    greeting = {"role": "assistant", "content": "Welcome, {{user}}."}
    witch = [{"messages": [greeting, *chat("w", 1, tag=str(i))["messages"]]} for i in range(2)]
    write_json_array(chars / "witch.json", witch)
    data = tmp_path / "data"
    for src, name in ((pippa, "pippa"), (chars, "chars")):
        result = run_cli("convert", src, "--out", data, "--name", name, "--user-name", "Alex", "--strict")
        assert result.exit_code == 0, result.output
    recipe = tiny_recipe(
        tiny_model, data, "pippa", tmp_path / "pippa_run", cutoff_len=512, disable_shuffling=True
    )
    sample = decoded_sample(run_train(recipe).check().log)
    first = json.loads((data / "pippa.jsonl").read_text().splitlines()[0])
    in_order(
        sample,
        "<|im_start|>system\nMira is a lighthouse keeper who talks to Alex about ships.",
        "Alex: Any ships today?\nMira: Three",
        "Opening message:\n*Mira waves* Hello, Alex!",
        f"<|im_start|>user\n{first['messages'][0]['content']}",
        "<|im_start|>assistant\nThree, and one of them was on fire.\nDouble text: are you there?",
        "<|im_start|>user\nTell me more.",
        "It sank near the rocks, Alex",
    )
    chars_run = run_train(
        tiny_recipe(tiny_model, data, "chars", tmp_path / "chars_run", disable_shuffling=True)
    )
    chars_sample = decoded_sample(chars_run.check().log)
    first = json.loads((data / "chars.jsonl").read_text().splitlines()[0])
    in_order(chars_sample, f"<|im_start|>system\n{first['system']}", "<|im_start|>user\n")
    assert first["system"].startswith(("You are captain.", "You are witch."))


def test_multimodal_dataset_trains_a_tiny_vision_language_model(tmp_path, run_train):
    from layout_fixtures import mllm_record, tiny_image
    from tiny_vlm import IMAGE_TOKEN, TOKENS_PER_IMAGE, build_tiny_llava

    raw = tmp_path / "raw"
    tiny_image(raw / "mllm_demo_data" / "1.png", size=40)
    tiny_image(raw / "mllm_demo_data" / "2.png", (10, 200, 10), size=60)
    records = [
        mllm_record(["mllm_demo_data/1.png", "mllm_demo_data/2.png"]),
        mllm_record(["mllm_demo_data/2.png"], text="Who is this?"),
        mllm_record(["mllm_demo_data/1.png"], text="Where is this?"),
        mllm_record(["mllm_demo_data/3.png"]),  # missing: rejected, never a crash at training time
    ]
    src = write_json_array(raw / "mllm_demo.json", records)
    data = tmp_path / "data"
    result = run_cli("convert", "dialogue", src, "--out", data, "--name", "mm")
    assert result.exit_code == 0 and "converted 3 + rejected 1 = read 4" in " ".join(result.output.split())
    model = build_tiny_llava(tmp_path / "tiny_llava")
    recipe = tiny_recipe(
        model, data, "mm", tmp_path / "run", template="llava", max_steps=3, disable_shuffling=True
    )
    run = run_train(recipe).check()
    assert trained_steps(run) == 3
    first = json.loads((data / "mm.jsonl").read_text().splitlines()[0])
    images = IMAGE_TOKEN * (TOKENS_PER_IMAGE * len(first["images"]))  # each image expanded by the plugin
    text = first["messages"][0]["content"].replace(IMAGE_TOKEN, "")
    in_order(
        decoded_sample(run.log),
        f"USER: {images}{text} ASSISTANT:",
        first["messages"][1]["content"],
        f"USER: {first['messages'][2]['content']} ASSISTANT:",
        first["messages"][3]["content"],
    )
