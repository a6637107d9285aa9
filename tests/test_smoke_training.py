"""The foundation works end to end: the plugin hook loads and a real LoRA run trains."""

from __future__ import annotations

import json

from conftest import tiny_recipe


def _write_sharegpt(dataset_dir, name="smoke"):
    rows = [
        {
            "messages": [
                {"role": "system", "content": "You are Bob."},
                {"role": "user", "content": f"Hello {i}, how are you?"},
                {"role": "assistant", "content": f"I am fine, thank you {i}."},
            ]
        }
        for i in range(8)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / f"{name}.json").write_text(json.dumps(rows))
    tags = {
        "role_tag": "role",
        "content_tag": "content",
        "user_tag": "user",
        "assistant_tag": "assistant",
        "system_tag": "system",
    }
    info = {name: {"file_name": f"{name}.json", "formatting": "sharegpt", "columns": {"messages": "messages"}, "tags": tags}}
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info))


def test_lora_trains_and_misspelt_key_is_rejected(tiny_model, run_train, tmp_path):
    _write_sharegpt(tmp_path / "data")
    ok = run_train(tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "out", kl_beta=0.0)).check()
    state = json.loads((ok.output_dir / "trainer_state.json").read_text())
    assert [r["step"] for r in state["log_history"] if "loss" in r] == [1, 2, 3, 4]

    bad = run_train(tiny_recipe(tiny_model, tmp_path / "data", "smoke", tmp_path / "out2", kl_betta=0.1))
    assert bad.returncode != 0
    assert "kl_betta" in bad.log
