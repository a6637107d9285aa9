"""``lfkit plan``: one coherent recommendation for a recipe on given GPUs, as a typed value.

A :class:`Plan` holds the memory estimate (per GPU and host RAM per node), what blocks the recipe
on this hardware, its time (only when it can run), the suggestions worth making, and the exit
status the command returns (:class:`Status`). ``Plan.to_json()`` is what ``--json`` prints, the
text output (:mod:`lfkit.planning.render`) and the recipe headers' Estimate lines
(:mod:`lfkit.planning.catalog`) read the same value.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from enum import IntEnum
from pathlib import Path
from typing import Any

from lfkit.planning.assess import TIGHT_HEADROOM, Assessment, assess
from lfkit.planning.gpus import Cluster
from lfkit.planning.memory import steps_per_epoch
from lfkit.planning.models import ModelShape, billions, resolve_model
from lfkit.planning.suggestions import Suggestion, suggest
from lfkit.planning.throughput import StepTime, TimeConstants, load_constants
from lfkit.planning.training_setup import TrainingSetup
from lfkit.planning.units import GB, GIB


class Status(IntEnum):
    """``lfkit plan``'s exit status."""

    RUNS = 0  # fits in GPU memory (and in --host-ram-gib when given), nothing blocks it
    DOES_NOT_FIT = 1  # over the GPU memory, or over --host-ram-gib
    # 2 is a usage error (unknown GPU, unreadable recipe), as for every lfkit command
    CANNOT_RUN = 3  # a setting fails on this hardware whatever the memory (bf16 on Turing, ...)


@dataclass(frozen=True)
class Schedule:
    """Steps and wall time for a number of samples (or the recipe's max_steps)."""

    steps_per_epoch: int | None
    total_steps: int
    seconds: float

    def to_json(self) -> dict:
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "total_steps": self.total_steps,
            "seconds": round(self.seconds, 1),
            "hours": round(self.seconds / 3600, 2),
        }


@dataclass(frozen=True)
class Plan:
    recipe: str | None
    shape: ModelShape
    cluster: Cluster
    assessment: Assessment
    status: Status
    suggestions: tuple[Suggestion, ...]
    notes: tuple[str, ...]
    constants: TimeConstants
    samples: int | None
    schedule: Schedule | None

    @property
    def setup(self) -> TrainingSetup:
        return self.assessment.setup

    @property
    def time(self) -> StepTime | None:
        """The throughput estimate; None when the setup cannot run (no figure for a failing run)."""
        return self.assessment.time if self.status is Status.RUNS else None

    @property
    def verdict(self) -> str:
        a = self.assessment
        if self.status is Status.CANNOT_RUN:
            return "cannot run: " + " and ".join(b.message for b in a.blockers)
        if not a.fits:
            return "does NOT fit"
        if not a.host_fits:
            return "does NOT fit the host RAM"
        return "fits (tight)" if a.headroom < TIGHT_HEADROOM else "fits"

    def to_json(self) -> dict:
        a, setup, ds = self.assessment, self.setup, self.setup.deepspeed
        return {
            "recipe": self.recipe,
            "status": int(self.status),
            "status_name": self.status.name.lower(),
            "verdict": self.verdict,
            "fits": a.fits,
            "runs": self.status is Status.RUNS,
            "model": {
                "name": self.shape.name,
                "source": self.shape.source,
                "total_params": self.shape.total_params,
                "total_params_b": billions(self.shape.total_params),
                "trainable_params": a.memory.trainable_params,
                "notes": list(self.shape.notes),
            },
            "hardware": self.cluster.to_json(),
            "setup": {
                "method": setup.describe_method(),
                "precision": setup.precision,
                "gradient_checkpointing": setup.gradient_checkpointing,
                "liger_kernel": setup.liger,
                "deepspeed": {
                    "stage": ds.stage,
                    "offload_optimizer": ds.offload_optimizer,
                    "offload_param": ds.offload_param,
                    "config": ds.path,
                },
                "micro_batch_tokens": setup.batch_size * setup.cutoff_len,
                "kl_beta": setup.kl_beta,
            },
            "memory": {
                **a.memory.to_json(),
                "device_memory_gib": self.cluster.gpu.memory_gib,
                "device_memory_gb": round(self.cluster.gpu.memory_gib * GIB / GB, 2),
                "headroom_gib": round(self.cluster.gpu.memory_gib - a.memory.peak_gib, 3),
            },
            "host_memory_per_node": a.host.to_json() | {"limit_gib": a.host_limit_gib},
            "blocking": [{"problem": b.message, "fix": dict(b.fix)} for b in a.blockers],
            "time": None
            if self.time is None
            else self.time.to_json()
            | {"schedule": None if self.schedule is None else self.schedule.to_json()},
            "suggestions": [s.to_json() for s in self.suggestions],
            "notes": list(self.notes),
            "calibration": self.constants.to_json(),
        }


def make_plan(
    recipe: dict[str, Any],
    cluster: Cluster,
    *,
    recipe_path: str | None = None,
    model_size: str | None = None,
    samples: int | None = None,
    tokens_per_sample: int | None = None,
    host_ram_gib: float | None = None,
    constants: TimeConstants | None = None,
) -> Plan:
    """The plan for ``recipe`` (a mapping as LlamaFactory reads it) on ``cluster``."""
    constants = constants or load_constants()
    base_dir = Path(recipe_path).resolve().parent if recipe_path else None
    setup = TrainingSetup.from_recipe(recipe, base_dir=base_dir)
    shape = resolve_model(recipe.get("model_name_or_path"), model_size)
    a = assess(
        shape, setup, cluster, constants, tokens_per_sample=tokens_per_sample, host_limit_gib=host_ram_gib
    )
    if a.blockers:
        status = Status.CANNOT_RUN
    elif not a.fits or not a.host_fits:
        status = Status.DOES_NOT_FIT
    else:
        status = Status.RUNS
    notes = list(a.memory.notes) + list(a.notes)
    if a.host.offload:
        notes.append(
            f"CPU offload: about {a.host.peak_bytes / GIB:.0f} GiB of host RAM per node "
            "(pass --host-ram-gib to check it against yours)"
        )
    if tokens_per_sample is None:
        notes.append(
            f"time at cutoff_len {setup.cutoff_len} tokens per sample (padded batches: an upper bound; "
            "--tokens-per-sample sets the mean)"
        )
    schedule = None
    if status is Status.RUNS:
        world = cluster.world_size
        if samples:
            per_epoch = steps_per_epoch(samples, world, setup.batch_size, setup.grad_accum)
            steps = setup.max_steps if setup.max_steps > 0 else int(-(-setup.epochs * per_epoch // 1))
            schedule = Schedule(per_epoch, steps, steps * a.time.step_s)
        elif setup.max_steps > 0:
            schedule = Schedule(None, setup.max_steps, setup.max_steps * a.time.step_s)
    suggestions = suggest(
        recipe,
        a,
        shape,
        cluster,
        constants,
        base_dir=base_dir,
        tokens_per_sample=tokens_per_sample,
        host_limit_gib=host_ram_gib,
    )
    return Plan(
        recipe_path, shape, cluster, a, status, suggestions, tuple(notes), constants, samples, schedule
    )


def plan_for_recipe_file(path: str | Path, cluster: Cluster, **kwargs: Any) -> Plan:
    """Load a YAML recipe (as LlamaFactory loads it) and plan it."""
    from lfkit.planning.recipe_yaml import load_values

    return make_plan(copy.deepcopy(load_values(path)), cluster, recipe_path=str(path), **kwargs)
