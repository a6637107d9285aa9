"""Key findings: ratios and the best method, computed from table rows built by hand here."""

from __future__ import annotations

from pathlib import Path

from lfkit.reporting.facts import Fact, RunFacts, unknown
from lfkit.reporting.findings import best_method, hardware_ratios, key_findings, model_size_ratios


def row(
    label, model, method, hardware, speed, loss=1.0, eval_loss=None, params=None, ce_loss=None
) -> RunFacts:
    from lfkit.reporting.runs import Run

    def known(value):
        return Fact(value, "test") if value is not None else unknown("not given")

    return RunFacts(
        run=Run(path=Path(label), label=label, files=[]),
        model=known(model),
        method=known(method),
        quantization=known("none"),
        hardware=known(hardware),
        peak_memory=unknown("not given"),
        steps=known(10),
        epochs=known(1.0),
        seconds=known(10.0),
        samples_per_second=known(speed),
        final_loss=known(loss),
        final_eval_loss=known(eval_loss),
        parameters=known(params),
        components={"ce_loss": known(ce_loss), "kl_loss": known(0.5)} if ce_loss is not None else {},
    )


def test_hardware_ratio_compares_the_same_model_and_method():
    rows = [
        row("a", "org/m", "lora", "1x NVIDIA H100", 30.0),
        row("b", "org/m", "lora", "cpu: x", 1.5),
        row("c", "org/m", "full", "cpu: x", 1.0),  # other method: not compared with a or b
    ]
    found = hardware_ratios(rows)
    assert len(found) == 1
    assert "**20.00x**" in found[0] and "1x NVIDIA H100" in found[0] and "(a vs b)" in found[0]


def test_model_size_ratio_on_one_hardware_with_parameter_counts():
    rows = [
        row("small", "org/0.5B", "lora", "1x H100", 40.0, params=500_000_000),
        row("big", "org/7B", "lora", "1x H100", 10.0, params=7_000_000_000),
        row("elsewhere", "org/7B", "lora", "cpu: x", 0.1),
    ]
    found = model_size_ratios(rows)
    assert len(found) == 1
    assert "org/7B (7B parameters)" in found[0] and "**4.00x slower**" in found[0]


def test_best_method_uses_eval_loss_only_when_every_run_has_one():
    both_eval = [
        row("l", "m", "lora", "h", 1.0, loss=0.5, eval_loss=1.2),
        row("f", "m", "full", "h", 1.0, loss=0.9, eval_loss=1.1),
    ]
    assert "**full** converged best by final eval loss" in best_method(both_eval)[0]
    one_eval = [both_eval[0], row("f", "m", "full", "h", 1.0, loss=0.9)]
    found = best_method(one_eval)[0]
    assert (
        "**lora** converged best by final training loss (not every run evaluated on the same eval sets)"
        in found
    )


def test_best_method_without_eval_ranks_a_kl_run_by_its_cross_entropy():
    # The KL run's loss 1.05 = ce 0.8 + 0.5 * kl 0.5: by loss it loses to lora's 0.9, by ce it wins.
    rows = [
        row("l", "m", "lora", "h", 1.0, loss=0.9, eval_loss=1.0),
        row("k", "m", "lora + KL (kl_beta 0.5)", "h", 1.0, loss=1.05, ce_loss=0.8),
    ]
    found = best_method(rows)[0]
    assert "**lora + KL (kl_beta 0.5)** converged best by final training cross-entropy" in found
    assert "for KL runs their ce_loss" in found
    assert found.endswith("lora + KL (kl_beta 0.5) 0.8000 (k, ce_loss), lora 0.9000 (l).")
    # With an eval loss for every run, eval loss decides (evaluation adds no KL term).
    rows[1] = row("k", "m", "lora + KL (kl_beta 0.5)", "h", 1.0, loss=1.05, eval_loss=1.1, ce_loss=0.8)
    assert "**lora** converged best by final eval loss" in best_method(rows)[0]


def test_key_findings_say_when_nothing_is_comparable():
    found = key_findings([row("only", "m", "lora", "h", 1.0)], {})
    assert found == [
        "Hardware speed ratio: no model was trained with the same stage and method on two different hardware "
        "setups.",
        "Model-size speed ratio: no two different models were trained with one stage and method on one "
        "hardware.",
        "Best method: no model was trained with two different methods in one stage.",
    ]
    assert key_findings([row("only", "m", "lora", "h", 1.0)], {}, compare=False) == []


def test_diverged_runs_are_named_and_left_out_of_the_ranking():
    from lfkit.reporting.health import DIVERGED, HEALTHY, Assessment, Health

    rows = [
        row("ok", "m", "lora", "h", 1.0, loss=2.0),
        row("ok2", "m", "full", "h", 1.0, loss=1.5),
        row("boom", "m", "freeze", "h", 1.0, loss=0.0),
    ]
    assessments = {
        "ok": Assessment(Health(HEALTHY, HEALTHY)),
        "ok2": Assessment(Health(HEALTHY, HEALTHY)),
        "boom": Assessment(Health(DIVERGED, "diverged at step 3", 3, "training loss NaN at step 3")),
    }
    found = key_findings(rows, assessments)
    assert found[0] == "**Diverged** at step 3: boom (training loss NaN at step 3)."
    [best] = [f for f in found if "converged best" in f]
    assert best.startswith("m: **full** converged best") and best.endswith(
        "Left out: boom (diverged at step 3)."
    )


def test_runs_with_unknown_hardware_are_not_compared():
    rows = [row("a", "m", "lora", None, 3.0), row("b", "m", "lora", "cpu: x", 1.0)]
    assert hardware_ratios(rows) == []


def test_ratio_on_a_busy_machine_carries_a_caution():
    quiet = row("quiet", "m", "lora", "1x H100", 30.0)
    busy = row("busy", "m", "lora", "cpu: x", 1.5)
    quiet.run.record = _record(0.5, 16)
    busy.run.record = _record(3.6, 2)
    found = hardware_ratios([quiet, busy])[0]
    assert "Caution: the machine was busy" in found and "busy 3.6 on 2 cores" in found
    busy.run.record = _record(1.2, 2)
    assert "Caution" not in hardware_ratios([quiet, busy])[0]


def _record(load: float, cores: int):
    from lfkit.plugin.run_record_schema import RunRecord

    return RunRecord(
        written_at="2026-01-01T00:00:00+00:00",
        hardware_summary="h",
        accelerator="cpu",
        gpu_count=0,
        devices=(),
        memory_kind="cpu_rss",
        peak_rss_bytes=None,
        load_average_1m_at_end=load,
        cpu_count=cores,
    )
