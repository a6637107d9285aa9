"""Text output of ``lfkit plan`` and ``lfkit plan calibrate`` (rich), from their typed values.

Every memory figure says its unit: GiB (2^30 bytes) for memory, as ``nvidia-smi`` and PyTorch count
it; the card's marketing size is quoted in GB only as its name.
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lfkit.planning.calibration import CalibrationReport
from lfkit.planning.plan import Plan, Status


def print_plan(plan: Plan, console: Console | None = None) -> None:
    console = console or Console()
    a, setup, gpu = plan.assessment, plan.setup, plan.cluster.gpu
    console.print(
        f"[bold]{escape(str(plan.recipe))}[/]: {plan.shape.name} "
        f"({plan.shape.total_params / 1e9:.1f}B parameters, shape from {escape(plan.shape.source)}), "
        f"{setup.describe_method()}, {setup.precision}, {setup.deepspeed.describe()}, "
        f"on {escape(plan.cluster.describe())}",
        highlight=False,
    )
    table = Table(title=f"Per-GPU memory at the peak ({a.memory.peak_phase}), GiB = 2^30 bytes")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    table.add_column("what")
    for c in a.memory.components:
        table.add_row(c.name, f"{c.bytes / 2**30:.2f}", escape(c.what))
    table.add_row("[bold]peak[/]", f"[bold]{a.memory.peak_gib:.2f}[/]", "")
    console.print(table)
    colour = "green" if plan.status is Status.RUNS else "red"
    console.print(
        f"peak {a.memory.peak_gib:.2f} GiB of the {gpu.memory_gib:g} GiB a {gpu.name} ({gpu.label_gb} GB) "
        f"reports: [{colour}]{escape(plan.verdict)}[/] (exit status {int(plan.status)})",
        highlight=False,
    )
    host = a.host
    limit = f" of {a.host_limit_gib:g} GiB given" if a.host_limit_gib is not None else ""
    console.print(f"host RAM per node: ~{host.peak_bytes / 2**30:.1f} GiB{limit}", highlight=False)
    cluster = plan.cluster
    if cluster.nodes > 1:
        origin = "assumed: set --inter-node-gbit for yours" if cluster.inter_node_assumed else "as given"
        console.print(
            f"inter-node bandwidth: {cluster.inter_node_gbit:g} Gbit/s = {cluster.inter_node_gbs:g} GB/s "
            f"per node ({origin})",
            highlight=False,
        )
    if plan.time is not None:
        t = plan.time
        line = (
            f"throughput ~{t.samples_per_s:.2f} samples/s ({t.step_s:.2f} s per step of {t.effective_batch} "
            f"samples, {t.tokens_per_sample} tokens/sample, MFU {t.mfu:.2f})"
        )
        if plan.schedule is not None:
            line += f"; {plan.schedule.total_steps} steps -> {plan.schedule.seconds / 60:.1f} min"
        console.print(line, highlight=False)
    else:
        console.print("throughput: none (a setup that cannot run has no speed)")
    for b in a.blockers:
        console.print(f"[red]blocking:[/] {escape(b.message)}", highlight=False)
    if plan.suggestions:
        table = Table(title="Suggested recipe changes (each re-estimated)")
        table.add_column("change")
        table.add_column("set in the recipe (YAML)")
        table.add_column("peak GiB", justify="right")
        table.add_column("samples/s", justify="right")
        table.add_column("why")
        for s in plan.suggestions:
            speed = "-" if s.samples_per_s is None else f"{s.samples_per_s:.2f}"
            table.add_row(s.title, escape(s.yaml_changes()), f"{s.peak_gib:.2f}", speed, escape(s.reason))
        console.print(table)
    for n in list(plan.notes) + list(plan.shape.notes):
        console.print(f"[dim]note: {escape(n)}[/]", highlight=False)
    fitted = ", ".join(plan.constants.fitted) or "none"
    console.print(
        f"[dim]time model: constants fitted by `lfkit plan calibrate` ({fitted}); see its residuals[/]"
    )


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:+.0%}"


def print_calibration(report: CalibrationReport, console: Console | None = None) -> None:
    console = console or Console()
    c = report.constants
    console.print("[bold]Time model constants[/]")
    for name in c.fitted:
        value = c.moe_efficiency if name == "moe_efficiency" else c.mfu_for(name.split(":", 1)[1])
        console.print(f"  fitted  {name} = {value:.3f}")
    for name, why in report.fixed:
        console.print(f"  fixed   {name}: {escape(why)}", highlight=False)
    table = Table(
        title=f"Throughput: {len(report.throughput)} measurements, {len(c.fitted)} fitted constants"
    )
    for col, justify in (("measurement", "left"), ("measured", "right"), ("estimate", "right")):
        table.add_column(col, justify=justify)
    table.add_column("residual", justify="right")
    table.add_column("leave-one-out", justify="right")
    for r in report.throughput:
        measured = f"{r.measured:g} {r.unit}"
        if r.measured_range:
            measured = f"{r.measured_range[0]:g}-{r.measured_range[1]:g} {r.unit}"
        table.add_row(r.key, measured, f"{r.predicted:.2f} {r.unit}", _pct(r.residual), _pct(r.loo_residual))
    console.print(table)
    table = Table(title="Peak memory per GPU (GiB): estimate vs measured")
    for col in ("measurement", "measured GiB", "estimate GiB", "worst error"):
        table.add_column(col, justify="left" if col == "measurement" else "right")
    for m in report.memory:
        measured = (
            f"{m.measured_low_gib:.1f}"
            if m.measured_low_gib == m.measured_high_gib
            else (f"{m.measured_low_gib:.1f}-{m.measured_high_gib:.1f}")
        )
        table.add_row(f"{m.key} ({m.kind})", measured, f"{m.estimate_gib:.1f}", _pct(m.residual_worst))
    console.print(table)
    table = Table(title="Ratios measured within one run pair")
    for col in ("ratio", "measured", "estimate", "residual"):
        table.add_column(col, justify="left" if col == "ratio" else "right")
    for r in report.ratios:
        table.add_row(r.key, f"{r.measured:.2f}", f"{r.predicted:.2f}", _pct(r.residual))
    console.print(table)
    for line in report.skipped_runs:
        console.print(f"[yellow]skipped run:[/] {escape(line)}", highlight=False)
    for r in report.throughput:
        if r.assumptions:
            console.print(f"[dim]{escape(r.key)}: {escape(r.assumptions)}[/]", highlight=False)
    for m in report.memory:
        if m.derivation:
            console.print(
                f"[dim]{escape(m.key)}: measured value from {escape(m.derivation)}[/]", highlight=False
            )
