"""Records in the layouts real users and LlamaFactory itself have, written for the tests.

The layouts reproduce LlamaFactory 0.9.5's own demo data (``data/glaive_toolcall_en_demo.json``:
a JSON array of ShareGPT ``conversations`` with ``function_call`` / ``observation`` turns and
a ``tools`` string; ``data/mllm_demo.json``: a JSON array of ``messages`` with an ``images``
list of paths relative to the data folder), OpenAI chat records with ``tool_calls`` and
``tool`` messages, PIPPA role-play records (``bot_id``, ``bot_name``, ``bot_description``,
``bot_definitions``, ``conversation`` [``message``, ``is_human``]) and per-character folders;
also its Alpaca layout (``alpaca_en_demo.json``, ``identity.json``), its preference and KTO
layouts (``dpo_en_demo.json``: ShareGPT ``conversations`` plus ``chosen`` / ``rejected`` turns;
``kto_en_demo.json``: ``messages`` plus a boolean ``label``) and its v1 layout
(``v1_sft_demo.jsonl``, ``reason_tool_use_demo_50.jsonl``, ``v1_multimodal_demo.jsonl``:
``messages`` whose content is a list of ``{"type", "value"}`` parts, with ``reasoning`` and
``tool_call`` parts in assistant turns and media paths relative to the repository root).
The texts are our own.
"""

from __future__ import annotations

import json
from pathlib import Path

WEATHER_TOOL = {
    "name": "get_weather",
    "description": "Get the current weather of a city",
    "parameters": {
        "type": "object",
        "properties": {"city": {"type": "string", "description": "The city"}},
        "required": ["city"],
    },
}


def glaive_record(city: str, answer: str) -> dict:
    """The glaive tool-call demo layout: ShareGPT turns, a call, its result, a JSON ``tools`` string."""
    return {
        "conversations": [
            {"from": "human", "value": f"What is the weather in {city}?"},
            {
                "from": "function_call",
                "value": json.dumps({"name": "get_weather", "arguments": {"city": city}}),
            },
            {"from": "observation", "value": json.dumps({"city": city, "weather": answer})},
            {"from": "gpt", "value": f"It is {answer} in {city}."},
            {"from": "human", "value": "Thanks!"},
            {"from": "gpt", "value": "You are welcome."},
        ],
        "tools": json.dumps([WEATHER_TOOL]),
    }


def openai_tool_record(city: str) -> dict:
    """OpenAI chat layout with parallel tool_calls (content null, arguments a JSON string)."""
    calls = [
        {
            "id": f"call_{i}",
            "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": c})},
        }
        for i, c in enumerate((city, "Oslo"))
    ]
    return {
        "messages": [
            {"role": "developer", "content": "You answer weather questions with the tool."},
            {"role": "user", "content": [{"type": "input_text", "text": f"Weather in {city} and Oslo?"}]},
            {"role": "assistant", "content": None, "tool_calls": calls},
            {"role": "tool", "tool_call_id": "call_0", "content": json.dumps({"weather": "sunny"})},
            {"role": "tool", "tool_call_id": "call_1", "content": json.dumps({"weather": "snow"})},
            {"role": "assistant", "content": [{"type": "text", "value": f"Sunny in {city}, snow in Oslo."}]},
        ],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
    }


def pippa_record(bot_id: str | None, name: str, i: int) -> dict:
    """A PIPPA record: persona with {{char}}/{{user}}, the bot's greeting first."""
    record = {
        "bot_id": bot_id,
        "bot_name": name,
        "bot_greeting": f"*{name} waves* Hello, {{{{user}}}}!",
        "bot_description": "{{char}} is a lighthouse keeper who talks to {{user}} about ships.",
        "bot_definitions": f"{{{{user}}}}: Any ships today?\n{{{{char}}}}: Three, story {i}.",
        "categories": ["Adventure"],
        "submission_timestamp": 1680000000000 + i,
        "conversation": [
            {"message": f"*{name} waves* Hello, {{{{user}}}}!", "is_human": False},
            {"message": f"Hi {name}, any ships today? ({i})", "is_human": True},
            {"message": "Three, and one of them was on fire.", "is_human": False},
            {"message": "Double text: are you there?", "is_human": False},
            {"message": "Tell me more.", "is_human": True},
            {"message": f"It sank near the rocks, {{{{user}}}} (story {i}).", "is_human": False},
        ],
    }
    if bot_id is None:
        del record["bot_id"]
    return record


def mllm_record(images: list[str], text: str = "Who are they?") -> dict:
    """The mllm demo layout: messages with <image> placeholders and an images list of paths."""
    placeholders = "<image>" * len(images)
    return {
        "messages": [
            {"role": "user", "content": f"{placeholders}{text}"},
            {"role": "assistant", "content": "Two friends on a red square."},
            {"role": "user", "content": "What are they doing?"},
            {"role": "assistant", "content": "They are waving at the camera."},
        ],
        "images": images,
    }


def tiny_image(path: Path, color: tuple[int, int, int] = (200, 30, 30), size: int = 32) -> Path:
    """A small real PNG, made here (no download)."""
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), color).save(path)
    return path


def write_json_array(path: Path, records: list, bom: bool = False) -> Path:
    """A pretty-printed JSON array file, as LlamaFactory's demo data is written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(records, indent=2, ensure_ascii=False)
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def alpaca_record(instruction: str, output: str, inp: str = "", **extra) -> dict:
    """The Alpaca layout (LlamaFactory's default format): instruction, input, output."""
    return {"instruction": instruction, "input": inp, "output": output, **extra}


def dpo_record(question: str) -> dict:
    """The dpo demo layout: ShareGPT turns ending with the prompt, and two responses."""
    return {
        "conversations": [{"from": "human", "value": question}],
        "chosen": {"from": "gpt", "value": "A careful answer."},
        "rejected": {"from": "gpt", "value": "A careless answer."},
    }


def kto_record(question: str, good: bool) -> dict:
    """The kto demo layout: one exchange and a boolean label."""
    return {
        "messages": [
            {"role": "user", "content": question},
            {"role": "assistant", "content": "A careful answer." if good else "A careless answer."},
        ],
        "label": good,
    }


def v1_text(text: str, kind: str = "text") -> dict:
    return {"type": kind, "value": text}


def v1_tool_record(city: str) -> dict:
    """The v1 reasoning tool-use layout: text/reasoning/tool_call parts and a JSON ``tools`` string."""
    call = json.dumps({"name": "get_weather", "arguments": {"city": city}})
    return {
        "messages": [
            {"role": "system", "content": [v1_text("You use tools when they help.")]},
            {"role": "user", "content": [v1_text(f"Weather in {city}?")]},
            {
                "role": "assistant",
                "content": [
                    v1_text("The user wants the weather: call the tool.", "reasoning"),
                    v1_text(call, "tool_call"),
                ],
            },
            {"role": "tool", "content": [v1_text('{"weather": "snow"}')]},
            {
                "role": "assistant",
                "content": [v1_text("The tool said snow.", "reasoning"), v1_text(f"Snow in {city}.")],
            },
        ],
        "tools": json.dumps([{"type": "function", "function": WEATHER_TOOL}]),
    }


def v1_image_record(path: str) -> dict:
    """The v1 multimodal layout: an ``image_url`` part whose ``value`` is the path."""
    return {
        "messages": [
            {"role": "user", "content": [v1_text(path, "image_url"), v1_text("Who is this?")]},
            {"role": "assistant", "content": [v1_text("A goalkeeper.")]},
        ]
    }
