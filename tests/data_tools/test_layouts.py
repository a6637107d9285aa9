"""Every layout LlamaFactory trains on converts, and nothing is silently lost.

Records in each layout (see layout_fixtures.py), good and bad, each checked: converted as
expected or rejected with its reason and field, and ``converted + rejected = read``. Converted
tool-use and multimodal datasets are also read back through LlamaFactory 0.9.5's own loader
and converter (``_load_single_dataset`` + ``align_dataset``), as training reads them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from dialogue_helpers import chat, per_role, read_jsonl, run_cli, write_jsonl
from layout_fixtures import (
    alpaca_record,
    dpo_record,
    glaive_record,
    kto_record,
    mllm_record,
    openai_tool_record,
    pippa_record,
    tiny_image,
    v1_image_record,
    v1_tool_record,
    write_json_array,
)


def flat(text: str) -> str:
    return " ".join(text.replace("│", " ").split())


def convert(src, out: Path, *options, code: int = 0):
    result = run_cli("convert", "dialogue", src, "--out", out, "--name", "d", *options)
    assert result.exit_code == code, result.output
    return flat(result.output)


def rejects(out: Path) -> list[dict]:
    path = out / "d.rejects.jsonl"
    return read_jsonl(path) if path.exists() else []


def llamafactory_rows(dataset_dir: Path, name: str) -> list[dict]:
    """The dataset as LlamaFactory's loader and sharegpt converter align it for training."""
    from llamafactory.data.loader import _load_single_dataset
    from llamafactory.data.parser import get_dataset_list
    from llamafactory.hparams import DataArguments, ModelArguments
    from transformers import Seq2SeqTrainingArguments

    data_args = DataArguments(dataset_dir=str(dataset_dir), dataset=[name])
    (attr,) = get_dataset_list([name], str(dataset_dir))
    training = Seq2SeqTrainingArguments(output_dir=str(dataset_dir / "_lf"), report_to="none")
    aligned = _load_single_dataset(attr, ModelArguments(model_name_or_path="unused"), data_args, training)
    return list(aligned)


def test_glaive_tool_call_layout_json_array(tmp_path):
    good = [glaive_record("Paris", "sunny"), glaive_record("Rome", "rainy")]
    bad_call = glaive_record("Kyiv", "cold")
    bad_call["conversations"][1]["value"] = "get_weather(city=Kyiv)"  # not JSON
    stray = glaive_record("Lima", "mild")
    del stray["conversations"][1]  # a tool result nobody asked for
    bad_tools = glaive_record("Cairo", "hot")
    bad_tools["tools"] = '{"description": "no name"}'
    src = write_json_array(
        tmp_path / "glaive_toolcall_demo.json", [good[0], bad_call, stray, good[1], bad_tools]
    )
    out = tmp_path / "out"
    text = convert(src, out)
    assert "converted 2 + rejected 3 = read 5" in text
    assert [(r["line"], r["reason"], r["field"], r.get("element")) for r in rejects(out)] == [
        (1, "invalid_tool_call", "conversations[1].value", True),
        (2, "tool_result_without_call", "conversations[1]", True),
        (4, "invalid_tools", "tools", True),
    ]
    rows = read_jsonl(out / "d.jsonl")
    paris = next(r for r in rows if "Paris" in r["messages"][0]["content"])
    assert [m["role"] for m in paris["messages"]] == [
        "user", "function_call", "observation", "assistant", "user", "assistant",
    ]  # fmt: skip
    assert json.loads(paris["messages"][1]["content"]) == {
        "name": "get_weather",
        "arguments": {"city": "Paris"},
    }
    assert json.loads(paris["tools"])[0]["name"] == "get_weather"
    entry = json.loads((out / "dataset_info.json").read_text())["d"]
    assert entry["columns"] == {"messages": "messages", "system": "system", "tools": "tools"}
    assert (
        entry["tags"]["function_tag"] == "function_call" and entry["tags"]["observation_tag"] == "observation"
    )
    aligned = llamafactory_rows(out, "d")
    assert len(aligned) == 2 and all(row["_prompt"] for row in aligned)  # none dropped as "broken"
    assert [m["role"] for m in aligned[0]["_prompt"]][:3] == ["user", "function", "observation"]
    assert json.loads(aligned[0]["_tools"])[0]["name"] == "get_weather"


def test_openai_tool_calls_developer_role_and_text_parts(tmp_path):
    broken = openai_tool_record("Lyon")
    broken["messages"][2]["tool_calls"][0]["function"]["arguments"] = "{city: Lyon"
    unanswered = openai_tool_record("Nice")
    del unanswered["messages"][3:5]  # the calls get no result before the assistant replies
    src = write_jsonl(tmp_path / "openai.jsonl", [openai_tool_record("Bern"), broken, unanswered])
    out = tmp_path / "out"
    assert "converted 1 + rejected 2 = read 3" in convert(src, out)
    assert [(r["line"], r["reason"], r["field"]) for r in rejects(out)] == [
        (2, "invalid_tool_call", "messages[2].tool_calls[0]"),
        (3, "tool_call_without_result", "messages[3]"),
    ]
    (row,) = read_jsonl(out / "d.jsonl")
    assert row["system"] == "You answer weather questions with the tool."  # developer = system
    assert row["messages"][0] == {"role": "user", "content": "Weather in Bern and Oslo?"}  # input_text part
    calls = json.loads(row["messages"][1]["content"])
    assert calls == [
        {"name": "get_weather", "arguments": {"city": "Bern"}},
        {"name": "get_weather", "arguments": {"city": "Oslo"}},
    ]  # arguments decoded from OpenAI's JSON strings, as LlamaFactory's formatter needs
    assert row["messages"][2]["role"] == "observation"
    assert row["messages"][2]["content"].count("</tool_response>\n<tool_response>") == 1  # two results
    assert row["messages"][3] == {
        "role": "assistant",
        "content": "Sunny in Bern, snow in Oslo.",
    }  # value part
    assert json.loads(row["tools"])[0]["function"]["name"] == "get_weather"


def test_mllm_demo_layout_keeps_images_and_checks_them(tmp_path):
    data = tmp_path / "raw"
    tiny_image(data / "mllm_demo_data" / "1.png")
    tiny_image(data / "mllm_demo_data" / "2.png", (20, 90, 200))
    records = [
        mllm_record(["mllm_demo_data/1.png", "mllm_demo_data/2.png"]),
        mllm_record(["mllm_demo_data/missing.png"]),
        mllm_record(["mllm_demo_data/1.png"], text="<image> twice?"),
        {**mllm_record([]), "videos": ["clip.mp4"]},
        mllm_record(["https://example.com/1.png"]),
        mllm_record(["mllm_demo_data/2.png"]),
    ]
    records[3]["messages"][0]["content"] = "<video>What happens?"
    src = write_json_array(data / "mllm_demo.json", records)
    out = tmp_path / "out"
    assert "converted 2 + rejected 4 = read 6" in convert(src, out)
    got = [(r["line"], r["reason"], r["field"]) for r in rejects(out)]
    assert got == [
        (1, "missing_media", "images[0]"),
        (2, "media_placeholder_mismatch", "images"),
        (3, "missing_media", "videos[0]"),
        (4, "unsupported_media", "images[0]"),
    ]
    assert "mllm_demo_data/missing.png" in rejects(out)[0]["message"]  # the missing path is named
    rows = read_jsonl(out / "d.jsonl")
    first = next(r for r in rows if len(r["images"]) == 2)
    assert first["images"] == [str(data / "mllm_demo_data" / "1.png"), str(data / "mllm_demo_data" / "2.png")]
    entry = json.loads((out / "dataset_info.json").read_text())["d"]
    assert entry["columns"]["images"] == "images" and "videos" not in entry["columns"]
    aligned = llamafactory_rows(out, "d")
    assert sorted(len(row["_images"]) for row in aligned) == [1, 2]


def test_pippa_persona_names_greeting_and_double_texts(tmp_path):
    records = [pippa_record("b1", "Mira", i) for i in range(3)] + [pippa_record(None, "Oren", 9)]
    nameless = pippa_record("b2", "", 5)
    records.append(nameless)
    src = write_jsonl(tmp_path / "pippa.jsonl", records)
    out = tmp_path / "out"
    text = convert(src, out, "--user-name", "Alex")
    assert "converted 4 + rejected 1 = read 5" in text
    assert "assistant greetings moved into the system text 4" in text
    assert "consecutive turns of one side merged 4" in text
    (reject,) = rejects(out)
    assert (reject["reason"], reject["field"]) == ("missing_character_name", "bot_name")
    rows = read_jsonl(out / "d.jsonl")
    mira = next(r for r in rows if r["role_id"] == "b1")
    assert "{{" not in json.dumps(rows)
    assert mira["system"].startswith("Mira is a lighthouse keeper who talks to Alex about ships.")
    assert "Alex: Any ships today?\nMira: Three" in mira["system"]
    assert mira["system"].endswith("Opening message:\n*Mira waves* Hello, Alex!")
    assert (
        mira["messages"][1]["content"] == "Three, and one of them was on fire.\nDouble text: are you there?"
    )
    assert {r["role_id"] for r in rows} == {"b1", ""}  # no bot_id: converted, as no sampling asked for roles
    sampled = tmp_path / "sampled"
    text = convert(src, sampled, "--max-per-role", "1")  # now roles are needed
    assert [r["reason"] for r in rejects(sampled)] == ["missing_role_key", "missing_character_name"]
    strict = tmp_path / "strict"
    convert(src, strict, "--no-merge-consecutive", code=1)
    assert {r["reason"] for r in rejects(strict)} == {"consecutive_assistant_turns", "missing_character_name"}


def test_per_character_directory_reads_every_file(tmp_path):
    chars = tmp_path / "chars"
    write_jsonl(chars / "alice.jsonl", [{"messages": chat("x", 1, tag=str(i))["messages"]} for i in range(3)])
    write_json_array(
        chars / "carol.json", [{"messages": chat("c", 2, tag=str(i))["messages"]} for i in range(2)]
    )
    sharegpt = [{"from": "human", "value": "hi {{char}}"}, {"from": "gpt", "value": "hi {{user}}"}]
    write_jsonl(chars / "dave.JSONL", [{"conversations": sharegpt}])
    write_jsonl(
        chars / "sub" / "eve.jsonl", [{"messages": chat("e", 1)["messages"], "system": "She is shy."}]
    )
    write_jsonl(chars / "bob.jsonl.gz", [{"messages": chat("b", 1)["messages"]}], gz=True)
    (chars / "notes.txt").write_text("not data")
    write_jsonl(chars / ".cache.jsonl", [chat("hidden")])
    out = tmp_path / "out"
    text = convert(chars, out)
    assert "converted 8 + rejected 0 = read 8" in text
    assert "2 file(s) under the input directories were not read" in text
    assert (
        "notes.txt: not .jsonl, .json, .jsonl.gz or .json.gz" in text and ".cache.jsonl: hidden file" in text
    )
    rows = read_jsonl(out / "d.jsonl")
    assert per_role(rows) == {"alice": 3, "carol": 2, "dave": 1, "eve": 1, "bob": 1}
    by_role = {r["role_id"]: r for r in rows}
    assert by_role["carol"]["system"] == "You are carol."  # the character's name reaches the prompt
    assert by_role["eve"]["system"] == "You are eve.\n\nShe is shy."
    assert by_role["dave"]["messages"] == [
        {"role": "user", "content": "hi dave"},
        {"role": "assistant", "content": "hi User"},
    ]


def test_greeting_and_double_texts_outside_pippa(tmp_path):
    greeting = {"messages": [{"role": "assistant", "content": "Welcome to the inn!"}, *chat("r")["messages"]],
                "user_id": "inn"}  # fmt: skip
    double = {"user_id": "inn", "messages": [{"role": "user", "content": "hello"},
              {"role": "user", "content": "anyone?"}, {"role": "assistant", "content": "yes"}]}  # fmt: skip
    src = write_jsonl(tmp_path / "in.jsonl", [greeting, double])
    out = tmp_path / "out"
    text = convert(src, out, "--role-key", "user_id")
    assert "converted 2 + rejected 0" in text and "assistant greetings moved into the system text 1" in text
    rows = sorted(
        read_jsonl(out / "d.jsonl"), key=lambda r: r["system"], reverse=True
    )  # training order is shuffled
    assert rows[0]["system"] == "Opening message:\nWelcome to the inn!"
    assert rows[1]["messages"][0]["content"] == "hello\nanyone?"
    off = tmp_path / "off"
    convert(src, off, "--role-key", "user_id", "--no-merge-consecutive", "--no-greeting-to-system", code=1)
    assert [(r["reason"], r["field"]) for r in rejects(off)] == [
        ("assistant_first", "messages[0]"),
        ("consecutive_user_turns", "messages[1]"),
    ]


def test_bom_nan_and_role_whitespace(tmp_path):
    first = json.dumps(chat("alice")).encode()
    nan = b'{"user_id": "alice ", "score": NaN, "messages": [{"role": "user", "content": "q"}, ' \
          b'{"role": "assistant", "content": "a"}]}'  # fmt: skip
    src = write_jsonl(tmp_path / "win.jsonl", [b"\xef\xbb\xbf" + first, nan, chat(" bob\t", tag="2")])
    out = tmp_path / "out"
    text = convert(src, out, "--role-key", "user_id")
    assert "converted 3 + rejected 0 = read 3" in text
    assert "role names merged by whitespace normalisation 2" in text
    assert per_role(read_jsonl(out / "d.jsonl")) == {"alice": 2, "bob": 1}
    arr = write_json_array(tmp_path / "arr.json", [chat("a"), chat("b")], bom=True)
    assert "converted 2 + rejected 0 = read 2" in convert(arr, tmp_path / "arr", "--role-key", "user_id")
    ts = tmp_path / "ts.jsonl"
    ts.write_bytes(b'{"input": "S: <ts><ts/>", "output": "o", "meta": NaN, "timeseries": [[1.0, 2.0]]}\n')
    result = run_cli("convert", "timeseries", ts, "--out", tmp_path / "ts_out", "--name", "ts")
    assert "converted 1 + rejected 0 = read 1" in flat(result.output)


def test_broken_json_array_rejects_the_rest_in_one_record(tmp_path):
    src = tmp_path / "cut.json"
    src.write_text(json.dumps([chat("a"), chat("b")], indent=2)[:-40])  # cut inside the second element
    out = tmp_path / "out"
    assert "converted 1 + rejected 1 = read 2" in convert(src, out, "--role-key", "user_id")
    (reject,) = rejects(out)
    assert (reject["line"], reject["reason"], reject["element"]) == (1, "malformed_json", True)
    assert "cannot be read from element 1 on" in reject["message"]


def test_exact_duplicates_are_dropped_before_sampling(tmp_path):
    a, b = chat("r1", 2, tag="a"), chat("r2", 2, tag="b")
    spaced = json.loads(json.dumps(a))
    spaced["messages"][0]["content"] = "  question 0 for r1   a\n"  # the same after normalising whitespace
    spaced["user_id"] = "r9"  # another role: still the same conversation
    squeezed = json.loads(json.dumps(b))
    squeezed["messages"][0]["content"] = squeezed["messages"][0]["content"].replace(
        " ", "", 1
    )  # not the same
    records = [a, b, a, spaced, squeezed] + [chat(f"r{i % 3}", 1, tag=str(i)) for i in range(20)] + [b]
    src = write_jsonl(tmp_path / "dups.jsonl", records)
    out = tmp_path / "out"
    text = convert(src, out, "--role-key", "user_id", "--val-ratio", "0.3", "--seed", "1")
    assert "converted 23 + rejected 3 = read 26" in text and "duplicate 3" in text
    dups = rejects(out)
    assert [(d["line"], d["reason"], d["duplicate_of"]["line"]) for d in dups] == [
        (3, "duplicate", 1), (4, "duplicate", 1), (26, "duplicate", 2),
    ]  # fmt: skip
    train, val = read_jsonl(out / "d.jsonl"), read_jsonl(out / "d_val.jsonl")
    assert len(train) + len(val) == 23 and val

    def content(row):
        return json.dumps({k: v for k, v in row.items() if k != "role_id"}, sort_keys=True)

    assert not {content(r) for r in val} & {content(r) for r in train}  # no validation row trains


def test_near_duplicates_within_a_role(tmp_path):
    long = " ".join(f"word{i}" for i in range(60))
    base = {
        "user_id": "ann",
        "messages": [{"role": "user", "content": long}, {"role": "assistant", "content": long}],
    }
    edited = json.loads(json.dumps(base))
    edited["messages"][1]["content"] = long.replace("word30", "WORD-thirty")
    other_role = {**json.loads(json.dumps(edited)), "user_id": "bob"}
    other_role["messages"][0]["content"] = long.replace("word40", "word-forty")  # not an exact copy
    src = write_jsonl(tmp_path / "near.jsonl", [base, edited, other_role, chat("ann", tag="x")])
    stats = run_cli("stats", "dialogue", src, "--role-key", "user_id", "--dedup", "near")
    assert "near duplicates within a role dropped 1" in flat(stats.output)
    out = tmp_path / "out"
    text = convert(src, out, "--role-key", "user_id", "--dedup", "near")
    assert "converted 3 + rejected 1 = read 4" in text
    (dup,) = rejects(out)
    assert (dup["line"], dup["reason"], dup["duplicate_of"]["line"]) == (2, "near_duplicate", 1)
    assert per_role(read_jsonl(out / "d.jsonl")) == {"ann": 2, "bob": 1}  # not across roles
    plain = tmp_path / "plain"
    assert "converted 4 + rejected 0" in convert(src, plain, "--role-key", "user_id")


def test_val_by_role_holds_out_whole_roles(tmp_path):
    records = [chat(f"role{r}", 1, tag=str(i)) for r in range(10) for i in range(2 + r % 3)]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    out = tmp_path / "out"
    text = convert(src, out, "--role-key", "user_id", "--val-ratio", "0.3", "--val-by", "role", "--seed", "3")
    train, val = read_jsonl(out / "d.jsonl"), read_jsonl(out / "d_val.jsonl")
    assert val and not set(per_role(train)) & set(per_role(val))
    assert len(train) + len(val) == len(records)
    assert "validation conversations (whole roles)" in text
    entry = json.loads((out / "dataset_info.json").read_text())["d_val"]
    assert entry["lfkit"]["val_by"] == "role"


def test_parquet_output_is_registered_and_loads_in_llamafactory(tmp_path):
    records = [glaive_record("Paris", "sunny"), chat("x")]
    src = write_jsonl(tmp_path / "in.jsonl", records)
    jsonl_out, parquet_out = tmp_path / "j", tmp_path / "p"
    convert(src, jsonl_out)
    convert(src, parquet_out, "--format", "parquet")
    entry = json.loads((parquet_out / "dataset_info.json").read_text())["d"]
    assert entry["file_name"] == "d.parquet" and entry["columns"]["tools"] == "tools"
    via_jsonl, via_parquet = llamafactory_rows(jsonl_out, "d"), llamafactory_rows(parquet_out, "d")
    assert via_parquet == via_jsonl  # a text-only row gets an empty tools value in both
    convert(src, parquet_out)  # back to jsonl: the earlier parquet file is retired
    assert not (parquet_out / "d.parquet").exists() and (parquet_out / "d.jsonl").exists()


@pytest.mark.parametrize("context_only", [False, True])
def test_round_trip_of_lfkit_output(tmp_path, context_only):
    """lfkit's own output (function_call/observation roles) converts again to the same rows."""
    src = write_jsonl(tmp_path / "in.jsonl", [glaive_record("Paris", "sunny"), openai_tool_record("Bern")])
    first, second = tmp_path / "a", tmp_path / "b"
    extra = ["--context-only"] if context_only else []
    convert(src, first, *extra)
    convert(first / "d.jsonl", second)

    def rows(out):
        return sorted(json.dumps(r, sort_keys=True) for r in read_jsonl(out / "d.jsonl"))

    assert rows(second) == rows(first)


def test_timeseries_parquet_matches_its_jsonl(tmp_path):
    import pyarrow.parquet as pq

    sample = Path(__file__).resolve().parents[2] / "data_tools" / "samples" / "chatts_sample.jsonl"
    for fmt in ("jsonl", "parquet"):
        result = run_cli(
            "convert", "timeseries", sample, "--out", tmp_path / fmt, "--name", "ts", "--format", fmt
        )
        assert result.exit_code == 0, result.output
    rows = read_jsonl(tmp_path / "jsonl" / "ts.jsonl")
    assert pq.read_table(tmp_path / "parquet" / "ts.parquet").to_pylist() == rows
    entry = json.loads((tmp_path / "parquet" / "dataset_info.json").read_text())["ts"]
    assert entry["file_name"] == "ts.parquet" and entry["columns"]["timeseries"] == "timeseries"


def _by_first_prompt(rows: list[dict]) -> dict[str, dict]:
    return {row["_prompt"][0]["content"]: row for row in rows}


def test_alpaca_layout_reads_as_llamafactorys_own_alpaca_converter(tmp_path):
    good = [
        alpaca_record("Give three tips for staying healthy.", "Eat, sleep, move."),
        alpaca_record("Translate to French.", "Bonjour.", inp="Hello."),
        alpaca_record(
            "And in German?",
            "Hallo.",
            system="You translate.",
            history=[["Translate to French: Hello.", "Bonjour."], ["And Spanish?", "Hola."]],
        ),
    ]
    bad = [
        alpaca_record("Say nothing.", ""),  # an empty output
        {"instruction": "No output at all."},
        alpaca_record("Odd history.", "x", history=[["only a prompt"]]),
    ]
    src = write_json_array(tmp_path / "alpaca_en_demo.json", good + bad)
    out = tmp_path / "out"
    assert "converted 3 + rejected 3 = read 6" in convert(src, out)
    assert [(r["line"], r["reason"], r["field"]) for r in rejects(out)] == [
        (3, "empty_turn", "output"),
        (4, "no_assistant_turn", "output"),
        (5, "invalid_turn", "history[0]"),
    ]
    # The same records through LlamaFactory's own Alpaca converter, registered as its demo is.
    upstream = tmp_path / "upstream"
    write_json_array(upstream / "alpaca.json", good)
    columns = {"prompt": "instruction", "query": "input", "response": "output", "system": "system"}
    info = {"orig": {"file_name": "alpaca.json", "columns": {**columns, "history": "history"}}}
    (upstream / "dataset_info.json").write_text(json.dumps(info))
    theirs = _by_first_prompt(llamafactory_rows(upstream, "orig"))
    ours = _by_first_prompt(llamafactory_rows(out, "d"))
    assert ours.keys() == theirs.keys()
    for prompt, row in theirs.items():
        mine = ours[prompt]
        assert (mine["_prompt"], mine["_response"]) == (row["_prompt"], row["_response"]), prompt
        assert mine["_system"] == (row["_system"] or ""), prompt


def test_preference_and_kto_records_are_refused_not_trained_as_sft(tmp_path):
    records = [
        dpo_record("Which is better?"),  # dpo_en_demo: ShareGPT + chosen/rejected
        {**alpaca_record("Rank these.", ["good", "bad"])},  # Alpaca ranking: an output list
        kto_record("Is this good?", True),  # kto_en_demo: a boolean label
        kto_record("Is this bad?", False),
        {**chat("alice", 1, tag="x"), "label": "casual"},  # a text label is only metadata
    ]
    out = tmp_path / "out"
    assert "converted 1 + rejected 4 = read 5" in convert(write_jsonl(tmp_path / "mixed.jsonl", records), out)
    found = [(r["line"], r["reason"], r["field"]) for r in rejects(out)]
    assert found == [
        (1, "preference_record", "chosen"),
        (2, "preference_record", "output"),
        (3, "kto_record", "label"),
        (4, "kto_record", "label"),
    ]
    assert all("dataset_info.json" in r["message"] for r in rejects(out))
    assert "undesirable" in rejects(out)[3]["message"]


def test_records_of_layouts_not_read_get_a_hint(tmp_path):
    sillytavern = [  # a SillyTavern chat export: a metadata line, then one message per line
        {"user_name": "You", "character_name": "Mira", "create_date": "2025-1-2", "chat_metadata": {}},
        {"name": "Mira", "is_user": False, "is_system": False, "send_date": "2025-1-2", "mes": "Hello!"},
    ]
    records = [{"text": "Some web page."}, *sillytavern]
    out = tmp_path / "out"
    text = convert(write_jsonl(tmp_path / "mixed.jsonl", records), out, code=1)
    assert "converted 0 + rejected 3 = read 3" in text and "no record was converted" in text
    found = rejects(out)
    assert {r["reason"] for r in found} == {"missing_messages"}
    assert "pretraining text" in found[0]["message"]
    assert all("SillyTavern chat file" in r["message"] for r in found[1:])


def test_v1_reasoning_and_tool_call_parts_become_think_text_and_calls(tmp_path):
    src = write_jsonl(tmp_path / "reason_tool_use_demo.jsonl", [v1_tool_record("Oslo")])
    out = tmp_path / "out"
    assert "converted 1 + rejected 0 = read 1" in convert(src, out)
    (row,) = read_jsonl(out / "d.jsonl")
    assert row["system"] == "You use tools when they help."
    assert [m["role"] for m in row["messages"]] == ["user", "function_call", "observation", "assistant"]
    think, call = row["messages"][1]["content"].split("<tool_call>")
    assert think == "<think>\nThe user wants the weather: call the tool.\n</think>\n\n"
    assert json.loads(call.removesuffix("</tool_call>")) == {
        "name": "get_weather",
        "arguments": {"city": "Oslo"},
    }
    assert row["messages"][3]["content"] == "<think>\nThe tool said snow.\n</think>\n\nSnow in Oslo."
    assert json.loads(row["tools"])[0]["function"]["name"] == "get_weather"
    (aligned,) = llamafactory_rows(out, "d")
    assert [m["role"] for m in aligned["_prompt"]] == ["user", "function", "observation"]
    # What the model is trained on: LlamaFactory's qwen3 template renders the call turn as v1's
    # own Qwen3 template does (the thought, then the call in its tool-call words).
    from llamafactory.data.template import TEMPLATES

    qwen3 = TEMPLATES["qwen3"]
    (rendered,) = qwen3.format_function.apply(
        content=row["messages"][1]["content"],
        thought_words=qwen3.thought_words,
        tool_call_words=qwen3.tool_call_words,
    )
    assert rendered == (
        "<think>\nThe user wants the weather: call the tool.\n</think>\n\n<tool_call>\n"
        '{"name": "get_weather", "arguments": {"city": "Oslo"}}\n</tool_call><|im_end|>\n'
    )


def test_v1_media_parts_resolve_from_the_repository_root_too(tmp_path, monkeypatch):
    # v1_multimodal_demo.jsonl names "data/mllm_demo_data/1.jpg", relative to the repository root
    image = tiny_image(tmp_path / "data" / "mllm_demo_data" / "1.png")
    records = [v1_image_record("data/mllm_demo_data/1.png"), v1_image_record("data/mllm_demo_data/9.png")]
    src = write_jsonl(tmp_path / "data" / "v1_multimodal_demo.jsonl", records)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    assert "converted 1 + rejected 1 = read 2" in convert(src, out)
    (row,) = read_jsonl(out / "d.jsonl")
    assert row["images"] == [str(image)]
    assert row["messages"][0]["content"] == "<image>Who is this?"
    (reject,) = rejects(out)
    assert reject["reason"] == "missing_media" and reject["field"] == "messages[0].content[0]"
    assert str(tmp_path / "data" / "data" / "mllm_demo_data" / "9.png") in reject["message"]
    assert str(tmp_path / "data" / "mllm_demo_data" / "9.png") in reject["message"]
