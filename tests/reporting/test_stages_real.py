"""Stages, verdicts, predictions and settings on real runs of every stage, and on copies edited to
diverge, spike or stop mid-run (the runs: :mod:`stage_runs`)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from reading import footnotes, history, loss_entries, report, rows_by_label, section, table_rows
from stage_runs import stage_runs  # noqa: F401  (the session fixture)

pytestmark = pytest.mark.train


def last(run_dir: Path, key: str) -> float:
    return [h[key] for h in history(run_dir) if key in h][-1]


def test_every_stage_is_labelled_with_its_own_loss_and_metric(stage_runs, tmp_path):  # noqa: F811
    names = ("lora", "dpo", "orpo", "kto", "rm")
    md = report([stage_runs[n] for n in names], tmp_path)
    rows = rows_by_label(md)
    assert {n: rows[n]["stage"] for n in names} == {
        "lora": "SFT",
        "dpo": "DPO",
        "orpo": "ORPO",
        "kto": "KTO",
        "rm": "RM (reward model)",
    }
    dpo, orpo, kto, rm = (stage_runs[n] for n in ("dpo", "orpo", "kto", "rm"))
    assert rows["dpo"]["stage metric (last)"] == (
        f"rewards/accuracies {last(dpo, 'rewards/accuracies'):.4g}; "
        f"eval rewards/accuracies {last(dpo, 'eval_rewards/accuracies'):.4g}"
    )
    assert rows["kto"]["stage metric (last)"].startswith(
        f"rewards/margins {last(kto, 'rewards/margins'):.4g}"
    )
    assert rows["rm"]["stage metric (last)"] == f"eval accuracy {last(rm, 'eval_accuracy'):.4g}"
    assert rows["lora"]["stage metric (last)"] == (
        f"eval perplexity {math.exp(last(stage_runs['lora'], 'eval_loss')):.4g}"
    )
    # Each run's section says what its loss is and tabulates the stage's own metrics per epoch.
    assert "Stage: **DPO** (from lfkit_run.json); loss: DPO loss: -log sigmoid(beta * reward margin)." in md
    assert "loss: ORPO loss: SFT NLL + beta * odds-ratio loss." in section(md, "### `orpo`")
    assert "loss: cross-entropy, nats/token." in section(md, "### `lora`")
    header = table_rows(section(md, "### `orpo`"), "epoch")[0]
    assert {
        "mean rewards/accuracies",
        "mean rewards/margins",
        "mean sft_loss",
        "mean odds_ratio_loss",
    } <= set(header)
    assert "mean kl" in table_rows(section(md, "### `kto`"), "epoch")[0]
    # ORPO's eval_sft_loss is its loss term evaluated, not an eval set named "sft".
    evaluation = rows_by_label(section(md, "## Evaluation"))
    assert evaluation["orpo"]["set"] == "eval"
    assert f"accuracy {last(rm, 'eval_accuracy'):.4g}" in evaluation["rm"]["final metrics"]
    # Different stages are never compared with each other.
    assert "Best method: no model was trained with two different methods in one stage." in md


def test_stage_is_read_from_the_record_else_llamaboard_else_the_log_keys(stage_runs, tmp_path):  # noqa: F811
    from lfkit.reporting.runs import load_run
    from lfkit.reporting.stages import stage_of

    def copy(name: str, to: str) -> Path:
        shutil.copytree(stage_runs[name], tmp_path / to, ignore=shutil.ignore_patterns("lfkit_run.json"))
        return tmp_path / to

    assert stage_of(load_run(stage_runs["dpo"])).source == "lfkit_run.json"
    found = {
        "dpo": stage_of(load_run(copy("dpo", "dpo"))),
        "orpo": stage_of(load_run(copy("orpo", "orpo"))),
        "kto": stage_of(load_run(copy("kto", "kto"))),
        "rm": stage_of(load_run(copy("rm", "rm"))),
        "lora": stage_of(load_run(copy("lora", "lora"))),
    }
    assert {k: (s.name, s.source) for k, s in found.items()} == {
        "dpo": (
            "DPO-family (pref_loss not recorded: DPO, IPO, SimPO or hinge)",
            "log keys (rewards/accuracies)",
        ),
        "orpo": ("ORPO", "log keys (odds_ratio_loss)"),
        "kto": ("KTO", "log keys (kl, rewards/chosen)"),
        "rm": ("RM (reward model)", "value_head.safetensors (the value head of a reward model)"),
        "lora": ("SFT or PT (stage not recorded)", "log keys (loss only)"),
    }
    # LlamaBoard saves the recipe as training_args.yaml: a SimPO run is told apart from DPO.
    (tmp_path / "dpo" / "training_args.yaml").write_text("stage: dpo\npref_loss: simpo\npref_beta: 2.0\n")
    simpo = stage_of(load_run(tmp_path / "dpo"))
    assert (simpo.name, simpo.source) == ("SimPO", "training_args.yaml")


def test_plugin_writes_a_record_and_a_summary_for_every_stage(stage_runs, tmp_path):  # noqa: F811
    from lfkit.plugin.run_record_schema import read_run_record

    from lfkit.reporting.report import build_report

    for name, stage in (("lora", "sft"), ("dpo", "dpo"), ("orpo", "dpo"), ("kto", "kto"), ("rm", "rm")):
        record = read_run_record(stage_runs[name])
        assert (
            record.stage == stage
            and record.global_step
            == json.loads((stage_runs[name] / "trainer_state.json").read_text())["global_step"]
        )
    assert read_run_record(stage_runs["orpo"]).argument("pref_loss") == "orpo"
    assert not (stage_runs["full"] / "lfkit_run.json").exists()  # lfkit_run_record: false

    for name in ("lora", "full", "dpo", "rm", "nan"):
        summary = (stage_runs[name] / "lfkit_summary.md").read_text()
        # the same renderer as `lfkit results report` on that directory
        fresh = build_report(
            [stage_runs[name]],
            tmp_path / name / "README.md",
            tmp_path / name / "lfkit_plots",
            title=f"Run summary: {name}",
        ).markdown
        assert _body(summary) == _body(fresh), name
        for link in _links(summary):
            assert (stage_runs[name] / link).is_file(), (name, link)
    assert "Stage: **DPO** (from lfkit_run.json)" in (stage_runs["dpo"] / "lfkit_summary.md").read_text()
    plots = sorted(p.name for p in (stage_runs["dpo"] / "lfkit_plots").iterdir())
    assert plots == ["dpo_loss.png"]
    # lfkit_summary: false: no summary
    assert not (stage_runs["kto"] / "lfkit_summary.md").exists()
    # A summary that cannot be written (lfkit_plots is a file) is a warning; the run succeeded.
    assert not (stage_runs["orpo"] / "lfkit_summary.md").exists()
    assert "lfkit: no run summary written" in stage_runs.logs["orpo"]
    assert (stage_runs["orpo"] / "adapter_model.safetensors").is_file()


def _body(markdown: str) -> list[str]:
    return [line for line in markdown.splitlines() if not line.startswith("Generated by")]


def _links(markdown: str) -> list[str]:
    return [line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")]


def test_a_real_divergence_is_reported_as_diverged(stage_runs, tmp_path):  # noqa: F811
    """lr 1e38: the loss went NaN; Transformers logged it as 0.0 beside a NaN grad norm."""
    from lfkit.reporting.health import assess
    from lfkit.reporting.plots import run_figure
    from lfkit.reporting.runs import load_run

    entries = history(stage_runs["nan"])
    step = next(h["step"] for h in entries if "grad_norm" in h and math.isnan(h["grad_norm"]))
    assert next(h["loss"] for h in entries if h.get("step") == step and "loss" in h) == 0.0
    md = report([stage_runs["nan"], stage_runs["lora"]], tmp_path)
    row = rows_by_label(md)["nan"]
    assert row["verdict"] == f"**diverged at step {step}**"
    assert row["final loss"] == f"0.0000 (diverged at step {step})"
    assert row["final eval loss"] == "NaN"
    findings = section(md, "## Key findings")
    assert (
        f"**Diverged** at step {step}: nan (loss logged as 0.0 with grad_norm NaN at step {step}" in findings
    )
    # The loss comparison leaves the diverged run out, and says so.
    assert f"Left out: nan (diverged at step {step})" in findings or "no model was trained" in findings
    assert "nan" not in "".join(line for line in findings.splitlines() if "more steps may help" in line)
    # The plot marks the step: a dashed red line at it, and crosses for the hidden NaN losses.
    run = load_run(stage_runs["nan"])
    fig = run_figure(run)
    loss_ax = fig.axes[0]
    marks = [line for line in loss_ax.lines if list(line.get_xdata()) == [step, step]]
    assert marks and marks[0].get_color() == "red"
    crosses = [
        c for c in loss_ax.collections if c.get_label().startswith("train loss NaN/inf or hidden as 0.0")
    ]
    assert len(crosses[0].get_offsets()) == sum(1 for h in entries if "loss" in h and h["loss"] == 0.0)
    assert assess(run).health.step == step


@pytest.fixture
def edited(stage_runs, tmp_path):  # noqa: F811
    """A copy of a real run whose trainer_state.json and trainer_log.jsonl are edited by ``change``."""

    def make(name: str, to: str, change) -> Path:
        run = tmp_path / "saves" / to
        shutil.copytree(stage_runs[name], run)
        state = json.loads((run / "trainer_state.json").read_text())
        for entry in state["log_history"]:
            change(entry, entry.get("step"))
        (run / "trainer_state.json").write_text(json.dumps(state))
        lines = []
        for line in (run / "trainer_log.jsonl").read_text().splitlines():
            entry = json.loads(line)
            change(entry, entry.get("current_steps"))
            lines.append(json.dumps(entry))
        (run / "trainer_log.jsonl").write_text("\n".join(lines) + "\n")
        return run

    return make


def test_nan_losses_written_as_nan_are_diverged(edited, tmp_path):
    """logging_nan_inf_filter: false writes NaN itself (Python's JSON writes the NaN literal)."""

    def to_nan(entry, step):
        if step is not None and step >= 6 and "loss" in entry:
            entry["loss"] = math.nan

    run = edited("lora", "raw_nan", to_nan)
    assert "NaN" in (run / "trainer_log.jsonl").read_text()
    md = report([run], tmp_path)
    row = rows_by_label(md)["raw_nan"]
    assert row["verdict"] == "**diverged at step 6**"
    assert row["final loss"] == "NaN (diverged at step 6)"
    assert "Verdict: **diverged at step 6**: training loss NaN at step 6." in md
    epochs = table_rows(section(md, "### `raw_nan`"), "epoch")
    assert [r["non-finite losses"] for r in epochs] == ["0", "5"]
    assert "more steps may help" not in md


def test_a_spike_that_never_recovers_is_unstable(edited, tmp_path):
    def spike(entry, step):
        if step is not None and step >= 6 and "loss" in entry:
            entry["loss"] *= 10

    run = edited("lora", "spiked", spike)
    md = report([run], tmp_path)
    assert rows_by_label(md)["spiked"]["verdict"] == "**unstable**"
    assert "at step 6 and did not recover" in section(md, "## Key findings")


def test_a_run_stopped_mid_way_is_in_progress_with_its_step_count(stage_runs, tmp_path):  # noqa: F811
    run = tmp_path / "saves" / "stopped"
    shutil.copytree(stage_runs["lora"], run)
    for name in ("trainer_state.json", "all_results.json", "train_results.json", "eval_results.json"):
        (run / name).unlink()
    for checkpoint in run.glob("checkpoint-*"):
        shutil.rmtree(checkpoint)
    lines = (run / "trainer_log.jsonl").read_text().splitlines()
    kept = [line for line in lines if json.loads(line)["current_steps"] <= 4]
    (run / "trainer_log.jsonl").write_text("\n".join(kept) + "\n")
    total = json.loads(lines[0])["total_steps"]
    md = report([run], tmp_path)
    row = rows_by_label(md)["stopped"]
    assert (row["steps"], row["verdict"]) == (f"4 of {total}", f"**in progress, 4 of {total} steps**")
    assert "the run is still going, or it was stopped; the files do not say which" in md
    assert "Trend so far:" in section(md, "### `stopped`")
    assert "more steps may help" not in md and "did not finish" not in md


def test_missing_evaluation_says_what_the_files_hold(edited, tmp_path):
    def drop_eval(entry, step):
        for key in [k for k in entry if k.startswith("eval_")]:
            del entry[key]

    run = edited("dpo", "no_eval", drop_eval)
    (run / "eval_results.json").unlink()
    md = report([run], tmp_path)
    cell = rows_by_label(md)["no_eval"]["final eval loss"]
    assert footnotes(md)[cell] == "no eval loss in trainer_state.json or eval_results.json"
    record = json.loads((run / "lfkit_run.json").read_text())
    record["arguments"]["val_size"] = 0.0
    (run / "lfkit_run.json").write_text(json.dumps(record))
    md = report([run], tmp_path)
    cell = rows_by_label(md)["no_eval"]["final eval loss"]
    assert footnotes(md)[cell].endswith(": the recipe sets no eval_dataset and no val_size (lfkit_run.json)")


def test_ppo_logs_are_read_as_ppo(tmp_path):
    """PPO cannot train on this CPU stack; its log is written here as LlamaFactory's PPO trainer logs it
    (loss, reward, learning_rate, epoch, and ``step`` = the loop index)."""
    from lfkit.reporting.plots import run_figure
    from lfkit.reporting.runs import load_run

    run = tmp_path / "ppo"
    run.mkdir()
    log = [
        {
            "loss": round(0.5 - 0.02 * i, 4),
            "reward": round(-1 + 0.1 * i, 4),
            "learning_rate": 1e-5,
            "epoch": round(i / 10, 2),
            "step": i,
        }
        for i in range(10)
    ]
    (run / "trainer_state.json").write_text(json.dumps({"log_history": log, "global_step": 10, "epoch": 1.0}))
    md = report([run], tmp_path)
    row = rows_by_label(md)["ppo"]
    assert (row["stage"], row["stage metric (last)"]) == ("PPO", "reward -0.1")
    assert "loss: PPO loss (policy + value, total)." in md
    titles = [ax.get_title() for ax in run_figure(load_run(run)).axes]
    assert titles[1:] == ["reward", "learning rate"]


def test_predictions_section_reads_predict_results_and_examples(stage_runs, tmp_path):  # noqa: F811
    from lfkit.plugin.run_record_schema import read_run_record

    from lfkit.reporting.report import build_report

    run = stage_runs["predict"]
    # The predict-only run gets its record when prediction ends: model, adapter, machine.
    record = read_run_record(run)
    assert record.argument("do_train") is False
    assert record.argument("adapter_name_or_path") == [str(stage_runs["lora"])]  # LlamaFactory's list
    # and its summary, with the same renderer as the report
    fresh = build_report(
        [run], tmp_path / "s" / "README.md", tmp_path / "s" / "p", title="Run summary: predict"
    )
    assert _body((run / "lfkit_summary.md").read_text()) == _body(fresh.markdown)
    md = report([run, stage_runs["lora"]], tmp_path)
    results = json.loads((run / "predict_results.json").read_text())
    lines = (run / "generated_predictions.jsonl").read_text().splitlines()
    row = rows_by_label(section(md, "## Predictions"))["predict"]
    assert set(rows_by_label(md)) == {"lora"}  # a predict-only directory is no training run
    assert row["predictions"] == str(len(lines)) == "6"
    for metric in ("BLEU-4", "ROUGE-1", "ROUGE-2", "ROUGE-L"):
        assert row[metric] == f"{results['predict_' + metric.lower()]:.2f}"
    assert (row["model"], row["adapter"]) == (
        Path(json.loads((run / "lfkit_run.json").read_text())["model"]["name_or_path"]).name,
        "lora",
    )
    assert float(row["samples/s"]) == results["predict_samples_per_second"]
    examples = table_rows(section(md, "## Predictions").split("Examples from")[1], "#")
    assert [e["#"] for e in examples] == ["1", "2", "3"]
    first = json.loads(lines[0])
    assert examples[0]["label"] == first["label"].replace("\n", "⏎")
    assert "predict" in examples[0]


def test_settings_table_lists_what_differs(stage_runs, tmp_path):  # noqa: F811
    md = report([stage_runs[n] for n in ("dpo", "orpo", "kto")], tmp_path)
    settings = {
        row["setting"].strip("`"): row
        for row in table_rows(section(md, "## Settings that differ"), "setting")
    }
    assert {
        k: [settings[k][f"`{n}`"] for n in ("dpo", "orpo", "kto")] for k in ("stage", "pref_loss", "dataset")
    } == {
        "stage": ["dpo", "dpo", "kto"],
        "pref_loss": ["sigmoid", "orpo", "sigmoid"],
        "dataset": ["pairs", "pairs", "kto"],
    }
    for same in ("cutoff_len", "learning_rate", "lora_rank", "per_device_train_batch_size", "output_dir"):
        assert same not in settings
    md = report([stage_runs["lora"], stage_runs["nan"]], tmp_path)
    settings = {
        row["setting"].strip("`"): row
        for row in table_rows(section(md, "## Settings that differ"), "setting")
    }
    assert [settings["learning_rate"]["`lora`"], settings["learning_rate"]["`nan`"]] == ["0.001", "1e+38"]
    assert [settings["finetuning_type"]["`lora`"], settings["finetuning_type"]["`nan`"]] == ["lora", "full"]
    # A full run's lora_rank is an unused default: not a difference.
    assert "lora_rank" not in settings and "pref_beta" not in settings


def test_runs_table_as_csv_and_json(stage_runs, tmp_path):  # noqa: F811
    import csv

    from typer.testing import CliRunner

    from lfkit.cli import app

    out = tmp_path / "r" / "README.md"
    args = [
        "results",
        "report",
        str(stage_runs["lora"]),
        str(stage_runs["nan"]),
        "--out",
        str(out),
        "--no-plots",
        "--csv",
        str(tmp_path / "runs.csv"),
        "--json",
        str(tmp_path / "runs.json"),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = {r["run"]: r for r in csv.DictReader((tmp_path / "runs.csv").open())}
    runs = {r["values"]["run"]: r for r in json.loads((tmp_path / "runs.json").read_text())["runs"]}
    lora_train, _ = loss_entries(stage_runs["lora"])
    assert float(rows["lora"]["final_loss"]) == runs["lora"]["values"]["final_loss"] == lora_train[-1]["loss"]
    assert rows["nan"]["verdict"] == runs["nan"]["values"]["verdict"]
    assert rows["nan"]["verdict"].startswith("diverged at step")
    assert runs["nan"]["values"]["final_eval_loss"] == "NaN"  # strict JSON has no NaN literal
    assert rows["lora"]["stage"] == "SFT" and rows["lora"]["path"] == str(stage_runs["lora"])
    assert runs["nan"]["missing"]["stage_metric"] == "no finite loss to take a perplexity of"
