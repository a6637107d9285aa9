"""Loss-curve PNGs: one per run, and comparisons overlaying several runs by step and by epoch.

matplotlib runs on its Agg backend (files only, no display). Figures are small (800x450
at 100 dpi) so the committed results stay light.
"""

from __future__ import annotations

import re
from pathlib import Path

from lfkit.reporting.runs import LogPoint, Run

SMOOTHING = 0.6
"""EMA weight of the previous smoothed value (TensorBoard's default): higher = smoother."""
FIGSIZE = (8, 4.5)
COMPONENT_PANEL_HEIGHT = 2.4
"""Height in inches of each extra panel for a logged loss component (ce_loss, kl_loss)."""
DPI = 100


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


def epoch_boundaries(points: list[LogPoint]) -> list[tuple[int, float]]:
    """``(epoch, step)`` where each whole epoch ended, from the logged step/epoch pairs.

    Steps per epoch are read off the last point with an epoch value (step / epoch); only
    boundaries inside the logged range are returned.
    """
    with_epoch = [p for p in points if p.epoch]
    if not with_epoch:
        return []
    last = with_epoch[-1]
    per_epoch = last.step / last.epoch
    ends = []
    whole = 1
    while whole * per_epoch <= last.step + 1e-9:
        ends.append((whole, whole * per_epoch))
        whole += 1
    return ends


def plot_run(run: Run, out_dir: Path) -> Path | None:
    """Write ``<label>_loss.png`` for one run; ``None`` when the run logged no loss."""
    if not run.train_log and not run.eval_log:
        return None
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    components = run.component_loss_keys()
    # Each loss term gets its own panel: a KL term is ~100x smaller than the cross-entropy and
    # would be a flat line on a shared axis.
    rows = 1 + len(components)
    heights = [FIGSIZE[1]] + [COMPONENT_PANEL_HEIGHT] * len(components)
    fig, axes = plt.subplots(
        rows, 1, figsize=(FIGSIZE[0], sum(heights)), squeeze=False, gridspec_kw={"height_ratios": heights}
    )
    ax = axes[0][0]
    steps = [p.step for p in run.train_log]
    losses = [p.values["loss"] for p in run.train_log]
    if losses:
        ax.plot(
            steps,
            losses,
            color="tab:blue",
            alpha=0.35,
            linewidth=1,
            marker="." if len(steps) < 50 else None,
            label="train loss (raw)",
        )
        ax.plot(steps, ema(losses), color="tab:blue", linewidth=2, label=f"train loss (EMA {SMOOTHING})")
    if run.eval_log:
        ax.plot(
            [p.step for p in run.eval_log],
            [p.eval_loss for p in run.eval_log],
            color="tab:red",
            marker="o",
            markersize=4,
            linewidth=1.5,
            label="eval loss",
        )
    for epoch, step in epoch_boundaries(run.train_log or run.eval_log):
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
    incomplete = " (incomplete: no trainer_state.json)" if run.state is None else ""
    ax.set_title(f"Loss: {run.label}{incomplete}")
    ax.set_xlabel("optimizer step")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("loss (cross-entropy, nats/token)" if not components else "loss (total)")
    ax.grid(alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    if components:
        for row, key in enumerate(components, start=1):
            cax = axes[row][0]
            pts = [(p.step, p.values[key]) for p in run.train_log if key in p.values]
            color = f"C{row + 1}"
            cax.plot([s for s, _ in pts], [v for _, v in pts], color=color, alpha=0.35, linewidth=1)
            cax.plot(
                [s for s, _ in pts],
                ema([v for _, v in pts]),
                color=color,
                linewidth=2,
                label=f"{key} (EMA {SMOOTHING})",
            )
            cax.set_title(f"Loss component: {key}", fontsize=10)
            cax.set_xlabel("optimizer step")
            cax.xaxis.set_major_locator(MaxNLocator(integer=True))
            cax.set_ylabel(f"{key} (nats/token)")
            cax.grid(alpha=0.3)
            cax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    path = Path(out_dir) / f"{slug(run.label)}_loss.png"
    _save(fig, path)
    plt.close(fig)
    return path


def plot_comparison(runs: list[Run], out_dir: Path) -> list[Path]:
    """``compare_by_step.png`` and ``compare_by_epoch.png`` overlaying the smoothed losses of ``runs``."""
    runs = [r for r in runs if r.train_log]
    if len(runs) < 2:
        return []
    plt = _pyplot()
    from matplotlib.ticker import MaxNLocator

    paths = []
    for axis in ("step", "epoch"):
        fig, ax = plt.subplots(figsize=FIGSIZE)
        cmap = plt.get_cmap("tab10")
        for i, run in enumerate(runs):
            color = cmap(i % 10)
            train = run.train_log if axis == "step" else [p for p in run.train_log if p.epoch is not None]
            xs = [p.step if axis == "step" else p.epoch for p in train]
            losses = [p.values["loss"] for p in train]
            if not xs:
                continue
            ax.plot(xs, losses, color=color, alpha=0.25, linewidth=1)
            ax.plot(xs, ema(losses), color=color, linewidth=2, label=f"{run.label} train (EMA)")
            evals = run.eval_log if axis == "step" else [p for p in run.eval_log if p.epoch is not None]
            if evals:
                ax.plot(
                    [p.step if axis == "step" else p.epoch for p in evals],
                    [p.eval_loss for p in evals],
                    color=color,
                    linestyle="--",
                    marker="o",
                    markersize=3,
                    linewidth=1.2,
                    label=f"{run.label} eval",
                )
        if axis == "epoch":
            top = max((p.epoch for r in runs for p in r.train_log if p.epoch), default=0)
            for whole in range(1, int(top) + 1):
                ax.axvline(whole, color="gray", linestyle=":", linewidth=1)
        ax.set_title(f"Training loss of {len(runs)} runs by {axis} (faint: raw, solid: EMA {SMOOTHING})")
        ax.set_xlabel("optimizer step" if axis == "step" else "epoch")
        if axis == "step":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("loss (nats/token)")
        ax.grid(alpha=0.3)
        ax.legend(loc="best", fontsize=7)
        fig.tight_layout()
        path = Path(out_dir) / f"compare_by_{axis}.png"
        _save(fig, path)
        plt.close(fig)
        paths.append(path)
    return paths


PALETTE_COLORS = 128
"""PNGs are stored with an adaptive palette of this many colours: a third of the RGBA size, same look."""


def _save(fig, path: Path) -> None:
    """Save as a palette PNG through a temporary file and a rename (a reader never sees half a PNG)."""
    import io

    from PIL import Image

    from lfkit.atomic import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png", facecolor="white")
    buffer.seek(0)
    image = Image.open(buffer).convert("RGB").quantize(colors=PALETTE_COLORS)
    with atomic_write(path, "wb") as fh:
        image.save(fh, format="PNG", optimize=True)
