"""One recipe setup on one cluster: memory, host RAM, what blocks it, and (when it can run) time.

:func:`assess` is the single place a setup is judged; the plan and every suggestion go through it,
so a suggestion is judged exactly like the recipe it improves.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lfkit.planning.gpus import Cluster
from lfkit.planning.host_memory import HostMemoryEstimate, estimate_host_memory
from lfkit.planning.memory import MemoryEstimate, estimate_memory
from lfkit.planning.models import ModelShape
from lfkit.planning.throughput import StepTime, TimeConstants, estimate_step_time
from lfkit.planning.training_setup import TrainingSetup
from lfkit.planning.units import GIB

TIGHT_HEADROOM = 0.05  # below this free fraction of the card a plan says "tight"

# Model types LlamaFactory 0.9.5 applies Liger kernels to (llamafactory/model/model_utils/liger_kernel.py),
# restricted to the families this planner knows.
LIGER_MODEL_TYPES = ("qwen2", "qwen3", "qwen3_moe")


@dataclass(frozen=True)
class Blocker:
    """A setting that cannot work on this hardware or with this model, whatever the memory."""

    message: str
    fix: tuple[tuple[str, object], ...] = ()  # recipe keys that lift it (empty: none known)


@dataclass(frozen=True)
class Assessment:
    setup: TrainingSetup
    memory: MemoryEstimate
    host: HostMemoryEstimate
    blockers: tuple[Blocker, ...]
    time: StepTime
    device_memory_gib: float
    host_limit_gib: float | None
    notes: tuple[str, ...] = ()

    @property
    def fits(self) -> bool:
        return self.memory.peak_gib <= self.device_memory_gib

    @property
    def host_fits(self) -> bool:
        return self.host_limit_gib is None or self.host.peak_bytes / GIB <= self.host_limit_gib

    @property
    def runs(self) -> bool:
        return self.fits and self.host_fits and not self.blockers

    @property
    def headroom(self) -> float:
        """Free fraction of the card at the estimated peak (negative: over)."""
        return 1 - self.memory.peak_gib / self.device_memory_gib


def blockers(shape: ModelShape, setup: TrainingSetup, cluster: Cluster) -> tuple[Blocker, ...]:
    """Settings that fail at start-up on this cluster (documented in ``lfkit plan --help``)."""
    gpu = cluster.gpu
    out = []
    if not gpu.bf16 and (setup.bf16 or setup.pure_bf16):
        key = "pure_bf16" if setup.pure_bf16 else "bf16"
        out.append(
            Blocker(f"{key}: true but {gpu.name} ({gpu.arch}) has no bf16", ((key, False), ("fp16", True)))
        )
    if gpu.arch == "turing" and setup.flash_attn == "fa2":
        out.append(
            Blocker(f"flash_attn: fa2 needs Ampere or newer; {gpu.name} is Turing", (("flash_attn", "sdpa"),))
        )
    ds = setup.deepspeed
    if ds.stage >= 3 and setup.pure_bf16:
        out.append(
            Blocker(
                "pure_bf16 is incompatible with DeepSpeed ZeRO-3 (LlamaFactory refuses it)",
                (("pure_bf16", False), ("bf16", True)),
            )
        )
    if ds.offload_param and ds.stage < 3:
        out.append(Blocker(f"{ds.path}: offload_param needs ZeRO stage 3"))
    if ds.train_batch_size is not None:
        per_step = setup.batch_size * setup.grad_accum * cluster.world_size
        if per_step != ds.train_batch_size:
            fix: tuple = ()
            per_accum = setup.batch_size * cluster.world_size
            if ds.train_batch_size % per_accum == 0:
                fix = (("gradient_accumulation_steps", ds.train_batch_size // per_accum),)
            out.append(
                Blocker(
                    f"{ds.path}: train_batch_size {ds.train_batch_size} != per_device_train_batch_size "
                    f"{setup.batch_size} x gradient_accumulation_steps {setup.grad_accum} x "
                    f"{cluster.world_size} GPUs = {per_step} (DeepSpeed refuses to start)",
                    fix,
                )
            )
    if setup.kl_beta > 0 and setup.liger:
        out.append(
            Blocker(
                "kl_beta needs the model's logits; enable_liger_kernel's fused loss never makes them "
                "(the lfkit plugin refuses it)",
                (("enable_liger_kernel", False),),
            )
        )
    if setup.kl_beta > 0 and shape.ts_encoder_params:
        out.append(
            Blocker(
                "kl_beta is refused for time-series (ChatTS) models: their logits include patch positions",
                (("kl_beta", 0),),
            )
        )
    return tuple(out)


def liger_applies(shape: ModelShape) -> bool:
    """Whether LlamaFactory patches this model with Liger kernels (else it warns and runs without)."""
    return shape.model_type in LIGER_MODEL_TYPES and not shape.ts_encoder_params


def assess(
    shape: ModelShape,
    setup: TrainingSetup,
    cluster: Cluster,
    constants: TimeConstants,
    *,
    tokens_per_sample: int | None = None,
    host_limit_gib: float | None = None,
) -> Assessment:
    notes = []
    if setup.liger and not liger_applies(shape):
        setup = replace(setup, liger=False)
        notes.append(
            f"enable_liger_kernel has no effect on {shape.name}: LlamaFactory has no Liger kernels for it "
            "and trains without them"
        )
    memory = estimate_memory(shape, setup, cluster.world_size)
    host = estimate_host_memory(shape, setup, cluster.gpus_per_node, cluster.nodes)
    time = estimate_step_time(shape, setup, cluster, memory.trainable_params, constants, tokens_per_sample)
    return Assessment(
        setup,
        memory,
        host,
        blockers(shape, setup, cluster),
        time,
        cluster.gpu.memory_gib,
        host_limit_gib,
        tuple(notes),
    )
