"""The fast path gives exactly what the full conversation rules give, on every record it takes.

The corpus is every record layout the tests build plus systematic variations of plain chat
records (speaker spellings, system turns, whitespace, trailing user turns, placeholders,
template variables, extra keys, roles as numbers or padded strings), under each way of reading
roles. For each record the fast path either declines (None) or returns a Conversation equal
to the full path's; and it must take the plain records, or it would prove nothing.
"""

from __future__ import annotations

import copy
import json

import pytest
from dialogue_helpers import SAMPLE, chat
from layout_fixtures import (
    alpaca_record,
    dpo_record,
    glaive_record,
    kto_record,
    mllm_record,
    openai_tool_record,
    pippa_record,
    v1_tool_record,
)
from lfkit.data_tools.core.records import RecordError
from lfkit.data_tools.dialogue.build import Policy
from lfkit.data_tools.dialogue.fastpath import fast_conversation
from lfkit.data_tools.dialogue.layouts.common import Context, LayoutSettings
from lfkit.data_tools.dialogue.transform import full_conversation


def variations(record: dict) -> list[dict]:
    out = [record]
    key = "messages" if "messages" in record else "conversations"
    turns = record.get(key) or []
    speaker, text = ("role", "content") if key == "messages" else ("from", "value")

    def changed(fn) -> dict:
        new = copy.deepcopy(record)
        fn(new)
        return new

    if turns:
        out.append(changed(lambda r: r[key].insert(0, {speaker: "system", text: " Be kind. "})))
        out.append(changed(lambda r: r[key].append({speaker: "user", text: "one more?"})))
        out.append(changed(lambda r: r[key][0].update({text: "  padded  "})))
        out.append(changed(lambda r: r[key][0].update({text: "look <image> here"})))
        out.append(changed(lambda r: r[key][0].update({text: "hi {{char}} and {{user}}"})))
        out.append(changed(lambda r: r[key][0].update({text: "   "})))
        out.append(changed(lambda r: r[key][1].update({"name": "extra"})))
        out.append(changed(lambda r: r[key][0].update({speaker: "User"})))
        out.append(changed(lambda r: r[key][0].update({speaker: "human"})))
        out.append(changed(lambda r: r[key].reverse()))
        out.append(changed(lambda r: r.update({"system": 7})))
        out.append(changed(lambda r: r.update({"system": "  persona of alice  "})))
        out.append(changed(lambda r: r.update({"user_id": 42})))
        out.append(changed(lambda r: r.update({"user_id": " alice  smith "})))
        out.append(changed(lambda r: r.update({"user_id": ""})))
        out.append(changed(lambda r: r.update({"images": []})))
        out.append(changed(lambda r: r.update({"tools": "[]"})))
        out.append(changed(lambda r: r[key].__setitem__(slice(2, None), [])))
    return out


def corpus() -> list[dict]:
    base = [chat("alice", n, tag=str(n), system=s) for n in (1, 2, 3) for s in (None, "You are alice.")]
    sharegpt = [
        {
            "user_id": "bob",
            "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}],
        },
        {
            "user_id": "bob",
            "conversations": [{"from": "user", "value": "a"}, {"from": "assistant", "value": "b"}],
        },
    ]
    layouts = [glaive_record("Paris", "sunny"), openai_tool_record("Bern"), pippa_record("b1", "Mira", 1)]
    layouts.append(mllm_record(["nowhere.png"]))
    # preference and KTO records must never be taken as plain SFT (the full path refuses them)
    dpo = dpo_record("Why?")  # with history, so that its turns alone look like plain SFT
    dpo["conversations"][:0] = [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello."}]
    layouts += [alpaca_record("Add 2 and 2.", "4"), dpo, kto_record("Why?", False)]
    layouts += [v1_tool_record("Oslo"), {**chat("alice", 1, tag="l"), "label": "nsfw"}]
    sample = [json.loads(line) for line in SAMPLE.read_bytes().splitlines() if _is_json(line)]
    records = []
    for record in base + sharegpt + layouts:
        records.extend(variations(record))
    return records + sample


def _is_json(line: bytes) -> bool:
    try:
        return isinstance(json.loads(line), dict)
    except ValueError:
        return False


SETTINGS = [
    LayoutSettings(),
    LayoutSettings(role_key="user_id"),
    LayoutSettings(role_key="user_id", roles_needed=True),
    LayoutSettings(role_from_filename=True),
    LayoutSettings(role_key="user_id", policy=Policy(merge_consecutive=False, greeting_to_system=False)),
]


@pytest.mark.parametrize("settings", SETTINGS, ids=range(len(SETTINGS)))
def test_fast_path_equals_the_full_rules(settings):
    ctx = Context.for_file("chars/Alice Smith.jsonl", settings)
    taken = 0
    records = corpus()
    for record in records:
        try:
            fast = fast_conversation(copy.deepcopy(record), ctx)
            hinted = fast_conversation(copy.deepcopy(record), ctx, json.dumps(record).encode())
        except RecordError as err:  # the fast path never rejects: it declines
            raise AssertionError(f"fast path raised {err.reason} for {record}") from None
        assert hinted == fast, record  # the raw-text hint only skips work
        if fast is None:
            continue
        taken += 1
        full = full_conversation(copy.deepcopy(record), ctx)
        assert fast == full, record
    assert taken >= len(records) // 4, (taken, len(records))  # it does take the plain records
