"""Loss-curve PNGs: one figure per run, and comparisons of runs of one stage.

A run's figure has its loss on top (raw and EMA-smoothed training loss, every eval set, the
epoch ends where the per-epoch table puts them, and a marker where the run diverged or
became unstable), and below it one small panel per extra quantity: loss terms (lfkit's
``ce_loss``/``kl_loss``), the stage's own metrics (:mod:`lfkit.reporting.stages`: reward
accuracy and margins for DPO, reward for PPO, eval accuracy for RM, ...), the learning rate
and the gradient norm.

Comparisons overlay the runs of one stage only (a DPO loss and a cross-entropy share no
axis) by optimizer step, epoch or input tokens. Each run has its own colour, line style and
marker, so a run whose curve lies exactly on another's stays visible. File names carry the
stage and the compared runs (or a name the caller gives), so a second comparison written
into the same folder does not replace the first.

matplotlib runs on its Agg backend (files only, no display); PNGs are stored as 128-colour
palette images to keep committed results light.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from lfkit.reporting.epochs import epoch_ends
from lfkit.reporting.health import DIVERGED, HEALTHY, UNSTABLE, Assessment, assess, bad_loss
from lfkit.reporting.runs import LogPoint, Run, eval_key, eval_set_label
from lfkit.reporting.stages import MetricPanel, Stage, comparison_keys, loss_label, stage_of

SMOOTHING = 0.6
"""EMA weight of the previous smoothed value (TensorBoard's default): higher = smoother."""
WIDTH = 8.0
LOSS_HEIGHT = 4.0
PANEL_HEIGHT = 2.3
"""Inches: figure width, the loss panel's height and each row of small panels."""
DPI = 100
X_AXES = ("step", "epoch", "tokens")
"""What a comparison can be drawn against: optimizer step, fractional epoch, input tokens seen."""
LINE_STYLES = ("-", "--", "-.", ":")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MARKS_PER_LINE = 12
"""About this many markers per compared line (every n-th point), enough to tell runs apart."""
MAX_NAME_RUNS = 60
"""Comparison file names list the runs up to this many characters, then count the rest and add a hash."""
PALETTE_COLORS = 128
"""PNGs are stored with an adaptive palette of this many colours: a third of the RGBA size, same look."""


@dataclass(frozen=True)
class PlotOptions:
    """How figures are drawn: log-scale loss axes, resolution."""

    log_y: bool = False
    dpi: int = DPI


@dataclass
class Comparisons:
    """What :func:`plot_comparisons` wrote, and a line for each comparison it could not draw."""

    paths: list[Path] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def ema(values: list[float], weight: float = SMOOTHING) -> list[float]:
    """Exponential moving average with bias correction, so the first points are not pulled to 0."""
    out, avg = [], 0.0
    for i, value in enumerate(values, start=1):
        avg = weight * avg + (1 - weight) * value
        out.append(avg / (1 - weight**i))
    return out


def slug(label: str) -> str:
    """A file-name-safe version of a run label."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", label).strip("_") or "run"


def _finite(pairs: Iterable[tuple[float, float]]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for x, y in pairs:
        if math.isfinite(y):
            xs.append(x)
            ys.append(y)
    return xs, ys


def _series(run: Run, key: str) -> list[tuple[int, float]]:
    return [(step, value) for step, _, value in run.series(key)]


# ---------------------------------------------------------------- one run


def plot_run(
    run: Run,
    out_dir: Path,
    *,
    stage: Stage | None = None,
    assessment: Assessment | None = None,
    options: PlotOptions = PlotOptions(),
) -> Path | None:
    """Write ``<label>_loss.png`` for one run; ``None`` when the run logged no loss."""
    fig = run_figure(run, stage=stage, assessment=assessment, options=options)
    if fig is None:
        return None
    path = Path(out_dir) / f"{slug(run.label)}_loss.png"
    _save(fig, path, options.dpi)
    _pyplot().close(fig)
    return path


def run_figure(
    run: Run,
    *,
    stage: Stage | None = None,
    assessment: Assessment | None = None,
    options: PlotOptions = PlotOptions(),
):
    """The matplotlib figure of one run (see the module docstring), or ``None`` without any loss."""
    if not run.train_log and not run.eval_sets():
        return None
    stage = stage or stage_of(run)
    assessment = assessment or assess(run)
    plt = _pyplot()

    small = _small_panels(run, stage)
    rows = math.ceil(len(small) / 2)
    heights = [LOSS_HEIGHT] + [PANEL_HEIGHT] * rows
    fig = plt.figure(figsize=(WIDTH, sum(heights)))
    grid = fig.add_gridspec(1 + rows, 2, height_ratios=heights)
    ax = fig.add_subplot(grid[0, :])
    _draw_loss(ax, run, stage, assessment, options)
    for index, draw in enumerate(small):
        row, col = 1 + index // 2, index % 2
        last_alone = index == len(small) - 1 and len(small) % 2 == 1
        draw(fig.add_subplot(grid[row, :] if last_alone else grid[row, col], sharex=ax))
    fig.tight_layout()
    return fig


def _draw_loss(ax, run: Run, stage: Stage, assessment: Assessment, options: PlotOptions) -> None:

    train = run.train_log
    good = [(p.step, p.values["loss"]) for p in train if not bad_loss(p)]
    xs, ys = _finite(good)
    if xs:
        ax.plot(
            xs,
            ys,
            color="tab:blue",
            alpha=0.35,
            linewidth=1,
            marker="." if len(xs) < 50 else None,
            label="train loss (raw)",
        )
        ax.plot(xs, ema(ys), color="tab:blue", linewidth=2, label=f"train loss (EMA {SMOOTHING})")
    steps = [p.step for p in run.log]
    for index, name in enumerate(run.eval_sets()):
        series = [(s, v) for s, _, v in run.eval_series(name)]
        exs, eys = _finite(series)
        if exs:
            ax.plot(
                exs,
                eys,
                color=f"C{3 + index}",
                marker=MARKERS[index % len(MARKERS)],
                markersize=4,
                linewidth=1.5,
                label=f"{eval_set_label(name)} loss",
            )
        _mark_non_finite(
            ax,
            [s for s, v in series if not math.isfinite(v)],
            f"{eval_set_label(name)} loss NaN/inf",
            steps,
            y=0.91,
            color="darkred",
        )
    hidden = " or hidden as 0.0" if any(bad_loss(p) and p.values["loss"] == 0.0 for p in train) else ""
    _mark_non_finite(ax, [p.step for p in train if bad_loss(p)], f"train loss NaN/inf{hidden}", steps)
    health = assessment.health
    if health.state in (DIVERGED, UNSTABLE) and health.step is not None:
        color = "red" if health.state == DIVERGED else "darkorange"
        ax.axvline(health.step, color=color, linestyle="--", linewidth=1.5)
        ax.annotate(
            health.label,
            (health.step, 0.5),
            xycoords=("data", "axes fraction"),
            xytext=(4, 0),
            textcoords="offset points",
            color=color,
            fontsize=9,
            rotation=90,
            va="center",
        )
    for epoch, step in epoch_ends(train or run.log):
        ax.axvline(step, color="gray", linestyle=":", linewidth=1)
        ax.annotate(
            f"end of epoch {epoch}",
            (step, 1),
            xycoords=("data", "axes fraction"),
            xytext=(-3, -12),
            textcoords="offset points",
            ha="right",
            fontsize=8,
            color="gray",
        )
    status = "" if health.state == HEALTHY else f" ({health.label})"
    ax.set_title(f"{stage.name} loss: {run.label}{status}")
    _loss_axes(ax, loss_label(stage, run.component_loss_keys()), "step", ys, options, legend_size=8)


X_LABELS = {"step": "optimizer step", "epoch": "epoch", "tokens": "input tokens seen"}


def _loss_axes(
    ax, label: str, x: str, losses: list[float], options: PlotOptions, *, legend_size: int
) -> None:
    """Labels, scale, grid and legend of a loss panel."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlabel(X_LABELS[x])
    if x == "step":
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(_wrap(label))
    if options.log_y:
        _log_scale(ax, losses)
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=legend_size)


def _mark_non_finite(
    ax, steps: list[int], label: str, all_steps: list[int], *, y: float = 0.97, color: str = "red"
) -> None:
    """Crosses near the top edge where a value was NaN or infinite (a line cannot show them).

    The x range is widened to every logged step, so crosses after the last finite value stay in view.
    """
    if not steps:
        return
    ax.scatter(
        steps,
        [y] * len(steps),
        transform=ax.get_xaxis_transform(),
        marker="x",
        color=color,
        s=30,
        zorder=5,
        label=f"{label} ({len(steps)})",
    )
    low, high = min(all_steps + steps), max(all_steps + steps)
    pad = max(0.5, (high - low) * 0.03)
    ax.set_xlim(low - pad, high + pad)


def _small_panels(run: Run, stage: Stage) -> list:
    """Drawing functions for the panels under the loss, for the quantities this run logged."""
    panels = []
    staged = {k for panel in stage.panels for k in panel.keys}
    for key in run.component_loss_keys():
        if key not in staged:
            panels.append(_metric_drawer(run, MetricPanel(f"loss term: {key}", (key,), key)))
    for panel in stage.panels:
        has = any(
            run.series(k) or any(run.eval_series(n, k) for n in run.eval_sets() or [""]) for k in panel.keys
        )
        if has:
            panels.append(_metric_drawer(run, panel))
    if run.series("learning_rate"):
        panels.append(_lr_drawer(run))
    if run.series("grad_norm"):
        panels.append(_grad_drawer(run))
    return panels


def _metric_drawer(run: Run, panel: MetricPanel):
    def draw(ax) -> None:
        for index, key in enumerate(panel.keys):
            color = f"C{(index + 4) % 10}"
            xs, ys = _finite(_series(run, key))
            if xs:
                ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1)
                ax.plot(xs, ema(ys), color=color, linewidth=1.8, label=f"{key} (EMA)")
            for name in run.eval_sets() or [""]:
                exs, eys = _finite((s, v) for s, _, v in run.eval_series(name, key))
                if exs:
                    ax.plot(
                        exs,
                        eys,
                        color=color,
                        marker="o",
                        markersize=3.5,
                        linestyle=":",
                        linewidth=1,
                        label=f"{eval_key(name, key)}",
                    )
        _small_axes(ax, panel.title, panel.ylabel)

    return draw


def _lr_drawer(run: Run):
    def draw(ax) -> None:
        xs, ys = _finite(_series(run, "learning_rate"))
        ax.plot(xs, ys, color="tab:green", linewidth=1.5)
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        _small_axes(ax, "learning rate", "lr", legend=False)

    return draw


def _grad_drawer(run: Run):
    def draw(ax) -> None:
        points = _series(run, "grad_norm")
        xs, ys = _finite(points)
        if xs:
            ax.plot(xs, ys, color="tab:purple", linewidth=1.2, marker="." if len(xs) < 50 else None)
            if min(ys) > 0 and max(ys) / min(ys) > 1e3:
                ax.set_yscale("log")
        _mark_non_finite(
            ax, [s for s, v in points if not math.isfinite(v)], "grad norm NaN/inf", [s for s, _ in points]
        )
        _small_axes(ax, "gradient norm (before clipping)", "grad norm", legend=len(xs) < len(points))

    return draw


def _small_axes(ax, title: str, ylabel: str, *, legend: bool = True) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.set_title(title, fontsize=9)
    ax.set_xlabel("optimizer step", fontsize=8)
    ax.set_ylabel(ylabel, fontsize=8)
    ax.tick_params(labelsize=7)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(loc="best", fontsize=6)


def _wrap(text: str, width: int = 44) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def _log_scale(ax, values: list[float]) -> None:
    """Log scale for positive losses; symmetric log where a loss goes to 0 or below (PPO)."""
    if values and min(values) > 0:
        ax.set_yscale("log")
    else:
        ax.set_yscale("symlog", linthresh=1e-3)


# ---------------------------------------------------------------- comparisons


def plot_comparisons(
    runs: list[Run],
    out_dir: Path,
    *,
    axes: Iterable[str] = ("step", "epoch"),
    name: str | None = None,
    options: PlotOptions = PlotOptions(),
) -> Comparisons:
    """Overlay the training losses of the runs of each stage, one PNG per stage and x axis.

    A stage with a single run, and runs without the x values asked for (no epoch or token
    counts), are named in :attr:`Comparisons.notes` instead of being dropped silently.
    """
    axes = list(dict.fromkeys(axes))
    for x in axes:
        if x not in X_AXES:
            raise ValueError(f"unknown x axis {x!r}; choose from {', '.join(X_AXES)}")
    trained = [r for r in runs if r.train_log]
    stages = [stage_of(r) for r in trained]
    groups: dict[str, list[tuple[Run, Stage, Assessment]]] = {}
    for run, stage, key in zip(trained, stages, comparison_keys(stages), strict=True):
        groups.setdefault(key, []).append((run, stage, assess(run)))
    result = Comparisons()
    comparable = {k: g for k, g in groups.items() if len(g) >= 2}
    for members in groups.values():
        if len(members) < 2:
            result.notes.append(f"{members[0][1].name}: one run ({members[0][0].label}), nothing to compare")
    for key, members in comparable.items():
        stage = next((s for _, s, _ in members if s.key == key), members[0][1])
        for x in axes:
            drawn = [(r, a) for r, _, a in members if _x_points(r, x)]
            left_out = [r.label for r, _, _ in members if not _x_points(r, x)]
            if left_out:
                why = {
                    "epoch": "no epoch values",
                    "tokens": "no token counts (include_num_input_tokens_seen)",
                }
                result.notes.append(
                    f"{stage.name} by {x}: left out {', '.join(left_out)} ({why.get(x, 'no values')})"
                )
            if len(drawn) < 2:
                result.notes.append(f"{stage.name} by {x}: fewer than two runs to compare")
                continue
            path = Path(out_dir) / comparison_file_name(
                key, x, [r.label for r, _ in drawn], name=name, several_stages=len(comparable) > 1
            )
            fig = comparison_figure(drawn, stage, x, options)
            _save(fig, path, options.dpi)
            _pyplot().close(fig)
            result.paths.append(path)
    return result


def _x_points(run: Run, x: str) -> list[tuple[float, LogPoint]]:
    """``(x, point)`` of the run's training events on the requested axis."""
    out = []
    for point in run.train_log:
        if x == "step":
            out.append((float(point.step), point))
        elif x == "epoch" and point.epoch is not None:
            out.append((point.epoch, point))
        elif x == "tokens" and point.values.get("num_input_tokens_seen", 0) > 0:
            out.append((point.values["num_input_tokens_seen"], point))
    return out


def comparison_figure(members: list[tuple[Run, Assessment]], stage: Stage, x: str, options: PlotOptions):
    """The figure overlaying ``members`` (runs of one stage) against ``x``."""
    plt = _pyplot()

    panel = next(
        (p for p in stage.panels if any(_series(r, p.keys[0]) for r, _ in members)),
        None,
    )
    heights = [LOSS_HEIGHT] + ([PANEL_HEIGHT] if panel else [])
    fig, axs = plt.subplots(
        len(heights), 1, figsize=(WIDTH, sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    ax = axs[0][0]
    all_losses: list[float] = []
    for i, (run, assessment) in enumerate(members):
        color = f"C{i % 10}"
        style = {
            "linestyle": LINE_STYLES[i % len(LINE_STYLES)],
            "marker": MARKERS[i % len(MARKERS)],
            "markersize": 5,
            "markerfacecolor": "none" if i % 2 else color,
        }
        pts = _x_points(run, x)
        xs, ys = _finite((xv, p.values["loss"]) for xv, p in pts if not bad_loss(p))
        all_losses += ys
        every = max(1, len(xs) // MARKS_PER_LINE)
        # Each run's markers start at another point, so runs on one curve show all their markers.
        every = (i * max(1, every // len(members)) % every, every)
        label = run.label + ("" if assessment.health.state == HEALTHY else f" ({assessment.health.label})")
        if xs:
            ax.plot(xs, ys, color=color, alpha=0.2, linewidth=1)
            ax.plot(
                xs, ema(ys), color=color, linewidth=2, markevery=every, label=f"{label} train (EMA)", **style
            )
        evals = _eval_on_axis(run, x)
        if evals:
            ax.plot(
                [e[0] for e in evals],
                [e[1] for e in evals],
                color=color,
                linestyle=":",
                linewidth=1,
                marker=style["marker"],
                markersize=4,
                label=f"{run.label} eval",
            )
        bad = [xv for xv, p in pts if bad_loss(p)]
        if assessment.health.state == DIVERGED and bad:
            ax.scatter(
                [bad[0]], [0.97], transform=ax.get_xaxis_transform(), marker="x", color=color, s=60, zorder=5
            )
        if panel:
            pax = axs[1][0]
            mxs, mys = _finite((xv, p.values[panel.keys[0]]) for xv, p in pts if panel.keys[0] in p.values)
            if mxs:
                pax.plot(
                    mxs,
                    ema(mys),
                    color=color,
                    linewidth=1.5,
                    markevery=max(1, len(mxs) // MARKS_PER_LINE),
                    label=run.label,
                    **style,
                )
    xlabel = X_LABELS[x]
    if x == "epoch":
        top = max((p.epoch for r, _ in members for p in r.train_log if p.epoch is not None), default=0)
        for whole in range(1, int(top + 1e-6) + 1):
            ax.axvline(whole, color="gray", linestyle=":", linewidth=1)
    ax.set_title(
        f"{stage.name}: training loss of {len(members)} runs by {x} (faint: raw, bold: EMA {SMOOTHING})",
        fontsize=10,
    )
    _loss_axes(ax, stage.loss_label, x, all_losses, options, legend_size=7)
    if panel:
        pax = axs[1][0]
        pax.set_title(f"{panel.title}: {panel.keys[0]} (EMA)", fontsize=9)
        pax.set_xlabel(xlabel, fontsize=8)
        pax.set_ylabel(panel.ylabel, fontsize=8)
        pax.grid(alpha=0.3)
        pax.tick_params(labelsize=7)
    fig.tight_layout()
    return fig


def _eval_on_axis(run: Run, x: str) -> list[tuple[float, float]]:
    """The first eval set's losses against ``x`` (tokens: from the training event at the same step)."""
    sets = run.eval_sets()
    if not sets:
        return []
    tokens = {p.step: p.values.get("num_input_tokens_seen") for p in run.train_log}
    out = []
    for step, epoch, value in run.eval_series(sets[0]):
        where = {"step": float(step), "epoch": epoch, "tokens": tokens.get(step)}[x]
        if where is not None and math.isfinite(value):
            out.append((where, value))
    return out


def comparison_file_name(
    stage_key: str, x: str, labels: list[str], *, name: str | None = None, several_stages: bool = False
) -> str:
    """``compare_<stage>_<runs>_by_<x>.png``, or ``<name>[_<stage>]_by_<x>.png`` for a given name.

    The runs are their labels without the part all of them share; past :data:`MAX_NAME_RUNS`
    characters the first two are kept, the rest counted, and a hash of all labels added, so
    different sets of runs never share a file name.
    """
    stage = slug(stage_key.replace("/", "-"))
    if name:
        return f"{slug(name)}{'_' + stage if several_stages else ''}_by_{x}.png"
    parts = _distinct_parts(labels)
    joined = "+".join(slug(p) for p in parts)
    if len(joined) > MAX_NAME_RUNS:
        digest = hashlib.sha1("\n".join(labels).encode()).hexdigest()[:8]
        joined = "+".join(slug(p) for p in parts[:2]) + f"+{len(parts) - 2}more-{digest}"
    return f"compare_{stage}_{joined}_by_{x}.png"


def _distinct_parts(labels: list[str]) -> list[str]:
    split = [label.split("/") for label in labels]
    common = 0
    while all(len(s) > common + 1 for s in split) and len({s[common] for s in split}) == 1:
        common += 1
    return ["/".join(s[common:]) for s in split]


def _save(fig, path: Path, dpi: int = DPI) -> None:
    """Save as a palette PNG through a temporary file and a rename (a reader never sees half a PNG)."""
    import io

    from PIL import Image

    from lfkit.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=dpi, format="png", facecolor="white")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=PALETTE_COLORS)
    with atomic_write(path, "wb") as fh:
        image.save(fh, format="PNG", optimize=True)
