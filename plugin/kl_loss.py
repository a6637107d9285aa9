"""The ``kl_beta`` term: keep a style fine-tune close to the base model's next-token distributions.

The sft loss with ``kl_beta > 0`` is::

    loss = CE + kl_beta * KL(p_ref || p_theta)

averaged over response tokens only (``labels != IGNORE_INDEX``, with the causal shift: the logits at
position t predict the label at t + 1), where ``p_theta`` is the model being trained and ``p_ref`` the
reference model, both over the full vocabulary at every response position of the teacher-forced data.

Why forward KL(p_ref || p_theta) and not the reverse KL(p_theta || p_ref) of RLHF:

* The goal is to keep the base model's fluency while a style is learned. Forward KL is mass-covering:
  it is large wherever the base model puts probability that the fine-tuned model drops, so the base
  model's plausible continuations stay reachable while the data token is boosted. Reverse KL is
  mode-seeking: it only penalises mass the reference lacks, and lets the fine-tuned model collapse
  onto a few of the base model's modes, the loss of variety that reads as lost fluency.
* It is plain distillation from the base model. Per position,
  ``CE + beta * KL(p_ref || p_theta) = (1 + beta) * H(q, p_theta) + const`` with the target
  ``q = (onehot(label) + beta * p_ref) / (1 + beta)``: the model is trained on the data token mixed
  with the base model's own distribution, and the gradient on the logits, ``(1 + beta) * (p_theta - q)``,
  is as bounded and well-behaved as cross-entropy's. ``kl_beta`` is the weight of the base model in
  that mixture: larger values keep the model closer to the base (more fluency, less style).
* RLHF uses the reverse direction because it can only score the policy's own samples; here both
  distributions are known exactly at every position, so that constraint does not apply.

Normalisation: the KL is summed over the response tokens of a micro-batch and divided by the same
token count as LlamaFactory's cross-entropy (``num_items_in_batch``, the response tokens of the whole
gradient-accumulation window, when the model computes its loss with it; the micro-batch's own response
tokens otherwise), and carries the same ``average_tokens_across_devices`` factor. So ``kl_beta`` weighs
a per-token KL against a per-token cross-entropy, under any batch size, accumulation or GPU count.
Evaluation losses stay plain cross-entropy, comparable with runs without ``kl_beta``.

Reference model and its cost:

* LoRA (and OFT): the reference is the same model with its adapters disabled (peft's
  ``disable_adapter``): no second copy of the weights. Cost: one extra forward pass without gradients
  per micro-batch (about a quarter to a third more compute per step).
* freeze / full: a frozen copy is loaded with LlamaFactory's own ``create_ref_model`` from
  ``kl_ref_model`` (or ``model_name_or_path`` when unset) and prepared by ``CustomSeq2SeqTrainer``
  exactly like ASFT's reference (DeepSpeed, FSDP or plain device placement). Cost: one more copy of
  the weights in the compute dtype, 2 bytes per parameter in bf16/fp16 (1.5B: 3.1 GB, 7B: 15 GB,
  14B: 30 GB), per GPU unless ZeRO-3/FSDP shards it, plus the extra forward pass.
* ``kl_ref_model`` with LoRA loads that model as a separate frozen reference (same cost as above).
* Both: float32 [response tokens x vocabulary] tensors at the response positions only: the reference's
  log-probabilities (held through the model's forward pass), the model's log-probabilities and the KL
  terms (held until backward), a few such tensors at the peak, each ``response_tokens * vocab_size * 4``
  bytes (Qwen's 152k vocabulary: 0.6 GB per 1,000 response tokens), on top of the logits the model
  already returns. Prompt and padding positions cost nothing.
"""

from __future__ import annotations

import copy
import functools
import inspect
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from llamafactory.hparams import FinetuningArguments, ModelArguments
    from transformers import Trainer

IGNORE_INDEX = -100  # LlamaFactory's and transformers' label for tokens outside the loss
LOG_KEYS = ("ce_loss", "kl_loss")  # the keys each training log line gains when kl_beta > 0
ADAPTER_TYPES = ("lora", "oft")  # peft adapters: the reference is the model with them disabled

# LlamaFactory's ``run_sft`` does not hand its ModelArguments to the trainer, but the frozen
# reference of freeze/full tuning is loaded from them (``create_ref_model(model_args, ...)``).
# :func:`remember_model_args`, patched around run_sft's ``load_model``, records them here.
_SFT_MODEL_ARGS: ContextVar[ModelArguments | None] = ContextVar("lfkit_sft_model_args", default=None)


def response_token_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of KL(p_ref || p_theta) over the response positions, and their number.

    ``logits`` and ``ref_logits`` are [batch, seq, vocab] and ``labels`` [batch, seq]; position t of the
    logits predicts ``labels[:, t + 1]``, and only positions whose next label is not ``IGNORE_INDEX``
    count. Computed in float32 on the selected positions only. The sum keeps gradients to ``logits``.
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    ref_logp = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    return response_kl_from_ref_logp(logits, ref_logp, labels)


def response_kl_from_ref_logp(
    logits: torch.Tensor, ref_logp: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`response_token_kl` with the reference's log-probabilities already selected ([n, vocab])."""
    mask = labels[:, 1:] != IGNORE_INDEX
    logp = F.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    kl_sum = F.kl_div(logp, ref_logp, reduction="sum", log_target=True)  # sum p_ref * (log p_ref - log p)
    return kl_sum, mask.sum()


def check_kl_args(finetuning_args: FinetuningArguments, model=None) -> None:
    """Refuse settings the KL term cannot honour, before anything is loaded for it.

    Time-series (ChatTS) models are refused: their forward replaces each ``<ts><ts/>`` pair by
    one position per patch, so their logits are longer than the labels and the response-token
    positions of the logits are not those of the labels. Computing them would mean re-doing the
    checkpoint's own splicing outside it; until that is done, a clear error beats a wrong KL.
    """
    from lfkit.plugin.timeseries.spec import is_timeseries_model

    if model is not None and is_timeseries_model(model):
        raise ValueError(
            "kl_beta is not supported for time-series (ChatTS) models: their forward inserts patch "
            "positions, so the logits do not line up with the labels' response tokens. Set kl_beta: 0."
        )
    others = [
        k for k in ("use_dft_loss", "use_eaft_loss", "use_asft_loss") if getattr(finetuning_args, k, False)
    ]
    if others:
        raise ValueError(
            f"kl_beta adds a KL term to LlamaFactory's plain cross-entropy and cannot be combined with "
            f"{', '.join(others)} (ASFT already carries its own KL to a reference). Set kl_beta: 0 or drop "
            f"{', '.join(others)}."
        )


def remember_model_args(load_model):
    """Wrap run_sft's ``load_model`` so the trainer can load a reference from the same ModelArguments."""
    if getattr(load_model, "__lfkit_remembers_model_args__", False):
        return load_model
    signature = inspect.signature(load_model)

    @functools.wraps(load_model)
    def load_model_remembering_args(*args, **kwargs):
        _SFT_MODEL_ARGS.set(signature.bind(*args, **kwargs).arguments["model_args"])
        return load_model(*args, **kwargs)

    load_model_remembering_args.__lfkit_remembers_model_args__ = True
    return load_model_remembering_args


def load_reference_model(
    finetuning_args: FinetuningArguments, model_args: ModelArguments | None
) -> torch.nn.Module | None:
    """The frozen reference for ``kl_beta``, loaded by LlamaFactory's ``create_ref_model``.

    None for LoRA/OFT without ``kl_ref_model``: the trainer then disables the adapters instead. The
    returned model is handed to ``CustomSeq2SeqTrainer`` as its ``ref_model``, which prepares it for
    DeepSpeed/FSDP or moves it to the device, as it does for ASFT's reference.
    """
    if finetuning_args.finetuning_type in ADAPTER_TYPES and finetuning_args.kl_ref_model is None:
        return None
    model_args = model_args if model_args is not None else _SFT_MODEL_ARGS.get()
    if model_args is None:
        raise RuntimeError(
            "kl_beta with freeze/full tuning (or kl_ref_model) needs the run's ModelArguments to load the "
            "reference model; the lfkit plugin records them in run_sft's load_model. Launch with "
            "`llamafactory-cli train` or `lfkit train` with the plugin active (LFKIT_DISABLE_PLUGIN unset)."
        )
    from llamafactory.train.trainer_utils import create_ref_model

    # create_ref_model reads ref_model, ref_model_adapters and ref_model_quantization_bit; set them on a
    # copy so the run's own arguments stay as the user wrote them.
    ref_args = copy.copy(finetuning_args)
    ref_args.ref_model = finetuning_args.kl_ref_model
    ref_args.ref_model_adapters = None
    ref_args.ref_model_quantization_bit = None
    return create_ref_model(model_args, ref_args)


class KLRegulariser:
    """Adds ``kl_beta * KL(p_ref || p_theta)`` to the trainer's cross-entropy and logs both parts.

    ``ce_loss`` and ``kl_loss`` are averaged over each logging window exactly like the trainer's own
    ``loss`` (same scaling, same cross-process mean), with ``kl_loss`` unweighted: the logged
    ``loss`` equals ``ce_loss + kl_beta * kl_loss``.
    """

    def __init__(self, trainer: Trainer, beta: float) -> None:
        self.trainer = trainer
        self.beta = beta
        device = trainer.args.device
        self._ce_window = torch.zeros((), device=device)
        self._kl_window = torch.zeros((), device=device)
        self._window_start_step: int | None = None  # global_step when the window's first micro-batch ran

    def compute_loss(
        self, model, inputs: dict[str, Any], ce_loss_fn, return_outputs=False, num_items_in_batch=None
    ):
        """The regularised loss (and the model outputs); ``ce_loss_fn`` is the parent's compute_loss."""
        trainer = self.trainer
        labels = inputs["labels"]
        mask = labels[:, 1:] != IGNORE_INDEX
        with torch.no_grad():
            ref_logits = self._reference_logits(model, inputs)
            ref_logp = F.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
            del ref_logits

        ce_loss, outputs = ce_loss_fn(
            model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch
        )
        logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
        if logits is None:
            raise RuntimeError(
                "kl_beta needs the model's logits, but the model returned none (a fused loss kernel such as "
                "enable_liger_kernel computes the loss without them). Disable it or set kl_beta: 0."
            )
        kl_sum, n_tokens = response_kl_from_ref_logp(logits, ref_logp, labels)

        # Scale the KL exactly as transformers' Trainer scales the cross-entropy (its compute_loss and
        # training_step, mirrored here): the model divides its summed CE by num_items_in_batch (the
        # response tokens of the whole accumulation window) when it receives it, else CE is the
        # micro-batch mean; average_tokens_across_devices multiplies by the process count; and
        # training_step divides the mean by the accumulation steps (applied to the returned sum, so
        # here only to the logged parts).
        has_items = num_items_in_batch is not None
        ce_per_window = trainer.model_accepts_loss_kwargs and has_items
        ce_per_window = ce_per_window and trainer.label_smoother is None and trainer.compute_loss_func is None
        kl = kl_sum / num_items_in_batch if ce_per_window else kl_sum / n_tokens.clamp(min=1)
        loss_kwargs = trainer.model_accepts_loss_kwargs or trainer.compute_loss_func is not None
        if trainer.args.average_tokens_across_devices and loss_kwargs and has_items:
            kl = kl * (trainer.accelerator.num_processes if trainer.args.n_gpu <= 1 else trainer.args.n_gpu)
        divided_later = (
            not trainer.model_accepts_loss_kwargs or not has_items
        ) and trainer.compute_loss_func is None

        if self._window_start_step is None:
            self._window_start_step = trainer.state.global_step
        scale = 1.0 / trainer.current_gradient_accumulation_steps if divided_later else 1.0
        self._ce_window += ce_loss.detach().float().mean() * scale  # mean: DataParallel returns one per GPU
        self._kl_window += kl.detach().float() * scale
        loss = ce_loss + self.beta * kl
        return (loss, outputs) if return_outputs else loss

    def _reference_logits(self, model, inputs: dict[str, Any]) -> torch.Tensor:
        """Reference logits for the batch: the frozen ref model, or this model with adapters disabled."""
        trainer = self.trainer
        ref_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if trainer.ref_model is not None:
            return trainer.ref_model(**ref_inputs).logits
        peft_model = trainer.accelerator.unwrap_model(model)
        if not hasattr(peft_model, "disable_adapter"):
            raise RuntimeError(
                "kl_beta with LoRA needs a peft model to disable its adapters, "
                f"got {type(peft_model).__name__}."
            )
        with peft_model.disable_adapter():
            return model(**ref_inputs).logits

    def window_logs(self) -> dict[str, float]:
        """``ce_loss`` and ``kl_loss`` averaged over the steps since the last call; resets the window."""
        from transformers.trainer_pt_utils import nested_gather

        trainer = self.trainer
        if self._window_start_step is None:
            return {}
        steps = trainer.state.global_step - self._window_start_step
        if steps <= 0:
            return {}
        window = torch.stack([self._ce_window, self._kl_window])
        ce, kl = (nested_gather(window[None], trainer.args.parallel_mode).mean(dim=0) / steps).tolist()
        self._ce_window.zero_()
        self._kl_window.zero_()
        self._window_start_step = None
        return {"ce_loss": ce, "kl_loss": kl}
