"""``lfkit recipe check`` and ``lfkit plan``: keep the recipe catalog honest and say what fits."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import typer
from typer.core import TyperGroup

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


class _PlanGroup(TyperGroup):
    """``lfkit plan RECIPE ...`` runs the default command (estimate); ``lfkit plan calibrate`` its own."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["estimate", *args]
        return super().parse_args(ctx, args)


plan_app = typer.Typer(
    cls=_PlanGroup,
    help="Estimate memory and time of a recipe on given GPUs (`lfkit plan RECIPE --gpu NAMExCOUNT`); "
    "`lfkit plan calibrate` fits and checks the time model against measurements.",
    no_args_is_help=True,
)


@plan_app.command("estimate")
def plan_command(
    recipe: Path = typer.Argument(..., exists=True, dir_okay=False, help="A LlamaFactory YAML recipe."),
    gpu: str = typer.Option(
        ...,
        "--gpu",
        help="GPU model and GPUs per node, NAME[xCOUNT]: 2080tix2, rtx-6000-adax2, h100, h200x8. Known: "
        + ", ".join(GPUS)
        + ".",
    ),
    nodes: int = typer.Option(1, "--nodes", min=1, help="Number of machines, each with COUNT GPUs."),
    inter_node_gbit: float = typer.Option(
        None,
        "--inter-node-gbit",
        help="Network bandwidth of one node in Gbit/s (all its NICs together) when --nodes > 1. "
        "Default: 200 per GPU on SXM data-centre parts, 100 per node otherwise; the plan says which.",
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
    host_ram_gib: float = typer.Option(
        None, "--host-ram-gib", help="Host RAM per node in GiB: a plan over it does not fit (exit 1)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON (memory in GiB and GB keys)."),
) -> None:
    """Estimate peak GPU memory per device, host RAM and training time for a recipe on given GPUs.

    Memory (GiB = 2^30 bytes, as nvidia-smi counts): weights (16-bit, 4/8-bit), adapters,
    gradients and AdamW state, activations per method with or without gradient checkpointing
    and Liger kernels, the logits' backward peak, kl_beta's tensors and reference model, DeepSpeed
    ZeRO-1/2/3 sharding, gathered parameters and CPU offload, CUDA context and allocator reserve.
    Time: FLOPs per token at a utilisation fitted to measurements (`lfkit plan calibrate`), plus
    the communication the setup cannot hide, inside a node and across --nodes. Suggestions are
    recipe changes (YAML keys) that were re-estimated and help: make it fit or run, or run faster.

    Exit status: 0 fits and runs; 1 does not fit (GPU memory, or --host-ram-gib); 3 cannot run on
    this hardware whatever the memory (bf16 or FlashAttention-2 on Turing, pure_bf16 with ZeRO-3, a
    DeepSpeed train_batch_size that the GPU count contradicts, kl_beta with Liger or ChatTS);
    2 bad input. A plan that cannot run gives no throughput.
    """
    from lfkit.planning.gpus import Cluster, GpuSpecError, parse_gpu_spec
    from lfkit.planning.models import ModelShapeError
    from lfkit.planning.plan import plan_for_recipe_file
    from lfkit.planning.render import print_plan
    from lfkit.planning.training_setup import RecipeValueError

    try:
        gpu_model, count = parse_gpu_spec(gpu)
        cluster = Cluster.of(gpu_model, count, nodes, inter_node_gbit)
        plan = plan_for_recipe_file(
            recipe,
            cluster,
            model_size=model_size,
            samples=samples,
            tokens_per_sample=tokens_per_sample,
            host_ram_gib=host_ram_gib,
        )
    except (GpuSpecError, ModelShapeError, RecipeValueError, ValueError) as err:
        typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(plan.to_json(), indent=2))
    else:
        print_plan(plan)
    raise typer.Exit(int(plan.status))


@plan_app.command("calibrate")
def calibrate_command(
    root: Path = typer.Option(
        Path("."), "--root", help="The lfkit checkout (its recipes/ and results/ are read)."
    ),
    runs: Path = typer.Option(
        None, "--runs", help="Recorded GPU runs to include (default ROOT/results/runs/gpu)."
    ),
    as_json: bool = typer.Option(False, "--json", help="Print the fit and every residual as JSON."),
    write: bool = typer.Option(
        False, "--write", help="Store the fitted constants in ROOT/lfkit/planning/calibration.json."
    ),
) -> None:
    """Fit the time model to every measurement and print the residual of each.

    Measurements: the team's six throughput figures (recipe headers), every GPU run recorded
    under results/runs/gpu (lfkit_run.json + trainer_log.jsonl + its recipe), the peak-memory
    figures of issue 12 and the Liger ratios of issue 13. Prints which constants are fitted and
    which are fixed, the fit's residual and the leave-one-out residual per measurement, and the
    memory estimate beside each measured peak. lfkit plan uses the stored constants: after new
    GPU runs, run with --write, then `lfkit recipe estimates --write`.
    """
    from lfkit.planning.calibration import calibrate, stored_path, write_calibration
    from lfkit.planning.render import print_calibration

    if not (root / "recipes").is_dir():
        typer.secho(
            f"error: {root} has no recipes/: pass --root with the lfkit checkout",
            fg=typer.colors.RED,
            err=True,
        )
        raise typer.Exit(2)
    report = calibrate(root, runs)
    if as_json:
        typer.echo(json.dumps(report.to_json(), indent=2))
    else:
        print_calibration(report)
    if write:
        path = write_calibration(report, root)
        typer.echo(f"wrote {path}" if path == stored_path(root) else str(path), err=as_json)
