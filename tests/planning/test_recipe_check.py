"""``lfkit recipe check`` on the whole catalog and on deliberately broken recipes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lfkit.cli import app
from lfkit.planning.catalog import read_plan_line
from lfkit.planning.check import activate_plugin, check_recipe, find_recipes, load_recipe
from lfkit.planning.plan import Status, plan_for_recipe_file

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


@pytest.fixture(autouse=True)
def _in_repo(monkeypatch):
    monkeypatch.chdir(REPO)


def test_whole_catalog_parses_with_llamafactory(tiny_model):
    activate_plugin()
    recipes = find_recipes([Path("recipes")])
    assert len(recipes) >= 19
    found = {}
    for recipe in recipes:
        for p in check_recipe(recipe, tiny_model, Path(".")):
            found[(p.recipe, p.key)] = p.message
    assert not found, found


def test_catalog_check_cli_exits_zero(tiny_model):
    catalog = [str(p) for p in find_recipes([Path("recipes")])]
    result = runner.invoke(app, ["recipe", "check", *catalog, "--tiny-model", str(tiny_model)])
    assert result.exit_code == 0, result.output
    assert f"{len(catalog)} recipe(s) checked: {len(catalog)} ok" in result.output


def test_header_estimates_match_the_planner():
    result = runner.invoke(app, ["recipe", "estimates"])
    assert result.exit_code == 0, result.output


def test_every_catalog_recipe_fits_and_runs_on_its_own_hardware():
    # Each recipe names its target hardware in a Plan line; by the planner's own estimate it must fit
    # there, and nothing may block it (a bf16 recipe planned on a Turing card cannot run). On main,
    # 8b_2080ti_lora_zero3.yaml did not fit its 2x 2080 Ti.
    for recipe in find_recipes([Path("recipes")]):
        plan_line = read_plan_line(recipe)
        assert plan_line is not None, f"{recipe} has no '# Plan:' line"
        plan = plan_for_recipe_file(recipe, plan_line.cluster())
        assert plan.status is Status.RUNS, (recipe, plan.verdict)


def test_estimates_fail_on_a_recipe_without_a_plan_line(tmp_path):
    text = (REPO / "recipes/style_7b_standard.yaml").read_text()
    no_plan = re.sub(r"^# (Plan|Estimate):.*\n", "", text, flags=re.M)
    assert "# Plan:" not in no_plan
    path = _broken(tmp_path, "style_no_plan.yaml", no_plan)
    for args in ([], ["--write"]):
        result = runner.invoke(app, ["recipe", "estimates", str(path), *args])
        assert result.exit_code == 1, result.output
        assert f"{path}: no '# Plan:' line" in result.output and "--gpu NAME[xN]" in result.output
    assert path.read_text() == no_plan  # --write cannot invent a Plan line
    # A Plan line that is not an lfkit plan command is an error too, not a silent skip.
    path.write_text("# Plan:      see the 7B recipe\n" + no_plan)
    result = runner.invoke(app, ["recipe", "estimates", str(path)])
    assert result.exit_code == 1 and "must be an `lfkit plan" in result.output


def test_estimates_write_adds_the_line_after_a_new_plan_line(tmp_path):
    text = (REPO / "recipes/style_14b_large.yaml").read_text()
    estimate = re.search(r"^# Estimate:.*$", text, flags=re.M).group(0)
    path = _broken(tmp_path, "style_14b_large.yaml", text.replace(estimate + "\n", ""))
    assert runner.invoke(app, ["recipe", "estimates", str(path)]).exit_code == 1
    result = runner.invoke(app, ["recipe", "estimates", str(path), "--write"])
    assert result.exit_code == 0, result.output
    assert path.read_text() == text


def _broken(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _check_json(path: Path, tiny_model: Path) -> tuple[int, dict[str, dict]]:
    """Exit code and {key: problem} of ``lfkit recipe check PATH --json``."""
    result = runner.invoke(app, ["recipe", "check", str(path), "--tiny-model", str(tiny_model), "--json"])
    report = json.loads(result.stdout)
    assert all(p["recipe"] == str(path) for p in report["problems"])
    return result.exit_code, {p["key"]: p for p in report["problems"]}


def _line(text: str, key: str, last: bool = False) -> int:
    lines = [i + 1 for i, s in enumerate(text.splitlines()) if s.startswith(key + ":")]
    return lines[-1] if last else lines[0]


def test_broken_recipe_reports_recipe_line_and_key(tmp_path, tiny_model):
    recipe = (REPO / "recipes/h100_lora.yaml").read_text()
    recipe = recipe.replace("lora_rank: 16", "lora_rnak: 16")  # misspelt key
    recipe = recipe.replace("dataset: roleplay_sample ", "dataset: roleplay_sampel ")  # unknown dataset
    recipe += (
        "deepspeed: recipes/deepspeed/ds_z9.json\nlearning_rate: 3.0e-4\n"  # missing file, duplicate key
    )
    path = _broken(tmp_path, "broken.yaml", recipe)
    code, found = _check_json(path, tiny_model)
    assert code == 1
    assert set(found) == {"lora_rnak", "dataset", "deepspeed", "learning_rate"}
    assert found["lora_rnak"]["line"] == _line(recipe, "lora_rnak")
    assert "did you mean 'lora_rank'" in found["lora_rnak"]["message"]
    assert found["deepspeed"]["line"] == _line(recipe, "deepspeed")
    assert "ds_z9.json does not exist" in found["deepspeed"]["message"]
    assert "did you mean 'roleplay_sample'" in found["dataset"]["message"]
    assert found["learning_rate"]["line"] == _line(recipe, "learning_rate", last=True)
    assert "duplicate key" in found["learning_rate"]["message"]
    # The human form names the same recipe and counts the same problems.
    human = runner.invoke(app, ["recipe", "check", str(path), "--tiny-model", str(tiny_model)])
    assert human.exit_code == 1 and "1 with 4 problem(s)" in re.sub(r"\s+", " ", human.output)


def test_template_typo_and_deepspeed_disagreement(tmp_path, tiny_model):
    ds = json.loads((REPO / "recipes/deepspeed/ds_z3.json").read_text())
    ds["bf16"]["enabled"] = False  # the recipe trains in bf16
    (tmp_path / "ds.json").write_text(json.dumps(ds))
    recipe = (REPO / "recipes/qwen2.5_3b_unified_lora.yaml").read_text()
    recipe = recipe.replace("template: qwen\n", "template: qwne\n")
    recipe += f"deepspeed: {tmp_path / 'ds.json'}\npure_bf16: true\n"
    path = _broken(tmp_path, "typo.yaml", recipe)
    code, found = _check_json(path, tiny_model)
    assert code == 1
    assert set(found) == {"template", "bf16", "pure_bf16"}
    assert "did you mean 'qwen'" in found["template"]["message"]
    assert (
        found["bf16"]["line"] == _line(recipe, "bf16") and "bf16.enabled is False" in found["bf16"]["message"]
    )
    assert "incompatible with DeepSpeed ZeRO-3" in found["pure_bf16"]["message"]


def test_value_llamafactory_rejects_names_its_key(tmp_path, tiny_model):
    recipe = (
        (REPO / "recipes/qwen2.5_3b_unified_lora.yaml")
        .read_text()
        .replace("save_steps: 100", "save_steps: 150")
    )
    code, found = _check_json(_broken(tmp_path, "steps.yaml", recipe), tiny_model)
    assert code == 1 and set(found) == {"load_best_model_at_end"}
    assert found["load_best_model_at_end"]["line"] == _line(recipe, "load_best_model_at_end")
    assert "multiple of the evaluation steps" in found["load_best_model_at_end"]["message"]


def test_not_yaml_and_missing_paths(tmp_path, tiny_model):
    path = _broken(tmp_path, "bad.yaml", "stage: sft\n  finetuning_type: [lora\n")
    code, found = _check_json(path, tiny_model)
    assert code == 1 and "not valid YAML" in found["(yaml)"]["message"] and found["(yaml)"]["line"] == 2
    missing = runner.invoke(app, ["recipe", "check", str(tmp_path / "nope.yaml")])
    assert missing.exit_code == 2


def test_values_are_read_as_llamafactory_reads_them(tmp_path, tiny_model):
    # PyYAML reads 2e-4 as the string "2e-4" (and LlamaFactory's parser would pass it on unchecked);
    # LlamaFactory loads recipes with OmegaConf, which reads a float, and so must the check.
    recipe = (
        (REPO / "recipes/h100_lora.yaml").read_text().replace("learning_rate: 1.0e-4", "learning_rate: 2e-4")
    )
    path = _broken(tmp_path, "exp.yaml", recipe)
    src, problems = load_recipe(path)
    assert problems == [] and src.values["learning_rate"] == pytest.approx(2e-4)
    code, found = _check_json(path, tiny_model)
    assert code == 0 and found == {}
