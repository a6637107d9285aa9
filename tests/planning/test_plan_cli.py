"""``lfkit plan`` from the command line, as a user runs it: one coherent recommendation.

Each contradiction issue 12 found in the planner on main has a test here: advice that repeats what
the recipe already does (QLoRA for a QLoRA recipe, "prefer LoRA" for LoRA), advice that contradicts
the verdict ("fits", then "use QLoRA"), Python spellings in a YAML world (``deepspeed=None``), a
throughput for a setup that cannot run, exit status 0 for "runs: no", and GiB reported under
``*_gb`` keys.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.catalog import estimate_line, expected_estimate
from lfkit.planning.check import find_recipes
from lfkit.planning.gpus import Cluster, lookup_gpu
from lfkit.planning.plan import plan_for_recipe_file
from lfkit.planning.recipe_yaml import load_values

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)  # recipes name their DeepSpeed configs relative to the repository


def _plan(*args: str, status: int = 0) -> dict:
    result = runner.invoke(app, ["plan", *args, "--json"])
    assert result.exit_code == status, result.output
    return json.loads(result.stdout)


def _text(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["plan", *args], terminal_width=200)
    return result.exit_code, " ".join(result.output.split())


def _copy(tmp_path: Path, name: str, **changes) -> Path:
    recipe = load_values(REPO / "recipes" / name)
    recipe.update(changes)
    if "deepspeed" in recipe and not Path(recipe["deepspeed"]).is_absolute():
        recipe["deepspeed"] = str(REPO / recipe["deepspeed"])
    path = tmp_path / name
    path.write_text(yaml.safe_dump(recipe))
    return path


def test_a_qlora_recipe_is_not_told_to_use_qlora_and_every_change_is_yaml():
    for gpu in ("2080tix2", "2080ti"):
        plan = _plan("recipes/14b_2080ti_qlora.yaml", "--gpu", gpu, status=0 if gpu.endswith("x2") else 1)
        for s in plan["suggestions"]:
            assert "quantization_bit" not in s["set"], s  # it is already 4-bit
            assert "None" not in s["yaml"] and "=" not in s["yaml"], s
            for key, value in s["set"].items():
                # Each change is a YAML key a recipe can carry, spelt as YAML writes it.
                assert f"{key}: {yaml.safe_dump(value).strip().removesuffix('...').strip()}" in s["yaml"]
    _, text = _text("recipes/14b_2080ti_qlora.yaml", "--gpu", "2080ti")
    assert "None" not in text and "QLoRA 4-bit" not in text


def test_a_plan_that_fits_gives_no_advice_without_a_benefit():
    # On main: "fits", then "use QLoRA" (the team's <16 GB rule printed unconditionally).
    for recipe, gpu in (("style_1.5b_quick.yaml", "rtx-3050-6gb"), ("qwen2.5_3b_json_lora.yaml", "4090")):
        plan = _plan(f"recipes/{recipe}", "--gpu", gpu)
        assert plan["runs"] is True
        for s in plan["suggestions"]:
            assert s["runs"] and re.match(r"(faster: [\d.]+x|more headroom: \d+%)", s["reason"]), s
        _, text = _text(f"recipes/{recipe}", "--gpu", gpu)
        assert "use QLoRA" not in text and "prefer LoRA" not in text


def test_lora_recipes_are_never_told_to_prefer_lora():
    for path in find_recipes([Path("recipes")]):
        values = load_values(path)
        if values.get("finetuning_type", "lora") != "lora":
            continue
        line = re.search(r"^# Plan:\s*lfkit plan (.+)$", path.read_text(), re.M).group(1).split()
        plan = _plan(*line)
        assert all("finetuning_type" not in s["set"] for s in plan["suggestions"]), (
            path,
            plan["suggestions"],
        )
        assert "prefer LoRA" not in json.dumps(plan)


def test_large_full_tuning_gets_the_team_rule_as_a_recipe_change():
    plan = _plan("recipes/qwen3_30b_roleplay_full_zero3.yaml", "--gpu", "a100-80x8")
    assert plan["model"]["total_params_b"] == 30.5
    lora = [s for s in plan["suggestions"] if s["set"].get("finetuning_type") == "lora"]
    assert len(lora) == 1 and "30B and up, LoRA is required" in lora[0]["reason"]
    assert lora[0]["samples_per_second"] > plan["time"]["samples_per_second"]


def test_exit_status_and_no_throughput_for_a_setup_that_cannot_run():
    runs = _plan("recipes/14b_rtx6000.yaml", "--gpu", "rtx-6000-adax2", "--samples", "417", status=0)
    assert runs["status_name"] == "runs" and runs["time"]["samples_per_second"] > 0
    assert runs["time"]["schedule"]["total_steps"] == 70 and runs["time"]["effective_batch"] == 32
    # Over memory: exit 1, no throughput (main printed one and exited 0 with "runs: no").
    over = _plan("recipes/14b_rtx6000.yaml", "--gpu", "quadro-rtx-6000x2", status=1)
    assert over["fits"] is False and over["runs"] is False and over["time"] is None
    code, text = _text("recipes/14b_rtx6000.yaml", "--gpu", "quadro-rtx-6000x2")
    assert code == 1 and "does NOT fit" in text and "throughput: none" in text and "samples/s (" not in text
    fitting = [s for s in over["suggestions"] if s["runs"]]
    assert fitting and all(s["peak_memory_gib"] <= over["memory"]["device_memory_gib"] for s in fitting)
    # Blocked: exit 3 whatever the memory; the fix comes first, in YAML.
    blocked = _plan("recipes/style_1.5b_quick.yaml", "--gpu", "2080ti", status=3)
    assert blocked["fits"] is True and blocked["time"] is None
    assert blocked["blocking"][0]["fix"] == {"bf16": False, "fp16": True}
    assert blocked["suggestions"][0]["yaml"] == "bf16: false, fp16: true"
    assert blocked["suggestions"][0]["reason"].startswith("fixes: bf16: true but GeForce RTX 2080 Ti")
    cluster = Cluster.of(lookup_gpu("2080ti"))
    line = estimate_line(plan_for_recipe_file(REPO / "recipes/style_1.5b_quick.yaml", cluster))
    assert ": cannot run: bf16: true but GeForce RTX 2080 Ti" in line and "samples/s" not in line
    bad = runner.invoke(app, ["plan", "recipes/14b_rtx6000.yaml", "--gpu", "rtx6000x2"])
    assert bad.exit_code == 2 and "ambiguous" in bad.output


def test_too_few_gpus_for_a_deepspeed_batch_size_cannot_run(tmp_path):
    ds = json.loads((REPO / "recipes/deepspeed/ds_z2.json").read_text())
    ds["train_batch_size"] = 32  # DeepSpeed checks it against batch x accumulation x GPUs
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    recipe = _copy(
        tmp_path, "14b_rtx6000.yaml", deepspeed=str(tmp_path / "ds.json")
    )  # batch 2 x accumulation 8
    assert _plan(str(recipe), "--gpu", "rtx-6000-adax2")["status"] == 0
    one = _plan(str(recipe), "--gpu", "rtx-6000-ada", status=3)
    assert "train_batch_size 32" in one["blocking"][0]["problem"]
    assert one["suggestions"][0]["set"] == {"gradient_accumulation_steps": 16}


def test_units_gib_and_gb_are_named_and_consistent():
    plan = _plan("recipes/h100_lora.yaml", "--gpu", "h100")

    def keys(obj, prefix=""):
        if isinstance(obj, dict):
            for k, v in obj.items():
                yield prefix + k
                yield from keys(v, prefix + k + ".")

    all_keys = list(keys(plan))
    assert not any(
        k.endswith("peak_memory_gb") or k == "memory_gb" for k in all_keys
    )  # main's GiB-in-_gb keys
    memory = plan["memory"]
    assert memory["peak_gb"] == pytest.approx(memory["peak_gib"] * 2**30 / 1e9, abs=2e-3)
    assert memory["device_memory_gb"] == pytest.approx(memory["device_memory_gib"] * 2**30 / 1e9, abs=0.01)
    assert sum(memory["components_gib"].values()) == pytest.approx(memory["peak_gib"], abs=0.02)
    _, text = _text("recipes/h100_lora.yaml", "--gpu", "h100")
    assert "GiB = 2^30 bytes" in text and f"peak {memory['peak_gib']:.2f} GiB of the 79.65 GiB" in text
    line = expected_estimate(REPO / "recipes/h100_lora.yaml")[1]
    assert f"{memory['peak_gib']:.1f} GiB peak per GPU of 79.65 GiB" in line  # one value, three outputs


def test_nodes_say_which_inter_node_bandwidth_they_assume(tmp_path):
    one = _plan("recipes/qwen3_30b_roleplay_full_zero3.yaml", "--gpu", "a100-80x8")
    two = _plan("recipes/qwen3_30b_roleplay_full_zero3.yaml", "--gpu", "a100-80x8", "--nodes", "2")
    hw = two["hardware"]
    assert (hw["world_size"], hw["inter_node_gbit_per_s"], hw["inter_node_assumed"]) == (16, 1600, True)
    assert two["memory"]["components_gib"]["optimizer"] == pytest.approx(
        one["memory"]["components_gib"]["optimizer"] / 2, abs=1e-3
    )
    _, text = _text("recipes/qwen3_30b_roleplay_full_zero3.yaml", "--gpu", "a100-80x8", "--nodes", "2")
    assert "2 nodes x 8x A100 80GB SXM (16 GPUs), inter-node 1600 Gbit/s = 200 GB/s per node" in text
    assert "assumed; set --inter-node-gbit" in text
    slow = _plan(
        "recipes/qwen3_30b_roleplay_full_zero3.yaml",
        "--gpu",
        "a100-80x8",
        "--nodes",
        "2",
        "--inter-node-gbit",
        "100",
    )
    assert slow["hardware"]["inter_node_assumed"] is False and slow["hardware"]["inter_node_gb_per_s"] == 12.5
    assert slow["time"]["step_seconds"] > 3 * two["time"]["step_seconds"]  # ZeRO-3 gathers cross the network
    # A recipe header's Plan line can name the nodes and the network; its Estimate line repeats them.
    text = (REPO / "recipes/qwen3_30b_roleplay_lora_zero2.yaml").read_text()
    text = re.sub(
        r"^# Plan:.*$",
        "# Plan:      lfkit plan x.yaml --gpu h100x8 --nodes 2 --inter-node-gbit 800",
        text,
        flags=re.M,
    )
    text = text.replace("recipes/deepspeed/", str(REPO / "recipes/deepspeed") + "/")
    path = tmp_path / "x.yaml"
    path.write_text(text)
    assert "; inter-node 800 Gbit/s per node (given)" in expected_estimate(path)[1]


def test_host_ram_for_cpu_offload(tmp_path):
    plan = _plan("recipes/14b_2080ti_lora_zero3_offload.yaml", "--gpu", "2080tix2")
    host = plan["host_memory_per_node"]
    # ChatTS-14B's 16-bit weight shards and the LoRA optimizer state (16 bytes per trainable
    # parameter) in CPU RAM, x1.5 pinned buffers, plus two training processes of 3 GiB.
    states = (plan["model"]["total_params"] * 2 + plan["model"]["trainable_params"] * 16) * 1.5
    assert host["offload"] and host["peak_gib"] == pytest.approx(states / 2**30 + 6, abs=0.01)
    short = _plan(
        "recipes/14b_2080ti_lora_zero3_offload.yaml", "--gpu", "2080tix2", "--host-ram-gib", "32", status=1
    )
    assert short["verdict"] == "does NOT fit the host RAM" and short["time"] is None
    _plan("recipes/14b_2080ti_lora_zero3_offload.yaml", "--gpu", "2080tix2", "--host-ram-gib", "64", status=0)


def test_model_size_override_and_local_config(tmp_path, tiny_model):
    eight = _plan("recipes/14b_rtx6000.yaml", "--gpu", "rtx-6000-adax2", "--model-size", "8B")
    assert eight["model"]["name"] == "ChatTS-8B"
    path = _copy(tmp_path, "h100_lora.yaml", model_name_or_path=str(tiny_model))
    plan = _plan(str(path), "--gpu", "h100")
    assert plan["model"]["source"] == str(tiny_model / "config.json")
    assert plan["model"]["total_params"] < 1_000_000 and plan["fits"] is True


def test_kl_beta_is_counted_and_lora_needs_no_reference_copy(tmp_path):
    kl = _plan("recipes/style_7b_standard.yaml", "--gpu", "3090")
    plain = _plan(str(_copy(tmp_path, "style_7b_standard.yaml", kl_beta=0)), "--gpu", "3090")
    assert "kl_reference" not in kl["memory"]["components_gib"]
    tokens = 1 * 1024  # batch x cutoff_len
    # kl_beta's chunked loss (bf16 logits + gradient buffer, float32 chunks, reference hidden states)
    # replaces stock cross-entropy's 12 bytes per entry
    chunked = (tokens * 152064 * 4 + 4 * 2**22 * 4 + tokens * 3584 * 2) / 2**30
    assert kl["memory"]["components_gib"]["logits"] == pytest.approx(chunked, abs=2e-3)
    stock = tokens * 152064 * 12 / 2**30
    assert plain["memory"]["components_gib"]["logits"] == pytest.approx(stock, abs=2e-3)
    # The reference forward is one more pass per step.
    assert kl["time"]["step_seconds"] > plain["time"]["step_seconds"]
    # kl_beta needs the logits Liger's fused loss never builds: the plugin refuses the pair.
    liger = _plan(
        str(_copy(tmp_path, "style_7b_standard.yaml", enable_liger_kernel=True)), "--gpu", "3090", status=3
    )
    assert liger["suggestions"][0]["set"] == {"enable_liger_kernel": False}


def test_kl_beta_with_freeze_counts_a_frozen_reference_copy(tmp_path):
    plain = _plan(str(_copy(tmp_path, "h100_freeze.yaml")), "--gpu", "h100")
    kl = _plan(str(_copy(tmp_path, "h100_freeze.yaml", kl_beta=0.1)), "--gpu", "h100")
    copy_gib = kl["model"]["total_params"] * 2 / 2**30  # bf16: 2 bytes per parameter
    assert kl["memory"]["components_gib"]["kl_reference"] == pytest.approx(copy_gib, abs=1e-3)
    # the copy is on top; kl_beta's chunked loss itself needs less than stock cross-entropy's logits
    lighter_loss = plain["memory"]["components_gib"]["logits"] - kl["memory"]["components_gib"]["logits"]
    assert lighter_loss > 0
    assert kl["memory"]["peak_gib"] >= plain["memory"]["peak_gib"] + copy_gib - lighter_loss - 1e-3
