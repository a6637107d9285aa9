"""Fail fast before loading: ``llamafactory-cli train`` stops on a recipe it cannot run, in one line.

Each test starts a real ``llamafactory-cli train`` (CPU-only, as on a machine without CUDA) on a
recipe with one problem, and checks that it stops before loading anything, with no traceback and
one line that names the recipe, the key and what to change.
"""

from __future__ import annotations

import importlib.util
import json

import pytest
from conftest import tiny_recipe

# Each test starts a llamafactory-cli process (seconds of imports each): not for the fast lane.
pytestmark = pytest.mark.train


def _data(dataset_dir):
    rows = [{"instruction": f"Say hi {i}.", "input": "", "output": "Hi!"} for i in range(4)]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / "hi.json").write_text(json.dumps(rows))
    (dataset_dir / "dataset_info.json").write_text(json.dumps({"hi": {"file_name": "hi.json"}}))


def _refusal(run) -> str:
    """The one line lfkit printed; the run stopped before loading and printed no traceback."""
    assert run.returncode == 1, run.log[-3000:]
    assert "Traceback" not in run.log
    assert "Loading" not in run.log and "Running tokenizer" not in run.log  # nothing was loaded
    (line,) = [line for line in run.log.splitlines() if line.startswith("lfkit: ")]
    return line


@pytest.fixture
def recipe(tiny_model, tmp_path):
    _data(tmp_path / "data")
    return lambda **keys: tiny_recipe(tiny_model, tmp_path / "data", "hi", tmp_path / "out", **keys)


def test_misspelt_key_gets_the_same_did_you_mean_as_recipe_check(recipe, run_train, tiny_model, tmp_path):
    from typer.testing import CliRunner

    from lfkit.cli import app

    bad = recipe(kl_betta=0.1)
    line = _refusal(run_train(bad))
    path = tmp_path / "recipe_0.yaml"  # the run_train fixture's file; kl_betta is its last line
    last = len(path.read_text().splitlines())
    assert line == (
        f"lfkit: {path}:{last}: unknown key 'kl_betta' (LlamaFactory rejects it); did you mean 'kl_beta'?"
    )
    checked = CliRunner().invoke(
        app, ["recipe", "check", str(path), "--tiny-model", str(tiny_model), "--json"]
    )
    (problem,) = json.loads(checked.stdout)["problems"]
    assert (problem["key"], problem["line"]) == ("kl_betta", last)
    assert problem["message"].endswith("; did you mean 'kl_beta'?")


def test_fp16_without_cuda_is_refused(recipe, run_train):
    """On the CPU accelerate would drop fp16 silently and train in float32."""
    line = _refusal(run_train(recipe(fp16=True)))
    assert ": fp16: true needs a CUDA GPU and this machine has none" in line


def test_bf16_without_a_bf16_gpu_is_refused_unless_use_cpu(recipe, run_train):
    line = _refusal(run_train(recipe(bf16=True)))
    assert "bf16: true needs a GPU with bf16 (Ampere or newer) and this machine has no CUDA GPU" in line
    assert "use_cpu: true to train in bf16 on the CPU" in line


def test_bf16_with_use_cpu_trains_in_bf16_on_the_cpu(recipe, run_train):
    """torch's CPU autocast runs bf16: the honest answer to bf16 on the CPU is to allow it when asked."""
    run = run_train(recipe(bf16=True, use_cpu=True, max_steps=1)).check()
    assert "compute dtype: torch.bfloat16" in run.log


def test_uncached_hub_model_with_the_hub_offline_is_refused(recipe, run_train):
    line = _refusal(run_train(recipe(model_name_or_path="Qwen/Qwen2.5-7B-Instruct")))
    assert (
        "model_name_or_path Qwen/Qwen2.5-7B-Instruct is not a local directory, not in the Hugging Face cache"
        in line
    )
    assert "the hub is offline (HF_HUB_OFFLINE=1)" in line


def test_uncached_hub_model_with_the_hub_unreachable_is_refused_without_retries(recipe, run_train):
    """Today's ~60 s of retries: here the hub is a closed local port, so the probe fails at once."""
    unreachable = {"HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_ENDPOINT": "http://127.0.0.1:9"}
    line = _refusal(run_train(recipe(model_name_or_path="Qwen/Qwen2.5-7B-Instruct"), env=unreachable))
    assert "and the hub (http://127.0.0.1:9) does not answer from this machine" in line


def test_gpu_only_settings_and_missing_paths_are_all_named_in_one_line(recipe, run_train, tmp_path):
    keys = dict(pure_bf16=True, deepspeed=str(tmp_path / "ds.json"), quantization_bit=4)
    line = _refusal(run_train(recipe(kl_ref_model="/no/such/model", **keys)))
    assert "pure_bf16: true needs a GPU with bf16 (Ampere or newer) and this machine has no CUDA GPU" in line
    assert ": deepspeed " in line  # not installed, or no CUDA for it
    assert "kl_ref_model /no/such/model is neither an existing local path nor a hub model id" in line
    if importlib.util.find_spec("bitsandbytes") is None:
        assert "quantization_bit needs the bitsandbytes package" in line
