"""Records in the layouts real users and LlamaFactory itself have, written for the tests.

The layouts reproduce LlamaFactory 0.9.5's own demo data (``data/glaive_toolcall_en_demo.json``:
a JSON array of ShareGPT ``conversations`` with ``function_call`` / ``observation`` turns and
a ``tools`` string; ``data/mllm_demo.json``: a JSON array of ``messages`` with an ``images``
list of paths relative to the data folder), OpenAI chat records with ``tool_calls`` and
``tool`` messages, PIPPA role-play records (``bot_id``, ``bot_name``, ``bot_description``,
``bot_definitions``, ``conversation`` [``message``, ``is_human``]) and per-character folders.
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
