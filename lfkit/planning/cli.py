"""``lfkit recipe check`` and ``lfkit plan``: keep the recipe catalog honest and say what fits."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer

from lfkit.planning.gpus import GPUS
from lfkit.planning.show import show_command

recipe_app = typer.Typer(
    help="Check recipes with LlamaFactory's own argument parser; keep header estimates current.",
    no_args_is_help=True,
)


@recipe_app.command("check")
def check_command(
    paths: list[Path] = typer.Argument(
        None,
        help="Recipe files or directories (searched for *.yaml). Default: recipes/ in the working directory.",
    ),
    tiny_model: Path = typer.Option(
        None,
        "--tiny-model",
        help="Model directory to parse against (default: a tiny model built once into the cache).",
    ),
    root: Path = typer.Option(
        Path("."),
        "--root",
        help="Directory relative recipe paths resolve from (where you run llamafactory-cli).",
    ),
    as_json: bool = typer.Option(
        False, "--json", help="Print the problems as JSON (recipe, line, key, message)."
    ),
) -> None:
    """Parse every recipe with LlamaFactory's own parser (lfkit plugin active) and check its files.

    Reports each problem with its recipe, line and key: unknown or misspelt keys, values
    LlamaFactory rejects, unknown templates, missing DeepSpeed configs, dataset_dir or
    dataset names, and DeepSpeed settings that contradict the recipe. The model is swapped
    for a tiny local one (no hub) and a few hardware-dependent flags are relaxed; see
    **lfkit.planning.check** for the exact list. Exit status 1 when any problem is found.
    """
    from rich.console import Console
    from rich.progress import Progress
    from rich.table import Table

    from lfkit.planning.check import activate_plugin, check_recipe, ensure_tiny_model, find_recipes

    console = Console(stderr=as_json)
    targets = list(paths) if paths else [root / "recipes"]
    missing = [p for p in targets if not p.exists()]
    if missing:
        console.print(f"[red]no such file or directory: {', '.join(map(str, missing))}[/]")
        raise typer.Exit(2)
    recipes = find_recipes(targets)
    if not recipes:
        console.print("[red]no *.yaml recipes found[/]")
        raise typer.Exit(2)
    if not activate_plugin():
        console.print(
            "[yellow]LFKIT_DISABLE_PLUGIN is set: lfkit's recipe keys will be reported as unknown[/]"
        )
    model = ensure_tiny_model(tiny_model)
    results = {}
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("checking recipes", total=len(recipes))
        for recipe in recipes:
            progress.update(task, description=f"checking {recipe.name}")
            results[recipe] = check_recipe(recipe, model, root)
            progress.advance(task)

    problems = [p for found in results.values() for p in found]
    if as_json:
        typer.echo(
            json.dumps(
                {"checked": [str(r) for r in recipes], "problems": [asdict(p) for p in problems]}, indent=2
            )
        )
        raise typer.Exit(1 if problems else 0)
    if problems:
        table = Table(title="Recipe problems", show_lines=False)
        table.add_column("recipe:line", style="cyan", overflow="fold")
        table.add_column("key", style="magenta", overflow="fold")
        table.add_column("problem", overflow="fold")
        for p in problems:
            table.add_row(p.where(), p.key, p.message)
        console.print(table)
    bad = sum(1 for found in results.values() if found)
    colour = "red" if problems else "green"
    console.print(
        f"[{colour}]{len(recipes)} recipe(s) checked: {len(recipes) - bad} ok, "
        f"{bad} with {len(problems)} problem(s)[/]"
    )
    if problems:
        raise typer.Exit(1)


recipe_app.command("show")(show_command)


@recipe_app.command("estimates")
def estimates_command(
    paths: list[Path] = typer.Argument(None, help="Recipe files or directories. Default: recipes/."),
    write: bool = typer.Option(False, "--write", help="Rewrite stale '# Estimate:' lines in place."),
) -> None:
    """Compare each recipe header's '# Estimate:' line with what its '# Plan:' command says now.

    Every recipe checked must carry a '# Plan:' line (an `lfkit plan RECIPE --gpu ...` command):
    one without, or with a Plan line that cannot run, is an error naming the recipe, with or
    without --write. Without --write, also lists stale Estimate lines; exit 1 if anything is
    wrong (the test suite runs this so the catalog's figures never drift from the planner).
    With --write, updates stale lines atomically (and adds missing ones after the Plan line).
    """
    from rich.console import Console
    from rich.markup import escape

    from lfkit.planning.catalog import CatalogError, expected_estimate, write_estimate
    from lfkit.planning.check import find_recipes

    console = Console()
    stale = broken = 0
    for recipe in find_recipes(list(paths) if paths else [Path("recipes")]):
        try:
            current, expected = expected_estimate(recipe)
        except (CatalogError, ValueError) as err:
            message = str(err) if str(err).startswith(str(recipe)) else f"{recipe}: {err}"
            console.print(f"[red]error[/] {escape(message)}", highlight=False, soft_wrap=True)
            broken += 1
            continue
        if current == expected:
            continue
        if write:
            write_estimate(recipe, expected)
            console.print(f"[green]updated[/] {recipe}: {expected[2:].strip()}")
        else:
            stale += 1
            console.print(f"[yellow]stale[/] {recipe}\n  header: {current}\n  plan:   {expected}")
    if broken:
        console.print(f"[red]{broken} recipe(s) without a usable '# Plan:' line (see above)[/]")
    if stale:
        console.print(f"[red]{stale} recipe header(s) disagree with lfkit plan; run with --write[/]")
    if broken or stale:
        raise typer.Exit(1)


@recipe_app.command("random-model")
def random_model_command(
    name: str = typer.Argument(
        ..., help="A known shape: Qwen2.5-7B, Qwen2.5-14B, Qwen3-8B, Qwen3-30B-A3B, ..."
    ),
    out_dir: Path = typer.Argument(..., help="Directory to write the model into (must not exist)."),
    device: str = typer.Option("cpu", help="Where to build the weights: cuda builds a 7B model in seconds."),
    dtype: str = typer.Option("bfloat16", help="Weight dtype to save (bfloat16, float16, float32)."),
    seed: int = typer.Option(0, help="Seed for the random weights."),
) -> None:
    """Build a random-weight model of a known shape, to measure a recipe without the model hub.

    Peak memory and samples/s do not depend on the weights' values: run a recipe with
    `model_name_or_path=OUT` to measure it at the real shape (and calibrate lfkit plan).
    """
    from lfkit.planning.models import ModelShapeError
    from lfkit.planning.random_model import write_random_model

    try:
        path = write_random_model(name, out_dir, dtype=dtype, device=device, seed=seed)
    except (ModelShapeError, FileExistsError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    typer.echo(f"random-weight {name} written to {path}")


def plan_command(
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="A LlamaFactory YAML recipe."),
    gpu: str = typer.Option(
        ...,
        "--gpu",
        help="GPU model and count, NAME\\[xCOUNT]: 2080tix2, rtx-6000-adax2, h100, a100-80x8. Known: "
        + ", ".join(GPUS)
        + ".",
    ),
    model_size: str = typer.Option(
        None, "--model-size", help="Plan for another size of the model (14B, 8B, Qwen3-30B-A3B, ...)."
    ),
    samples: int = typer.Option(None, "--samples", min=1, help="Training samples, for steps and wall time."),
    tokens_per_sample: int = typer.Option(
        None,
        "--tokens-per-sample",
        min=1,
        help="Mean tokens per sample (default cutoff_len: an upper bound).",
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the estimate as JSON."),
) -> None:
    """Estimate peak GPU memory per device and training time for a recipe on given GPUs.

    Memory: weights (16-bit, 4/8-bit), LoRA/DoRA adapters, gradients and AdamW state,
    activations with or without gradient checkpointing, logits, DeepSpeed ZeRO-1/2/3
    sharding and CPU offload. Time: FLOPs per token at an assumed fraction of the GPU's
    peak plus communication. Says whether it fits in memory ("fits") and whether it can run at
    all ("runs": false too when a setting is blocked on the GPU, e.g. bf16 on Turing), and
    what to change, following the team's decision tree (<=8B full is fine, 13-30B prefer
    LoRA, >=30B LoRA required, <16 GB QLoRA). With kl_beta, a frozen reference copy (freeze,
    full, kl_ref_model) is counted; the KL term's extra forward pass and tensors are not.
    The model shape comes from config.json when model_name_or_path is a local directory,
    else from a table of known models. **Uncalibrated**: first-principles figures.
    """
    from lfkit.planning.gpus import GpuSpecError, parse_gpu_spec
    from lfkit.planning.memory import RecipeValueError
    from lfkit.planning.models import ModelShapeError
    from lfkit.planning.plan import plan_for_recipe_file

    try:
        gpu_model, count = parse_gpu_spec(gpu)
        plan = plan_for_recipe_file(
            recipe,
            gpu_model,
            count,
            model_size=model_size,
            samples=samples,
            tokens_per_sample=tokens_per_sample,
        )
    except (GpuSpecError, ModelShapeError, RecipeValueError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(plan, indent=2))
        return
    _print_plan(plan)


def _print_plan(plan: dict) -> None:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    console = Console()
    m, g = plan["model"], plan["gpu"]
    ds = plan["deepspeed"]
    zero = f"ZeRO-{ds['stage']}" if ds["stage"] else ("DDP" if plan["n_gpus"] > 1 else "single GPU")
    if ds["offload_optimizer"] or ds["offload_param"]:
        zero += " + CPU offload"
    console.print(
        f"[bold]{plan['recipe']}[/]: {m['name']} ({m['total_params_b']}B, from {m['source']}), "
        f"{plan['method']}, {plan['precision']}, {zero}, "
        f"on {plan['n_gpus']}x {g['name']} ({g['memory_gib']:g} GB)"
    )
    table = Table(title="Per-device memory (GiB)")
    table.add_column("component")
    table.add_column("GiB", justify="right")
    for k, v in plan["memory_gb"].items():
        table.add_row(k, f"{v:.2f}")
    verdict = "[green]fits[/]" if plan["fits"] else "[red]does not fit[/]"
    table.add_row("[bold]peak[/]", f"[bold]{plan['peak_memory_gb']:.2f}[/]")
    console.print(table)
    console.print(
        f"peak {plan['peak_memory_gb']:.2f} GiB of {plan['usable_memory_gb']:.2f} usable: {verdict}"
    )
    n_blocking = len(plan["blocking"])
    if plan["runs"]:
        console.print("runs: [green]yes[/] (fits, nothing blocking)")
    else:
        why = ["does not fit"] if not plan["fits"] else ["fits"]
        if n_blocking:
            why.append(f"{'but ' if plan['fits'] else ''}{n_blocking} blocking problem(s) below")
        console.print(f"runs: [red]no[/] ({', '.join(why)})")
    t = plan["time"]
    line = (
        f"throughput ~{t['samples_per_s']} samples/s ({t['step_seconds']} s/step, effective batch "
        f"{t['effective_batch']}, {t['tokens_per_sample']} tokens/sample, MFU {t['mfu_assumed']})"
    )
    if "seconds" in t:
        line += f"; {t.get('total_steps')} steps -> {t['seconds'] / 60:.1f} min"
    console.print(line)
    for b in plan["blocking"]:
        console.print(f"[red]blocking:[/] {escape(b)}")
    for r in plan["recommendation"]:
        console.print(f"[cyan]advice:[/] {escape(r)}")
    for n in plan["notes"] + plan["model"]["notes"]:
        console.print(f"[dim]note: {escape(n)}[/]")
    if plan.get("alternatives"):
        alt = Table(title="Changes that were re-estimated")
        alt.add_column("change")
        alt.add_column("set keys")
        alt.add_column("peak GiB", justify="right")
        alt.add_column("fits")
        for a in plan["alternatives"]:
            keys = ", ".join(f"{k}={v}" for k, v in a["set"].items())
            alt.add_row(a["change"], keys, f"{a['peak_memory_gb']:.2f}", "yes" if a["fits"] else "no")
        console.print(alt)
    console.print(f"[dim]{plan['calibration']}[/]")
