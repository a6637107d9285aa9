"""Keep each recipe header's ``# Estimate:`` line equal to what ``lfkit plan`` says today.

Every catalog recipe carries a ``# Plan:`` line with the exact ``lfkit plan`` command for its
hardware, and an ``# Estimate:`` line with that command's result (peak memory per GPU, fit,
samples/s). Typed by hand such figures go stale the moment the planner or the recipe changes;
here they are computed, rewritten in place (``lfkit recipe estimates --write``) and compared
(the default, which exits non-zero on drift, as the test suite does).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from lfkit.atomic import atomic_write

_PLAN = re.compile(r"^#\s*Plan:\s*(?P<cmd>lfkit plan .+?)\s*$", re.M)
_ESTIMATE = re.compile(r"^#\s*Estimate:.*$", re.M)


class CatalogError(ValueError):
    """A recipe header whose Plan line cannot be run."""


@dataclass
class PlanLine:
    recipe: str
    gpu: str
    samples: int | None
    model_size: str | None
    tokens_per_sample: int | None


def read_plan_line(path: Path) -> PlanLine | None:
    """The recipe's ``# Plan:`` command, parsed; None when the header has none."""
    text = path.read_text(encoding="utf-8")
    match = _PLAN.search(text)
    if not match:
        if re.search(r"^#\s*Plan:", text, re.M):
            raise CatalogError(f"{path}: the '# Plan:' line must be an `lfkit plan ...` command")
        return None
    words = shlex.split(match.group("cmd"))[2:]
    opts: dict[str, str] = {}
    positional: list[str] = []
    i = 0
    while i < len(words):
        if words[i].startswith("--"):
            if i + 1 >= len(words):
                raise CatalogError(f"{path}: Plan line option {words[i]} has no value")
            opts[words[i]] = words[i + 1]
            i += 2
        else:
            positional.append(words[i])
            i += 1
    if len(positional) != 1 or "--gpu" not in opts:
        raise CatalogError(f"{path}: Plan line must be `lfkit plan RECIPE --gpu NAME[xN] [...]`")
    unknown = set(opts) - {"--gpu", "--samples", "--model-size", "--tokens-per-sample"}
    if unknown:
        raise CatalogError(f"{path}: Plan line has unknown option(s) {', '.join(sorted(unknown))}")
    return PlanLine(
        recipe=positional[0],
        gpu=opts["--gpu"],
        samples=int(opts["--samples"]) if "--samples" in opts else None,
        model_size=opts.get("--model-size"),
        tokens_per_sample=int(opts["--tokens-per-sample"]) if "--tokens-per-sample" in opts else None,
    )


def estimate_line(plan: dict) -> str:
    """The one-line summary a recipe header carries; a blocked plan says why it cannot run."""
    verdict = "fits" if plan["fits"] else "does NOT fit"
    if plan["blocking"]:
        verdict += (" but" if plan["fits"] else ", and") + " cannot run: " + " and ".join(plan["blocking"])
    t = plan["time"]
    line = (
        f"# Estimate:  {plan['peak_memory_gb']:.1f} GiB peak per GPU of "
        f"{plan['usable_memory_gb']:.1f} usable: {verdict}; "
        f"~{t['samples_per_s']:.2f} samples/s at {t['tokens_per_sample']} tokens/sample"
    )
    if plan.get("kl_beta"):
        return line + " (lfkit plan, uncalibrated; kl_beta's extra forward and KL tensors not modelled)"
    return line + " (lfkit plan, uncalibrated)"


def expected_estimate(path: Path) -> tuple[str | None, str]:
    """(current Estimate line, the line lfkit plan gives now) for one recipe.

    A recipe without a Plan line is a :class:`CatalogError`, not a silent skip: its figures would
    otherwise never be checked.
    """
    from lfkit.planning.gpus import parse_gpu_spec
    from lfkit.planning.plan import plan_for_recipe_file

    plan_line = read_plan_line(path)
    text = path.read_text(encoding="utf-8")
    current = _ESTIMATE.search(text)
    if plan_line is None:
        raise CatalogError(
            f"{path}: no '# Plan:' line; every catalog recipe carries one "
            "(# Plan:      lfkit plan RECIPE --gpu NAME[xN] [--samples N]) and its '# Estimate:' line"
        )
    if Path(plan_line.recipe).name != path.name:
        raise CatalogError(f"{path}: Plan line plans {plan_line.recipe}, not this recipe")
    gpu, count = parse_gpu_spec(plan_line.gpu)
    plan = plan_for_recipe_file(
        path,
        gpu,
        count,
        model_size=plan_line.model_size,
        samples=plan_line.samples,
        tokens_per_sample=plan_line.tokens_per_sample,
    )
    return (current.group(0) if current else None), estimate_line(plan)


def write_estimate(path: Path, line: str) -> bool:
    """Put ``line`` in place of the Estimate line (or after the Plan line); True if changed."""
    text = path.read_text(encoding="utf-8")
    if _ESTIMATE.search(text):
        new = _ESTIMATE.sub(lambda _m: line, text, count=1)
    else:
        new = _PLAN.sub(lambda m: m.group(0) + "\n" + line, text, count=1)
    if new == text:
        return False
    with atomic_write(path, "w") as fh:
        fh.write(new)
    return True
