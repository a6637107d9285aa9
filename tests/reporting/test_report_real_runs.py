"""The report and plots on the real SFT runs and hand-broken copies, checked against the run files.

The runs (``lora``: with the plugin's run record, eval every step, checkpoints; ``full``:
``lfkit_run_record: false``, two named eval sets) come from :mod:`stage_runs`.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from reading import footnotes, jsonl_entries, loss_entries, report, rows_by_label, section, table_rows
from stage_runs import stage_runs  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.train


def test_runs_table_numbers_come_from_the_run_files(stage_runs, tmp_path):  # noqa: F811
    md = report([stage_runs["lora"], stage_runs["full"]], tmp_path)
    rows = rows_by_label(md)
    resources = rows_by_label(section(md, "## Resources"))
    notes = footnotes(md)
    assert set(rows) == {"lora", "full"}  # checkpoint-5/10 of lora are no runs of their own
    assert (stage_runs["lora"] / "checkpoint-10" / "trainer_state.json").is_file()

    for name, method in (("lora", "lora"), ("full", "full")):
        run_dir = stage_runs[name]
        row, res = rows[name], resources[name]
        state = json.loads((run_dir / "trainer_state.json").read_text())
        results = json.loads((run_dir / "train_results.json").read_text())
        train, _ = loss_entries(run_dir)
        assert row["method"] == method
        assert (
            row["model"]
            == Path(
                json.loads((stage_runs["lora"] / "lfkit_run.json").read_text())["model"]["name_or_path"]
            ).name
        )
        assert row["quantization"] == "none"
        assert row["steps"] == str(state["global_step"]) == str(train[-1]["step"])
        assert float(row["epochs"]) == state["epoch"] == 2.0
        assert row["final loss"] == f"{train[-1]['loss']:.4f}"
        assert res["train minutes"] == f"{results['train_runtime'] / 60:.2f}"
        assert float(res["samples/s"]) == results["train_samples_per_second"]
        # include_num_input_tokens_seen: Transformers' own token count and rate
        assert res["input tokens"] == f"{state['num_input_tokens_seen']:,}"
        assert res["tokens/s"] == f"{train[-1]['train_tokens_per_second']:.4g}"
        assert row["verdict"] in {"still decreasing", "plateaued", "fluctuating", "eval loss rising"}

    _, evals = loss_entries(stage_runs["lora"])
    assert rows["lora"]["final eval loss"] == f"{evals[-1]['eval_loss']:.4f}"
    # full evaluated two named sets (eval_on_each_dataset): both are shown
    last = {k: v for h in loss_entries(stage_runs["full"], "eval_greet_a_loss")[1] for k, v in h.items()}
    last |= {k: v for h in loss_entries(stage_runs["full"], "eval_greet_b_loss")[1] for k, v in h.items()}
    assert rows["full"]["final eval loss"] == (
        f"{last['eval_greet_a_loss']:.4f} (greet_a); {last['eval_greet_b_loss']:.4f} (greet_b)"
    )
    # The stage: lora's record says sft; full has no record and logs only a loss.
    assert rows["lora"]["stage"] == "SFT"
    assert rows["full"]["stage"] == "SFT or PT (stage not recorded)"

    # lora ran with the plugin's record: hardware, memory and parameters come from it.
    record = json.loads((stage_runs["lora"] / "lfkit_run.json").read_text())
    assert rows["lora"]["hardware"] == record["hardware"]["summary"]
    rss_gib = record["memory"]["peak_rss_bytes"] / 2**30
    assert resources["lora"]["peak memory per device"] == f"{rss_gib:.2f} GiB RSS (CPU)"
    assert resources["lora"]["wall minutes"] == f"{record['process_wall_seconds'] / 60:.2f}"
    # full ran with lfkit_run_record: false: no record, so those cells are empty with a reason.
    assert not (stage_runs["full"] / "lfkit_run.json").exists()
    for cell in (rows["full"]["hardware"], resources["full"]["peak memory per device"]):
        assert cell in notes and "no lfkit_run.json" in notes[cell]
    assert "None: every run directory is complete." in section(md, "## Problems")


def test_per_epoch_table_matches_the_logs(stage_runs, tmp_path):  # noqa: F811
    """Mean training loss per epoch and each eval set's loss at its end, recomputed from the files."""
    md = report([stage_runs["lora"], stage_runs["full"]], tmp_path)
    for name, entries, sets in (
        ("lora", jsonl_entries(stage_runs["lora"]), {"eval_loss": "eval loss"}),
        # trainer_log.jsonl carries only a plain eval_loss: named sets are in trainer_state.json
        (
            "full",
            loss_entries(stage_runs["full"], "step")[1],
            {"eval_greet_a_loss": "eval set `greet_a` loss", "eval_greet_b_loss": "eval set `greet_b` loss"},
        ),
    ):
        expected: dict[int, dict] = {}
        for entry in entries:
            if "epoch" not in entry or "train_loss" in entry:
                continue
            slot = expected.setdefault(max(1, math.ceil(entry["epoch"] - 1e-9)), {"losses": []})
            if "loss" in entry:
                slot["losses"].append(entry["loss"])
            for key in sets:
                if key in entry:
                    slot[key] = entry[key]
        rows = table_rows(section(md, f"### `{name}`"), "epoch")
        assert [int(r["epoch"]) for r in rows] == sorted(expected) == [1, 2]
        for row in rows:
            slot = expected[int(row["epoch"])]
            assert int(row["logged steps"]) == len(slot["losses"])
            assert row["mean train loss"] == f"{sum(slot['losses']) / len(slot['losses']):.4f}"
            for key, column in sets.items():
                assert row[f"{column} (last in epoch)"] == f"{slot[key]:.4f}"


def test_trend_verdict_follows_the_documented_rule(stage_runs, tmp_path):  # noqa: F811
    """The verdict equals the rule applied to trainer_log.jsonl, and its printed numbers match numpy's fit."""
    import numpy as np

    from lfkit.reporting import trends

    md = report([stage_runs["lora"]], tmp_path)
    entries = jsonl_entries(stage_runs["lora"])
    losses = [e["loss"] for e in entries if "loss" in e]
    evals = [(e["current_steps"], e["eval_loss"]) for e in entries if "eval_loss" in e]
    verdict = trends.judge(losses, evals)
    assert rows_by_label(md)["lora"]["verdict"] == verdict.verdict
    assert f"Trend: **{verdict.verdict}**" in section(md, "### `lora`")
    if verdict.relative_drop is not None:
        half = losses[len(losses) // 2 :]
        slope = np.polyfit(np.arange(len(half)), half, 1)[0]
        assert verdict.relative_drop == pytest.approx(-slope * (len(half) - 1) / np.mean(half), rel=1e-6)
        moves = "falls" if verdict.relative_drop >= 0 else "rises"
        printed = f"second half {moves} {abs(verdict.relative_drop) * 100:.2f}%"
        assert printed in section(md, "### `lora`")


def test_best_method_compares_only_runs_evaluated_on_the_same_sets(stage_runs, tmp_path):  # noqa: F811
    """lora (val split) and full (greet_a, greet_b) were evaluated on other sets: training loss decides."""
    md = report([stage_runs["lora"], stage_runs["full"]], tmp_path)
    final = {name: loss_entries(stage_runs[name])[0][-1]["loss"] for name in ("lora", "full")}
    best = min(final, key=final.get)
    findings = section(md, "## Key findings")
    assert (
        f"**{best}** converged best by final training loss (not every run evaluated on the same eval"
        in findings
    )
    for name, value in final.items():
        assert f"{name} {value:.4f} ({name})" in findings
    assert "Hardware speed ratio: no model" in findings


@pytest.fixture
def broken_saves(stage_runs, tmp_path):  # noqa: F811
    """Copies of the real SFT runs, hand-broken.

    - ``crashed``: lora's ``trainer_log.jsonl`` cut in the middle of its 7th line, and its
      ``checkpoint-5``, as a run killed mid-training leaves its output dir;
    - ``no_state``: full without ``trainer_state.json``;
    - ``empty``: an empty output directory (a run that never started).
    """
    saves = tmp_path / "saves"
    for name in ("lora", "full"):
        shutil.copytree(stage_runs[name], saves / name)
    crashed = saves / "crashed"
    crashed.mkdir()
    lines = (stage_runs["lora"] / "trainer_log.jsonl").read_text().splitlines(keepends=True)
    (crashed / "trainer_log.jsonl").write_text("".join(lines[:6]) + lines[6][: len(lines[6]) // 2])
    shutil.copytree(stage_runs["lora"] / "checkpoint-5", crashed / "checkpoint-5")
    shutil.copytree(stage_runs["full"], saves / "no_state")
    (saves / "no_state" / "trainer_state.json").unlink()
    (saves / "empty").mkdir()
    return saves


def test_broken_runs_are_listed_not_skipped(broken_saves, tmp_path):
    md = report([broken_saves], tmp_path)
    rows = rows_by_label(md)
    notes = footnotes(md)
    problems = section(md, "## Problems")
    assert set(rows) == {"saves/lora", "saves/full", "saves/crashed", "saves/no_state"}

    # crashed: only a truncated trainer_log.jsonl; the six complete lines still give its curve.
    crashed = rows["saves/crashed"]
    complete = jsonl_entries(broken_saves / "crashed")
    assert len(complete) == 6
    last = complete[-1]
    assert crashed["final loss"] == f"{[e for e in complete if 'loss' in e][-1]['loss']:.4f}"
    assert crashed["steps"] == f"{last['current_steps']} of {last['total_steps']}"
    assert crashed["verdict"] == f"**in progress, {last['current_steps']} of {last['total_steps']} steps**"
    for column in ("model", "method"):
        assert crashed[column] in notes, column
    assert "`saves/crashed`: trainer_log.jsonl line 7: invalid JSON" in problems
    assert (
        "`saves/crashed`: trainer_state.json: missing: LlamaFactory writes it when training ends "
        f"(trainer_log.jsonl ends at step {last['current_steps']} of {last['total_steps']})"
    ) in problems
    assert "`saves/crashed`: checkpoint-5: latest checkpoint saved before the end" in problems
    # An unfinished run is not told that more steps may help, nor ranked.
    findings = section(md, "## Key findings")
    assert f"**Not finished** (in progress, {last['current_steps']} of" in findings
    assert "saves/crashed" not in "\n".join(line for line in findings.splitlines() if "more steps" in line)

    # no_state: trainer_state.json deleted; epochs and times still come from all_results.json.
    results = json.loads((broken_saves / "no_state" / "all_results.json").read_text())
    no_state = rows["saves/no_state"]
    assert float(no_state["epochs"]) == results["epoch"]
    assert rows_by_label(section(md, "## Resources"))["saves/no_state"]["train minutes"] == (
        f"{results['train_runtime'] / 60:.2f}"
    )
    assert (
        "`saves/no_state`: trainer_state.json: missing, although train_results.json says training ended"
        in (problems)
    )
    assert "`saves/empty`: not a run: empty directory" in problems


def test_a_missing_key_is_said_as_missing_not_as_a_cause(stage_runs, tmp_path):  # noqa: F811
    run = tmp_path / "saves" / "full"
    shutil.copytree(stage_runs["full"], run)
    for name in ("all_results.json", "train_results.json"):
        data = json.loads((run / name).read_text())
        del data["train_runtime"]
        (run / name).write_text(json.dumps(data))
    md = report([run], tmp_path)
    cell = rows_by_label(section(md, "## Resources"))["full"]["train minutes"]
    assert footnotes(md)[cell] == "all_results.json has no train_runtime"
    assert "did not finish" not in md


def test_bad_field_is_named_with_file_line_and_field(stage_runs, tmp_path):  # noqa: F811
    from lfkit.reporting.runs import load_run

    run_dir = tmp_path / "bad"
    shutil.copytree(stage_runs["lora"], run_dir)
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
    args = [
        "results",
        "plot",
        str(broken_saves),
        "--compare",
        "--x",
        "step",
        "--x",
        "tokens",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert {f"saves_{n}_loss.png" for n in ("lora", "full", "crashed", "no_state")} <= names
    compared = sorted(names - {f"saves_{n}_loss.png" for n in ("lora", "full", "crashed", "no_state")})
    # One SFT comparison per x axis (the runs without a recorded stage join the SFT run), named
    # after the runs without the "saves/" they share.
    assert compared == [
        "compare_sft_crashed+full+lora+no_state_by_step.png",
        "compare_sft_crashed+full+lora+no_state_by_tokens.png",
    ]
    assert "saves/empty: not a run: empty directory" in result.output
    for png in out.iterdir():
        pixels = image.imread(png)
        assert pixels.shape[1] == 800 and pixels.shape[0] >= 400, png.name
        assert (pixels[..., :3] < 0.5).mean() > 0.005, f"{png.name} looks blank"
        assert png.stat().st_size < 200_000


def test_report_command_links_existing_plots(stage_runs, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from lfkit.cli import app

    out = tmp_path / "results" / "README.md"
    args = ["results", "report", str(stage_runs["lora"]), str(stage_runs["full"]), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{out}: 2 runs; 4 plots in {out.parent / 'plots'}"
    md = out.read_text()
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert len(links) == 4  # two runs, comparisons by step and by epoch
    for link in links:
        assert (out.parent / link).is_file(), link
