"""Which LlamaFactory stage a run is, and what its loss and its own metrics mean.

Every stage logs a ``loss``, but they are different quantities: SFT and PT log the
cross-entropy per token, DPO ``-log sigmoid(beta * reward margin)``, ORPO the SFT NLL plus
beta times an odds-ratio loss, KTO its own utility loss, PPO the total policy and value loss,
and a reward model (RM) a pairwise ranking loss. So each run is labelled with its stage, its
loss axis says what the loss is, its plots show the stage's own metrics (the ones
LlamaFactory's ``plot_loss`` draws and more: ``rewards/accuracies`` and margins for DPO,
``reward`` for PPO, eval accuracy for RM), and runs of different stages are never drawn on
one loss axis (:attr:`Stage.key` groups comparisons).

The stage is read from, in order: the lfkit run record (``stage`` and ``pref_loss``), the
``training_args.yaml`` LlamaBoard saves, and the log keys each stage's trainer writes
(LlamaFactory's ``train/*/trainer.py``); :attr:`Stage.source` says which.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from lfkit.reporting.runs import RUN_RECORD_FILE, TRAINING_ARGS_FILE, VALUE_HEAD_FILES, Run


@dataclass(frozen=True)
class MetricPanel:
    """A plot panel of one stage metric family: training values of ``keys`` and their eval counterparts."""

    title: str
    keys: tuple[str, ...]
    ylabel: str


@dataclass(frozen=True)
class Stage:
    """A run's stage: its name, what its loss is, which metrics to show, and where that was read."""

    key: str
    """Comparison group: runs with different keys are never overlaid on one loss axis."""
    name: str
    loss_label: str
    panels: tuple[MetricPanel, ...] = ()
    headline: str | None = None
    """The metric that sums the stage up in the runs table (``rewards/accuracies`` for DPO)."""
    source: str | None = None

    @property
    def is_language_modelling(self) -> bool:
        """SFT/PT: the loss is a per-token cross-entropy, so exp(loss) is a perplexity."""
        return self.key in ("sft", "pt", "sft/pt")


CE = "cross-entropy, nats/token"
ACCURACY = MetricPanel("reward accuracy (chosen scored above rejected)", ("rewards/accuracies",), "fraction")
REWARDS = MetricPanel("implicit rewards", ("rewards/chosen", "rewards/rejected", "rewards/margins"), "reward")

SFT = Stage("sft", "SFT", CE)
PT = Stage("pt", "PT (pre-training)", CE)
LM = Stage("sft/pt", "SFT or PT (stage not recorded)", CE)
PREFERENCE_LOSSES = {
    "sigmoid": Stage(
        "dpo",
        "DPO",
        "DPO loss: -log sigmoid(beta * reward margin)",
        (ACCURACY, REWARDS),
        "rewards/accuracies",
    ),
    "hinge": Stage("dpo-hinge", "DPO (hinge loss)", "hinge loss", (ACCURACY, REWARDS), "rewards/accuracies"),
    "ipo": Stage("ipo", "IPO", "IPO loss (squared)", (ACCURACY, REWARDS), "rewards/accuracies"),
    "kto_pair": Stage(
        "dpo-kto_pair", "DPO (kto_pair loss)", "kto_pair loss", (ACCURACY, REWARDS), "rewards/accuracies"
    ),
    "simpo": Stage(
        "simpo",
        "SimPO",
        "SimPO loss (length-normalised, no reference)",
        (ACCURACY, REWARDS),
        "rewards/accuracies",
    ),
    "orpo": Stage(
        "orpo",
        "ORPO",
        "ORPO loss: SFT NLL + beta * odds-ratio loss",
        (ACCURACY, REWARDS, MetricPanel("ORPO loss terms", ("sft_loss", "odds_ratio_loss"), "loss")),
        "rewards/accuracies",
    ),
}
DPO_UNKNOWN_LOSS = Stage(
    "dpo-family",
    "DPO-family (pref_loss not recorded: DPO, IPO, SimPO or hinge)",
    "preference loss (type not recorded)",
    (ACCURACY, REWARDS),
    "rewards/accuracies",
)
KTO = Stage(
    "kto",
    "KTO",
    "KTO loss",
    (REWARDS, MetricPanel("KL estimate (reference point)", ("kl",), "KL")),
    "rewards/margins",
)
PPO = Stage(
    "ppo",
    "PPO",
    "PPO loss (policy + value, total)",
    (MetricPanel("reward", ("reward",), "reward"),),
    "reward",
)
RM = Stage(
    "rm",
    "RM (reward model)",
    "pairwise loss: -log sigmoid(r_chosen - r_rejected)",
    (MetricPanel("pairwise accuracy (eval)", ("accuracy",), "fraction"),),
    "accuracy",
)
UNKNOWN = Stage("unknown", "unknown stage", "loss")


def stage_of(run: Run) -> Stage:
    """The run's stage (see the module docstring for the order of sources)."""
    keys = set(run.train_keys()) | {k for p in run.log for k in p.values}
    if run.record is not None and run.record.stage:
        pref = run.record.argument("pref_loss")
        return replace(_named(run.record.stage, pref, keys), source=RUN_RECORD_FILE)
    recipe = run.training_args or {}
    if isinstance(recipe.get("stage"), str):
        pref = recipe.get("pref_loss", "sigmoid")  # LlamaFactory's default
        return replace(_named(recipe["stage"], pref, keys), source=TRAINING_ARGS_FILE)
    return _from_log_keys(run, keys)


def _named(stage: str, pref_loss: object, keys: set[str]) -> Stage:
    if stage == "dpo":
        if isinstance(pref_loss, str) and pref_loss in PREFERENCE_LOSSES:
            return PREFERENCE_LOSSES[pref_loss]
        return PREFERENCE_LOSSES["orpo"] if "odds_ratio_loss" in keys else DPO_UNKNOWN_LOSS
    return {"sft": SFT, "pt": PT, "kto": KTO, "ppo": PPO, "rm": RM}.get(stage, Stage(stage, stage, "loss"))


def _from_log_keys(run: Run, keys: set[str]) -> Stage:
    """The stage as the trainers' log keys (and the reward model's value head file) tell it."""
    if "odds_ratio_loss" in keys:
        return replace(PREFERENCE_LOSSES["orpo"], source="log keys (odds_ratio_loss)")
    if "rewards/accuracies" in keys:
        return replace(DPO_UNKNOWN_LOSS, source="log keys (rewards/accuracies)")
    if "kl" in keys and "rewards/chosen" in keys:
        return replace(KTO, source="log keys (kl, rewards/chosen)")
    if "reward" in keys:
        return replace(PPO, source="log keys (reward)")
    head = next((f for f in VALUE_HEAD_FILES if f in run.files), None)
    if head is not None:
        return replace(RM, source=f"{head} (the value head of a reward model)")
    if "loss" in keys:
        return replace(LM, source="log keys (loss only)")
    return UNKNOWN


def comparison_keys(stages: list[Stage]) -> list[str]:
    """The comparison group of each stage: its key, except that a cross-entropy run of unrecorded
    stage (SFT or PT) joins the SFT runs, or the PT runs, when exactly one of the two is present."""
    present = {s.key for s in stages}
    lm = [k for k in ("sft", "pt") if k in present]
    return [lm[0] if s.key == LM.key and len(lm) == 1 else s.key for s in stages]


def loss_label(stage: Stage, terms: list[str]) -> str:
    """What the logged ``loss`` is, given the extra loss terms the run logged beside it.

    lfkit's ``kl_beta`` logs ``ce_loss`` and ``kl_loss`` and its loss is ``ce_loss + kl_beta * kl_loss``;
    other terms a stage's panels show (ORPO's) are already part of its loss label.
    """
    own = {k for panel in stage.panels for k in panel.keys}
    extra = [t for t in terms if t not in own]
    if extra == ["ce_loss", "kl_loss"]:
        return "ce_loss + kl_beta * kl_loss (nats/token)"
    if extra:
        return f"total loss (with {', '.join(extra)})"
    return stage.loss_label
