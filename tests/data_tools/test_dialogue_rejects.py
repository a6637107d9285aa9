"""Every bad record is rejected with its file, line, field and a precise reason; none vanish."""

from __future__ import annotations

import json

import pytest
from dialogue_helpers import chat, read_jsonl, run_cli, write_jsonl
from lfkit.data_tools.core.inputs import iter_lines
from lfkit.data_tools.core.records import RecordError, SourceLine, parse_record
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.transform import to_conversation

U = {"role": "user", "content": "hi"}
A = {"role": "assistant", "content": "hello"}


def rec(*turns, key: str = "messages", **extra) -> dict:
    """A record of role "r" with the given turns (plus extra top-level fields)."""
    return {"user_id": "r", key: list(turns), **extra}


def msg(role, content) -> dict:
    return {"role": role, "content": content}


IMAGE = [{"type": "image_url", "image_url": {}}]
BOT_FIELD = "conversations[0].from"
BAD_RECORDS = [
    # (line written to the file, reason, field)
    (b'{"user_id": "r", "messages": [', "malformed_json", None),
    (b'{"user_id": "r", "messages": [{"role": "user", "content": "caf\xe9"}]}', "invalid_utf8", None),
    (b"[1, 2, 3]", "not_an_object", None),
    ({"user_id": "r", "text": "no turns here"}, "missing_messages", "messages"),
    ({"user_id": "r", "messages": "hi there"}, "missing_messages", "messages"),
    (rec(), "empty_messages", "messages"),
    (rec(key="conversations"), "empty_messages", "conversations"),
    (rec(U, msg("narrator", "x")), "unknown_speaker_role", "messages[1].role"),
    (
        rec({"from": "bot", "value": "x"}, key="conversations"),
        "unknown_speaker_role",
        "conversations[0].from",
    ),
    (rec(msg("tool", "42"), A), "tool_result_without_call", "messages[0]"),
    (rec(U, msg("assistant", "<image> look")), "media_placeholder_mismatch", "messages"),
    (rec(msg("user", IMAGE), A), "invalid_media", "messages[0].content[0]"),
    (
        rec(msg("user", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]), A),
        "unsupported_media",
        "messages[0].content[0]",
    ),  # fmt: skip
    (rec(msg("user", [{"type": "audio_clip"}]), A), "non_text_content", "messages[0].content[0]"),
    (rec(msg("user", 42), A), "non_text_content", "messages[0].content"),
    (rec(U, A, system=["not", "text"]), "non_text_content", "system"),
    (rec(U, msg("assistant", "  ")), "empty_turn", "messages[1].content"),
    (rec(U, {"content": "x"}), "missing_speaker", "messages[1].role"),
    (rec(U, {"role": "assistant"}), "missing_content", "messages[1].content"),
    (rec(U, "hello"), "invalid_turn", "messages[1]"),
    (rec(U, A, msg("system", "late")), "misplaced_system_turn", "messages[2]"),
    (rec(msg("system", "s"), U), "no_assistant_turn", "messages"),
    ({"messages": [U, A]}, "missing_role_key", "user_id"),
    ({"user_id": "", "messages": [U, A]}, "missing_role_key", "user_id"),
    ({"user_id": {"id": 3}, "messages": [U, A]}, "missing_role_key", "user_id"),
]
IDS = [f"{reason}-{i}" for i, (_, reason, _) in enumerate(BAD_RECORDS)]


@pytest.mark.parametrize(
    ("line", "reason", "field"), BAD_RECORDS, ids=[f"{r}-{i}" for i, (_, r, _) in enumerate(BAD_RECORDS)]
)
def test_each_reject_reason_names_file_line_and_field(tmp_path, line, reason, field):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("good"), "", line, chat("good", tag="2")])
    result = run_cli("convert", src, "--out", tmp_path / "out", "--name", "d", "--role-key", "user_id")
    assert result.exit_code == 0, result.output
    assert "converted 2 + rejected 1 = read 3" in result.output
    (reject,) = read_jsonl(tmp_path / "out" / "d.rejects.jsonl")
    assert reject["reason"] == reason
    assert reject["field"] == field
    assert reject["file"] == str(src)
    assert reject["line"] == 3  # the true line number: the blank line 2 is skipped but counted
    assert reject["message"]
    raw = line if isinstance(line, bytes) else json.dumps(line).encode()
    assert reject["record"] == raw.decode("utf-8", errors="replace")
    assert len(read_jsonl(tmp_path / "out" / "d.jsonl")) == 2


def test_reject_record_preview_is_truncated(tmp_path):
    huge = b'{"user_id": "r", "messages": [' + b'{"role": "user", "content": "x"},' * 2000
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), huge])
    run_cli("convert", src, "--out", tmp_path / "out", "--name", "d", "--role-key", "user_id")
    (reject,) = read_jsonl(tmp_path / "out" / "d.rejects.jsonl")
    assert reject["reason"] == "malformed_json"
    assert len(reject["record"]) < 2100
    assert f"{len(huge)} bytes in all" in reject["record"]


def test_parse_line_errors_are_record_errors():
    with pytest.raises(RecordError) as err:
        parse_record(SourceLine("f", 1, b"\xff\xfe{}"))
    assert err.value.reason == "invalid_utf8"
    with pytest.raises(RecordError) as err:
        parse_record(SourceLine("f", 1, b'"just a string"'))
    assert err.value.reason == "not_an_object"
    assert parse_record(SourceLine("f", 1, b'{"a": 1}')) == {"a": 1}


def test_iter_lines_keeps_true_line_numbers_and_skips_blank_lines(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\r\n\n   \n{"a": 2}\n{"a": 3}')
    lines = list(iter_lines([path]))
    assert [(ln.lineno, ln.raw) for ln in lines] == [(1, b'{"a": 1}'), (4, b'{"a": 2}'), (5, b'{"a": 3}')]


def conv(record: dict, settings: LayoutSettings = LayoutSettings("user_id")):
    return to_conversation(record, Context.for_file("chars/alice.jsonl", settings))


def test_layouts_give_the_same_conversation():
    """OpenAI, ShareGPT, a leading system turn, odd speaker case and text parts all agree."""
    sharegpt = [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"}]
    text_parts = [{"type": "text", "text": "h"}, {"type": "text", "text": "i"}]
    records = [
        rec(U, A, system=" persona "),
        rec(*sharegpt, key="conversations", system="persona"),
        rec(msg("system", "persona"), U, A),
        rec(msg("User", "hi"), msg("ASSISTANT", "hello"), system="persona"),
        rec(msg("user", text_parts), A, system="persona"),
    ]
    for record in records:
        c = conv(record)
        assert (c.role, c.system, c.messages) == ("r", "persona", [U, A]), record


def test_trailing_user_turn_is_trimmed_and_counted():
    c = conv({"user_id": "r", "messages": [U, A, U]})
    assert c.messages == [U, A]
    assert c.notes.trimmed_user_turns == 1


def test_numeric_role_key_and_role_from_filename():
    assert conv({"user_id": 17, "messages": [U, A]}).role == "17"
    assert conv({"messages": [U, A]}, LayoutSettings(role_from_filename=True)).role == "alice"
    assert conv({"messages": [U, A]}, LayoutSettings()).role == ""


def test_pippa_layout_persona_role_and_greeting():
    record = {
        "bot_id": "bot42",
        "bot_name": "Ayla",
        "bot_description": "Ayla is a cheerful ranger.",
        "bot_definitions": "{{char}}: Let's go!",
        "conversation": [
            {"message": "Welcome, traveller!", "is_human": False},
            {"message": "Hi Ayla", "is_human": True},
            {"message": "Ready for the forest?", "is_human": False},
        ],
    }
    c = conv(record, LayoutSettings())
    assert c.role == "bot42"
    assert (
        c.system == "Ayla is a cheerful ranger.\n\nAyla: Let's go!\n\nOpening message:\nWelcome, traveller!"
    )
    assert c.messages == [
        {"role": "user", "content": "Hi Ayla"},
        {"role": "assistant", "content": "Ready for the forest?"},
    ]
    assert c.notes.moved_greetings == 1
    no_id = {"conversation": record["conversation"], "bot_name": "Ayla"}
    assert conv(no_id, LayoutSettings()).role == ""  # bot_id is needed only when roles are
    with pytest.raises(RecordError) as err:
        conv(no_id, LayoutSettings(roles_needed=True))
    assert (err.value.reason, err.value.field) == ("missing_role_key", "bot_id")
    with pytest.raises(RecordError) as err:
        conv({"bot_id": "b", "conversation": [{"message": "x", "is_human": "yes"}]}, LayoutSettings())
    assert (err.value.reason, err.value.field) == ("unknown_speaker_role", "conversation[0].is_human")


def test_strict_exits_non_zero_with_first_reasons_and_keeps_previous_dataset(tmp_path):
    src = write_jsonl(tmp_path / "in.jsonl", [chat("a"), chat("b")])
    out = tmp_path / "out"
    assert (
        run_cli("convert", src, "--out", out, "--name", "d", "--role-key", "user_id", "--strict").exit_code
        == 0
    )
    before = (out / "d.jsonl").read_bytes()
    bad = write_jsonl(
        tmp_path / "bad.jsonl", [chat("a", tag="x"), b"{oops", {"user_id": "c", "messages": [U]}]
    )
    result = run_cli("convert", bad, "--out", out, "--name", "d", "--role-key", "user_id", "--strict")
    assert result.exit_code == 1
    assert "--strict: 2 record(s) rejected" in result.output
    assert f"{bad}:2 malformed_json" in result.output
    assert f"{bad}:3 [messages] no_assistant_turn" in result.output
    assert (out / "d.jsonl").read_bytes() == before  # the dataset was not replaced
    assert [r["reason"] for r in read_jsonl(out / "d.rejects.jsonl")] == [
        "malformed_json",
        "no_assistant_turn",
    ]
