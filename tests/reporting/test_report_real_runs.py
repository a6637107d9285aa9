"""The report and plots on real tiny training runs and hand-broken copies, checked against the files.

The runs are made once per session (they are this directory's whole training budget):

- ``lora``: LoRA, 2 epochs, eval loss every step, with the lfkit plugin's run record;
- ``full``: full fine-tuning, 2 epochs, eval at each epoch end, ``lfkit_run_record: false``,
  so the report must fall back to LlamaFactory's own files (and say what it cannot know).
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import llamafactory_cli, tiny_recipe, train_env


def write_dataset(dataset_dir: Path, name: str = "greet", rows: int = 12) -> None:
    """A small sharegpt dataset and its dataset_info.json."""
    data = [
        {
            "messages": [
                {"role": "system", "content": "You are Bob."},
                {"role": "user", "content": f"Hello {i}, how are you today?"},
                {"role": "assistant", "content": f"I am fine, thank you {i}. The values rise and fall."},
            ]
        }
        for i in range(rows)
    ]
    dataset_dir.mkdir(parents=True, exist_ok=True)
    (dataset_dir / f"{name}.json").write_text(json.dumps(data))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    tags["system_tag"] = "system"
    entry = {"file_name": f"{name}.json", "formatting": "sharegpt", "columns": {"messages": "messages"}}
    entry["tags"] = tags
    (dataset_dir / "dataset_info.json").write_text(json.dumps({name: entry}))


def _train(recipe: dict, recipe_path: Path) -> Path:
    recipe_path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    proc = subprocess.run(
        [llamafactory_cli(), "train", str(recipe_path)],
        env=train_env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    return Path(recipe["output_dir"])


@pytest.fixture(scope="session")
def real_saves(tiny_model, tmp_path_factory) -> Path:
    """``saves/`` holding the real ``lora`` and ``full`` runs (session scope: trained once)."""
    base = tmp_path_factory.mktemp("reporting_runs")
    write_dataset(base / "data")
    saves = base / "saves"
    common = dict(
        max_steps=None,
        num_train_epochs=2,
        val_size=0.25,
        per_device_eval_batch_size=2,
        plot_loss=False,
    )
    lora = tiny_recipe(
        tiny_model,
        base / "data",
        "greet",
        saves / "lora",
        eval_strategy="steps",
        eval_steps=1,
        save_strategy="steps",  # checkpoint-5 and checkpoint-10: part of the run, not runs of their own
        save_steps=5,
        **common,
    )
    _train(lora, base / "lora.yaml")
    full = tiny_recipe(
        tiny_model,
        base / "data",
        "greet",
        saves / "full",
        finetuning_type="full",
        lora_target=None,
        lora_rank=None,
        learning_rate=1e-4,
        eval_strategy="epoch",
        lfkit_run_record=False,
        **common,
    )
    _train(full, base / "full.yaml")
    return saves


@pytest.fixture
def broken_saves(real_saves, tmp_path) -> Path:
    """A copy of the real saves plus hand-broken copies of the runs.

    - ``crashed``: the LoRA run's ``trainer_log.jsonl`` cut in the middle of its 7th line, and its
      ``checkpoint-5``, as a run killed mid-training leaves its output dir (the rest is written at
      the end);
    - ``no_state``: the full run without ``trainer_state.json``;
    - ``empty``: an empty output directory (a run that never started).
    """
    saves = tmp_path / "saves"
    shutil.copytree(real_saves, saves)
    crashed = saves / "crashed"
    crashed.mkdir()
    lines = (real_saves / "lora" / "trainer_log.jsonl").read_text().splitlines(keepends=True)
    (crashed / "trainer_log.jsonl").write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    shutil.copytree(real_saves / "lora" / "checkpoint-5", crashed / "checkpoint-5")
    no_state = saves / "no_state"
    shutil.copytree(real_saves / "full", no_state)
    (no_state / "trainer_state.json").unlink()
    (saves / "empty").mkdir()
    return saves


# ---------------------------------------------------------------- reading the report back


def table_rows(markdown: str, first_header: str) -> list[dict[str, str]]:
    """The rows of the markdown table whose header starts with ``| first_header |``, as dicts."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |"))
    header = [c.strip() for c in lines[start].strip("|").split(" | ")]
    rows = []
    for line in lines[start + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        assert len(cells) == len(header), line
        rows.append(dict(zip(header, cells, strict=True)))
    return rows


def runs_by_label(markdown: str) -> dict[str, dict[str, str]]:
    return {row["run"].strip("`"): row for row in table_rows(markdown, "run")}


def footnotes(markdown: str) -> dict[str, str]:
    """``{"[^1]": "reason", ...}`` from the footnote definitions."""
    notes = {}
    for line in markdown.splitlines():
        if line.startswith("[^") and "]: " in line:
            ref, text = line.split(": ", 1)
            notes[ref] = text
    return notes


def section(markdown: str, heading: str) -> str:
    """The text from ``heading`` to the next heading of the same or a higher level."""
    level = heading.split(" ")[0]
    lines = markdown.splitlines()
    start = lines.index(heading)
    out = []
    for line in lines[start + 1 :]:
        if line.startswith("#") and len(line.split(" ")[0]) <= len(level):
            break
        out.append(line)
    return "\n".join(out)


def loss_entries(run_dir: Path) -> tuple[list[dict], list[dict]]:
    """Training-loss and eval-loss entries of trainer_state.json's log_history."""
    history = json.loads((run_dir / "trainer_state.json").read_text())["log_history"]
    return [h for h in history if "loss" in h], [h for h in history if "eval_loss" in h]


def jsonl_entries(run_dir: Path) -> list[dict]:
    out = []
    for line in (run_dir / "trainer_log.jsonl").read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return out


def report(saves: Path, tmp_path: Path, *, plots: bool = False) -> str:
    from lfkit.reporting.report import build_report

    out = tmp_path / "report" / "README.md"
    build_report([saves], out, tmp_path / "report" / "plots" if plots else None)
    return out.read_text()


# ---------------------------------------------------------------- tests

pytestmark = pytest.mark.train


def test_runs_table_numbers_come_from_the_run_files(real_saves, tmp_path):
    md = report(real_saves, tmp_path)
    rows = runs_by_label(md)
    notes = footnotes(md)
    assert set(rows) == {"saves/lora", "saves/full"}  # checkpoint-5/10 of lora are no runs of their own
    assert (real_saves / "lora" / "checkpoint-10" / "trainer_state.json").is_file()

    for name, method in (("lora", "lora"), ("full", "full")):
        run_dir = real_saves / name
        row = rows[f"saves/{name}"]
        state = json.loads((run_dir / "trainer_state.json").read_text())
        results = json.loads((run_dir / "train_results.json").read_text())
        train, evals = loss_entries(run_dir)
        assert row["method"] == method
        assert (
            row["model"]
            == Path(
                json.loads((real_saves / "lora" / "adapter_config.json").read_text())[
                    "base_model_name_or_path"
                ]
            ).name
        )
        assert row["quantization"] == "none"
        assert row["steps"] == str(state["global_step"]) == str(train[-1]["step"])
        assert float(row["epochs"]) == state["epoch"] == 2.0
        assert row["train seconds"] == f"{results['train_runtime']:.1f}"
        assert row["train minutes"] == f"{results['train_runtime'] / 60:.2f}"
        assert float(row["samples/s"]) == results["train_samples_per_second"]
        assert row["final loss"] == f"{train[-1]['loss']:.4f}"
        assert row["final eval loss"] == f"{evals[-1]['eval_loss']:.4f}"
        assert row["trend"] in {"still decreasing", "plateaued", "fluctuating", "eval loss rising"}

    # lora ran with the plugin's record: hardware and memory come from it.
    record = json.loads((real_saves / "lora" / "lfkit_run.json").read_text())
    assert rows["saves/lora"]["hardware"] == record["hardware"]["summary"]
    rss_gib = record["memory"]["peak_rss_bytes"] / 2**30
    assert rows["saves/lora"]["peak memory"] == f"{rss_gib:.2f} GiB RSS (CPU)"
    # full ran with lfkit_run_record: false: no record, so those cells are empty with a reason.
    assert not (real_saves / "full" / "lfkit_run.json").exists()
    for column in ("hardware", "peak memory"):
        cell = rows["saves/full"][column]
        assert cell in notes and "lfkit_run.json" in notes[cell], (column, cell)
    assert "None: every run directory is complete." in section(md, "## Problems")


def test_per_epoch_table_matches_trainer_log(real_saves, tmp_path):
    """Mean training loss per epoch and the eval loss at its end, recomputed from trainer_log.jsonl."""
    md = report(real_saves, tmp_path)
    for name in ("lora", "full"):
        entries = jsonl_entries(real_saves / name)  # the other file: the report read trainer_state.json
        expected: dict[int, dict] = {}
        for entry in entries:
            epoch = max(1, math.ceil(entry["epoch"] - 1e-9))
            slot = expected.setdefault(epoch, {"losses": [], "eval": None})
            if "loss" in entry:
                slot["losses"].append(entry["loss"])
            if "eval_loss" in entry:
                slot["eval"] = entry["eval_loss"]
        rows = table_rows(section(md, f"### `saves/{name}`"), "epoch")
        assert [int(r["epoch"]) for r in rows] == sorted(expected) == [1, 2]
        for row in rows:
            slot = expected[int(row["epoch"])]
            assert int(row["logged steps"]) == len(slot["losses"])
            assert row["mean train loss"] == f"{sum(slot['losses']) / len(slot['losses']):.4f}"
            assert row["eval loss (last in epoch)"] == f"{slot['eval']:.4f}"


def test_trend_verdict_follows_the_documented_rule(real_saves, tmp_path):
    """The verdict equals the rule applied to trainer_log.jsonl, and its printed numbers match numpy's fit."""
    import numpy as np

    from lfkit.reporting import trends

    md = report(real_saves, tmp_path)
    rows = runs_by_label(md)
    entries = jsonl_entries(real_saves / "lora")
    losses = [e["loss"] for e in entries if "loss" in e]
    evals = [(e["current_steps"], e["eval_loss"]) for e in entries if "eval_loss" in e]
    verdict = trends.judge(losses, evals)
    assert rows["saves/lora"]["trend"] == verdict.verdict
    assert f"Trend: **{verdict.verdict}**" in section(md, "### `saves/lora`")
    if verdict.relative_drop is not None:
        half = losses[len(losses) // 2 :]
        slope = np.polyfit(np.arange(len(half)), half, 1)[0]
        assert verdict.relative_drop == pytest.approx(-slope * (len(half) - 1) / np.mean(half), rel=1e-6)
        moves = "falls" if verdict.relative_drop >= 0 else "rises"
        printed = f"second half {moves} {abs(verdict.relative_drop) * 100:.2f}%"
        assert printed in section(md, "### `saves/lora`")


def test_best_method_finding_names_the_lower_final_eval_loss(real_saves, tmp_path):
    md = report(real_saves, tmp_path)
    final_eval = {name: loss_entries(real_saves / name)[1][-1]["eval_loss"] for name in ("lora", "full")}
    best = min(final_eval, key=final_eval.get)
    findings = section(md, "## Key findings")
    assert f"**{best}** converged best by final eval loss" in findings
    for name, value in final_eval.items():
        assert f"{name} {value:.4f} (saves/{name})" in findings
    # Neither comparison of speed applies to one model on one (recorded) hardware.
    assert "Hardware speed ratio: no model" in findings


def test_broken_runs_are_listed_not_skipped(broken_saves, tmp_path):
    md = report(broken_saves, tmp_path)
    rows = runs_by_label(md)
    notes = footnotes(md)
    problems = section(md, "## Problems")
    assert set(rows) == {"saves/lora", "saves/full", "saves/crashed", "saves/no_state"}

    # crashed: only a truncated trainer_log.jsonl; the six complete lines still give its curve.
    crashed = rows["saves/crashed"]
    complete = jsonl_entries(broken_saves / "crashed")
    assert len(complete) == 6
    assert crashed["final loss"] == f"{[e for e in complete if 'loss' in e][-1]['loss']:.4f}"
    for column in ("steps", "train seconds", "samples/s", "model", "method"):
        assert crashed[column] in notes, column
    assert "trainer_state.json" in notes[crashed["steps"]]
    assert "`saves/crashed`: trainer_log.jsonl line 7: invalid JSON" in problems
    assert "`saves/crashed`: trainer_state.json: missing" in problems
    assert "`saves/crashed`: checkpoint-5: latest checkpoint saved before the end" in problems

    # no_state: trainer_state.json deleted; epochs and times still come from all_results.json.
    results = json.loads((broken_saves / "no_state" / "all_results.json").read_text())
    no_state = rows["saves/no_state"]
    assert no_state["steps"] in notes
    assert float(no_state["epochs"]) == results["epoch"]
    assert no_state["train seconds"] == f"{results['train_runtime']:.1f}"
    assert "`saves/no_state`: trainer_state.json: missing" in problems

    assert "`saves/empty`: not a run: empty directory" in problems


def test_bad_field_is_named_with_file_line_and_field(real_saves, tmp_path):
    from lfkit.reporting.runs import load_run

    run_dir = tmp_path / "bad"
    shutil.copytree(real_saves / "lora", run_dir)
    (run_dir / "trainer_state.json").unlink()
    lines = (run_dir / "trainer_log.jsonl").read_text().splitlines()
    entry = json.loads(lines[2])
    assert "loss" in entry
    entry["loss"] = "six"
    lines[2] = json.dumps(entry)
    (run_dir / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
    run = load_run(run_dir)
    problems = [str(p) for p in run.problems]
    assert "trainer_log.jsonl line 3 field 'loss': log entry 2: not a number: 'six'" in problems
    assert entry["current_steps"] not in [p.step for p in run.train_log]


def test_plot_command_writes_readable_pngs(broken_saves, tmp_path):
    from matplotlib import image
    from typer.testing import CliRunner

    from lfkit.cli import app

    out = tmp_path / "plots"
    result = CliRunner().invoke(app, ["results", "plot", str(broken_saves), "--compare", "--out", str(out)])
    assert result.exit_code == 0, result.output
    expected = {f"saves_{n}_loss.png" for n in ("lora", "full", "crashed", "no_state")}
    expected |= {"compare_by_step.png", "compare_by_epoch.png"}
    assert {p.name for p in out.iterdir()} == expected
    assert "saves/empty: not a run: empty directory" in result.output
    for png in out.iterdir():
        pixels = image.imread(png)
        assert pixels.shape[1] == 800 and pixels.shape[0] >= 450, png.name
        assert (pixels[..., :3] < 0.5).mean() > 0.005, f"{png.name} looks blank"
        assert png.stat().st_size < 150_000


def test_report_command_links_existing_plots(real_saves, tmp_path):
    from typer.testing import CliRunner

    from lfkit.cli import app

    out = tmp_path / "results" / "README.md"
    result = CliRunner().invoke(app, ["results", "report", str(real_saves), "--out", str(out)])
    assert result.exit_code == 0, result.output
    md = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4  # two runs, two comparison plots
    for link in links:
        assert (out.parent / link).is_file(), link


def test_named_eval_set_losses_are_followed(real_saves, tmp_path):
    """With eval_dataset given as several names Transformers logs eval_<name>_loss, not eval_loss.

    A copy of the LoRA run has its eval entries rewritten that way (two sets, "a" and "b"):
    the report follows set "a" and names it.
    """
    saves = tmp_path / "saves"
    shutil.copytree(real_saves / "lora", saves / "named")
    state_path = saves / "named" / "trainer_state.json"
    state = json.loads(state_path.read_text())
    history = []
    for entry in state["log_history"]:
        if "eval_loss" in entry:
            value = entry.pop("eval_loss")
            history.append({**entry, "eval_a_loss": value})
            history.append({**entry, "eval_b_loss": value + 1.0})
        else:
            history.append(entry)
    state["log_history"] = history
    state_path.write_text(json.dumps(state))
    md = report(saves, tmp_path)
    _, evals = loss_entries(real_saves / "lora")
    row = runs_by_label(md)["saves/named"]
    assert row["final eval loss"] == f"{evals[-1]['eval_loss']:.4f} (`eval_a_loss`)"
    rows = table_rows(section(md, "### `saves/named`"), "epoch")
    assert rows[-1]["`eval_a_loss` (last in epoch)"] == f"{evals[-1]['eval_loss']:.4f}"
