"""Keep each recipe header's ``# Estimate:`` line equal to what ``lfkit plan`` says today.

Every catalog recipe carries a ``# Plan:`` line with the exact ``lfkit plan`` command for its
hardware, and an ``# Estimate:`` line with that command's result (peak memory per GPU in GiB, the
verdict, samples/s when it can run). The Plan line's syntax::

    # Plan:      lfkit plan RECIPE --gpu NAME[xGPUS_PER_NODE] [--nodes N] [--inter-node-gbit G]
    #                       [--samples N] [--model-size SIZE] [--tokens-per-sample T]

(one line; ``--nodes`` for multi-node recipes, ``--inter-node-gbit`` for the network they assume).
Typed by hand such figures go stale the moment the planner or the recipe changes; here they are
computed, rewritten in place (``lfkit recipe estimates --write``) and compared
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


_OPTIONS = ("--gpu", "--nodes", "--inter-node-gbit", "--samples", "--model-size", "--tokens-per-sample")


@dataclass(frozen=True)
class PlanLine:
    """A recipe header's ``# Plan:`` command, parsed."""

    recipe: str
    gpu: str
    nodes: int = 1
    inter_node_gbit: float | None = None
    samples: int | None = None
    model_size: str | None = None
    tokens_per_sample: int | None = None

    def cluster(self):
        from lfkit.planning.gpus import Cluster, parse_gpu_spec

        gpu, count = parse_gpu_spec(self.gpu)
        return Cluster.of(gpu, count, self.nodes, self.inter_node_gbit)


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
    unknown = set(opts) - set(_OPTIONS)
    if unknown:
        raise CatalogError(f"{path}: Plan line has unknown option(s) {', '.join(sorted(unknown))}")
    try:
        return PlanLine(
            recipe=positional[0],
            gpu=opts["--gpu"],
            nodes=int(opts.get("--nodes", 1)),
            inter_node_gbit=float(opts["--inter-node-gbit"]) if "--inter-node-gbit" in opts else None,
            samples=int(opts["--samples"]) if "--samples" in opts else None,
            model_size=opts.get("--model-size"),
            tokens_per_sample=int(opts["--tokens-per-sample"]) if "--tokens-per-sample" in opts else None,
        )
    except ValueError as err:
        raise CatalogError(f"{path}: Plan line: {err}") from None


def estimate_line(plan) -> str:
    """The one-line summary a recipe header carries (a :class:`~lfkit.planning.plan.Plan`).

    A plan that cannot run says why and gives no throughput.
    """
    memory = plan.assessment.memory
    line = (
        f"# Estimate:  {memory.peak_gib:.1f} GiB peak per GPU of {plan.cluster.gpu.memory_gib:g} GiB: "
        f"{plan.verdict}"
    )
    if plan.time is not None:
        t = plan.time
        line += f"; ~{t.samples_per_s:.2f} samples/s ({t.step_s:.1f} s/step)"
        line += f" at {t.tokens_per_sample} tokens/sample"
    if plan.cluster.nodes > 1:
        origin = "assumed" if plan.cluster.inter_node_assumed else "given"
        line += f"; inter-node {plan.cluster.inter_node_gbit:g} Gbit/s per node ({origin})"
    if plan.assessment.host.offload:
        line += f"; host RAM ~{plan.assessment.host.peak_bytes / 2**30:.0f} GiB per node"
    return line + " (lfkit plan)"


def expected_estimate(path: Path) -> tuple[str | None, str]:
    """(current Estimate line, the line lfkit plan gives now) for one recipe.

    A recipe without a Plan line is a :class:`CatalogError`, not a silent skip: its figures would
    otherwise never be checked.
    """
    from lfkit.planning.plan import plan_for_recipe_file

    plan_line = read_plan_line(path)
    text = path.read_text(encoding="utf-8")
    current = _ESTIMATE.search(text)
    if plan_line is None:
        raise CatalogError(
            f"{path}: no '# Plan:' line; every catalog recipe carries one "
            "(# Plan:      lfkit plan RECIPE --gpu NAME[xN] [--nodes N] [--samples N]) "
            "and its '# Estimate:' line"
        )
    if Path(plan_line.recipe).name != path.name:
        raise CatalogError(f"{path}: Plan line plans {plan_line.recipe}, not this recipe")
    plan = plan_for_recipe_file(
        path,
        plan_line.cluster(),
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
