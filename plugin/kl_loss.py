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
  with the base model's own distribution, and the gradient on the logits,
  ``(p_theta - onehot) + beta * (p_theta - p_ref)``, is as bounded and well-behaved as cross-entropy's.
  ``kl_beta`` is the weight of the base model in that mixture: larger values keep the model closer to
  the base (more fluency, less style).
* RLHF uses the reverse direction because it can only score the policy's own samples; here both
  distributions are known exactly at every position, so that constraint does not apply.

Normalisation: CE and KL are summed over the response tokens of a micro-batch and divided by the
token count LlamaFactory's cross-entropy uses (``num_items_in_batch``, the response tokens of the
whole gradient-accumulation window, when the model computes its loss with it; the micro-batch's own
response tokens otherwise), and carry the same ``average_tokens_across_devices`` factor. So
``kl_beta`` weighs a per-token KL against a per-token cross-entropy, under any batch size,
accumulation or GPU count. Evaluation losses stay LlamaFactory's plain cross-entropy, comparable with
runs without ``kl_beta``.

Memory: the loss is computed by :class:`_ResponseLoss`, chunked over response tokens, straight from
the logits the model returns anyway (called without labels, so the model skips its own
cross-entropy and its float32 copy of the logits), and the reference's logits exist only for one
chunk at a time (:mod:`lfkit.plugin.kl_reference` keeps the reference's hidden states at the
response positions, ``[response tokens x hidden]``, and applies its output layer per chunk). The
chunk's gradient, ``(p_theta - onehot) + beta * (p_theta - p_ref)``, is written into one
logits-shaped gradient buffer (the one the cross-entropy's backward would allocate anyway); nothing
else of size ``tokens x vocabulary`` is kept. The extra memory of the term is a few float32
``[chunk x vocabulary]`` tensors (:data:`CHUNK_ELEMENTS`), whatever the sequence length.
Where the reference comes from and what it costs is in :mod:`lfkit.plugin.kl_reference`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from lfkit.plugin.errors import ConfigError

if TYPE_CHECKING:
    from lfkit.plugin.kl_reference import Reference
    from llamafactory.hparams import FinetuningArguments
    from transformers import Trainer, TrainingArguments

IGNORE_INDEX = -100  # LlamaFactory's and transformers' label for tokens outside the loss
LOG_KEYS = ("ce_loss", "kl_loss")  # the keys each training log line gains when kl_beta > 0
# Elements of one float32 [chunk x vocabulary] temporary (16 MiB): 27 response tokens per chunk for
# Qwen's 152k vocabulary, 128 for a 32k one. A few such temporaries are alive at a time.
CHUNK_ELEMENTS = 1 << 22


@dataclass(frozen=True)
class ResponseRows:
    """The logits rows that predict response tokens, and those tokens.

    ``rows`` index the ``[batch * seq]`` rows of the logits (position t of sample b is row
    ``b * seq + t``), ``targets`` are the labels those positions predict (``labels[b, t + 1]``).
    """

    rows: torch.Tensor
    targets: torch.Tensor

    @classmethod
    def of(cls, labels: torch.Tensor) -> ResponseRows:
        mask = labels[:, 1:] != IGNORE_INDEX
        batch, time = mask.nonzero(as_tuple=True)
        return cls(rows=batch * labels.shape[1] + time, targets=labels[batch, time + 1])

    def __len__(self) -> int:
        return int(self.rows.numel())


@dataclass(frozen=True)
class LossSums:
    """``objective = ce_weight * ce_sum + kl_weight * kl_sum`` (differentiable) and its parts (detached)."""

    objective: torch.Tensor
    ce_sum: torch.Tensor
    kl_sum: torch.Tensor


def _spans(rows: torch.Tensor, chunk: int) -> list[tuple[int, int, int]]:
    """``(first row, position in rows, length)`` of contiguous runs of ``rows``, cut to at most ``chunk``.

    Response tokens are contiguous within each turn, so the chunks are mostly plain slices of the
    logits (views, not copies).
    """
    spans, values = [], rows.tolist()
    pos = 0
    while pos < len(values):
        end = pos + 1
        while end < len(values) and end - pos < chunk and values[end] == values[end - 1] + 1:
            end += 1
        spans.append((values[pos], pos, end - pos))
        pos = end
    return spans


def _gaps(spans: list[tuple[int, int, int]], n_rows: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of the rows of ``[0, n_rows)`` that no span covers (spans are in row order)."""
    gaps, end = [], 0
    for first, _, length in spans:
        if first > end:
            gaps.append((end, first))
        end = first + length
    if end < n_rows:
        gaps.append((end, n_rows))
    return gaps


class _ResponseLoss(torch.autograd.Function):
    """Summed cross-entropy and KL(p_ref || p_theta) over response rows, chunked over tokens.

    Each chunk's float32 log-probabilities live only while that chunk is processed. The gradient
    of the weighted objective with respect to the logits, ``ce_weight * (p - onehot) +
    kl_weight * (p - p_ref)`` per row, is computed in the same pass and stored, divided by
    ``ce_weight + kl_weight``, in one logits-shaped buffer (zero outside the response rows);
    backward only scales it by the incoming gradient, so the reference is never needed again.
    """

    @staticmethod
    def forward(ctx, logits, rows, targets, ref_hidden, ref_logits, ce_weight, kl_weight, chunk):
        vocab = logits.shape[-1]
        flat = logits.reshape(-1, vocab)
        total = ce_weight + kl_weight
        spans = _spans(rows, chunk)
        grad = torch.empty_like(flat) if ctx.needs_input_grad[0] and total else None
        if grad is not None:  # zero only the rows outside the response: the others are written below
            for start, stop in _gaps(spans, flat.shape[0]):
                grad[start:stop].zero_()
        ce_sum = torch.zeros((), dtype=torch.float32, device=logits.device)
        kl_sum = torch.zeros((), dtype=torch.float32, device=logits.device)
        for first, pos, length in spans:
            tgt = targets[pos : pos + length, None]
            logp = torch.log_softmax(flat[first : first + length].float(), dim=-1)
            logq = torch.log_softmax(ref_logits(ref_hidden[pos : pos + length]).float(), dim=-1)
            q = logq.exp()
            # sum p_ref * (log p_ref - log p_theta) as two dot products: no [chunk x vocab] temporary
            kl_sum += torch.dot(q.view(-1), logq.view(-1)) - torch.dot(q.view(-1), logp.view(-1))
            ce_sum -= logp.gather(1, tgt).sum()
            if grad is not None:
                g = logp.exp_().sub_(q, alpha=kl_weight / total)  # (p - onehot) + beta (p - q), / total
                if ce_weight:
                    g.scatter_add_(1, tgt, torch.full(tgt.shape, -ce_weight / total, device=g.device))
                grad[first : first + length] = g
            del logp, logq, q
        ctx.grad, ctx.total, ctx.spans = grad, total, spans
        ctx.shape = logits.shape
        objective = ce_weight * ce_sum + kl_weight * kl_sum
        ctx.mark_non_differentiable(ce_sum, kl_sum)
        return objective, ce_sum, kl_sum

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_objective, _grad_ce, _grad_kl):
        grad, ctx.grad = ctx.grad, None  # used once: free it with the graph
        if grad is not None:
            scale = (grad_objective * ctx.total).to(grad.dtype)
            for first, _, length in ctx.spans:  # the other rows are zero
                grad[first : first + length].mul_(scale)
            grad = grad.view(ctx.shape)
        return grad, None, None, None, None, None, None, None


def response_loss(
    logits: torch.Tensor,
    rows: ResponseRows,
    ref_hidden: torch.Tensor,
    ref_logits: Callable[[torch.Tensor], torch.Tensor],
    *,
    ce_weight: float,
    kl_weight: float,
    chunk: int | None = None,
) -> LossSums:
    """Cross-entropy and KL(p_ref || p_theta) summed over the response rows of ``logits`` [batch, seq, vocab].

    ``ref_hidden`` holds one row per response row (``[len(rows), ...]``) and ``ref_logits`` maps a
    slice of it to the reference's logits there: the reference's output layer on its hidden states,
    or the identity on precomputed logits. Only ``objective`` carries gradients (to ``logits``).
    """
    if chunk is None:
        chunk = max(1, CHUNK_ELEMENTS // logits.shape[-1])
    objective, ce_sum, kl_sum = _ResponseLoss.apply(
        logits, rows.rows, rows.targets, ref_hidden, ref_logits, float(ce_weight), float(kl_weight), chunk
    )
    return LossSums(objective, ce_sum, kl_sum)


def response_token_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, labels: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of KL(p_ref || p_theta) over the response positions, and their number.

    ``logits`` and ``ref_logits`` are [batch, seq, vocab] and ``labels`` [batch, seq]; position t of the
    logits predicts ``labels[:, t + 1]``, and only positions whose next label is not ``IGNORE_INDEX``
    count. Computed in float32, chunked over positions. The sum keeps gradients to ``logits``.
    """
    rows = ResponseRows.of(labels)
    ref_rows = ref_logits.reshape(-1, ref_logits.shape[-1]).index_select(0, rows.rows)
    sums = response_loss(logits, rows, ref_rows, _identity, ce_weight=0.0, kl_weight=1.0)
    return sums.objective, torch.tensor(len(rows), device=logits.device)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def check_kl_args(
    finetuning_args: FinetuningArguments, model=None, training_args: TrainingArguments | None = None
):
    """Refuse settings the KL term cannot honour, before anything is loaded for it.

    Time-series (ChatTS) models are refused: their forward replaces each ``<ts><ts/>`` pair by
    one position per patch, so their logits are longer than the labels and the response-token
    positions of the logits are not those of the labels. Computing them would mean re-doing the
    checkpoint's own splicing outside it; until that is done, a clear error beats a wrong KL.
    """
    from lfkit.plugin.timeseries.spec import is_timeseries_model

    if model is not None and is_timeseries_model(model):
        raise ConfigError(
            "kl_beta is not supported for time-series (ChatTS) models: their forward inserts patch "
            "positions, so the logits do not line up with the labels' response tokens. Set kl_beta: 0."
        )
    others = [
        k for k in ("use_dft_loss", "use_eaft_loss", "use_asft_loss") if getattr(finetuning_args, k, False)
    ]
    if others:
        raise ConfigError(
            f"kl_beta adds a KL term to LlamaFactory's plain cross-entropy and cannot be combined with "
            f"{', '.join(others)} (ASFT already carries its own KL to a reference). Set kl_beta: 0 or drop "
            f"{', '.join(others)}."
        )
    if training_args is not None and training_args.label_smoothing_factor > 0:
        raise ConfigError(
            "kl_beta computes the plain cross-entropy itself and cannot be combined with "
            f"label_smoothing_factor {training_args.label_smoothing_factor} (the KL to the reference already "
            "smooths the target towards the base model). Set one of them to 0."
        )


class KLRegulariser:
    """The sft loss with ``kl_beta * KL(p_ref || p_theta)``, and the logging of both parts.

    ``ce_loss`` and ``kl_loss`` are averaged over each logging window exactly like the trainer's own
    ``loss`` (same scaling, same cross-process mean), with ``kl_loss`` unweighted: the logged
    ``loss`` equals ``ce_loss + kl_beta * kl_loss``.
    """

    def __init__(self, trainer: Trainer, beta: float, reference: Reference) -> None:
        self.trainer = trainer
        self.beta = beta
        self.reference = reference
        device = trainer.args.device
        self._ce_window = torch.zeros((), device=device)
        self._kl_window = torch.zeros((), device=device)
        self._window_start_step: int | None = None  # global_step when the window's first micro-batch ran

    def compute_loss(self, model, inputs: dict[str, Any], return_outputs=False, num_items_in_batch=None):
        """The regularised training loss (and the model outputs), in place of the trainer's compute_loss.

        The model runs without labels, so that it returns its logits without computing a
        cross-entropy of its own; the cross-entropy and the KL are then computed together by
        :func:`response_loss`, with the normalisation of transformers' ``Trainer.compute_loss``
        and LlamaFactory's loss (mirrored in :meth:`_scale`).
        """
        trainer = self.trainer
        labels = inputs["labels"]
        rows = ResponseRows.of(labels)
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        ref_hidden = self.reference.hidden_states(model, model_inputs, rows.rows)
        outputs = model(**model_inputs)
        logits = outputs.get("logits") if isinstance(outputs, dict) else getattr(outputs, "logits", None)
        if logits is None:
            raise ConfigError(
                "kl_beta needs the model's logits, but the model returned none (a fused loss kernel such as "
                "enable_liger_kernel computes the loss without them). Disable it or set kl_beta: 0."
            )
        if logits.shape[:2] != labels.shape:
            raise RuntimeError(
                f"kl_beta: the model returned logits for {tuple(logits.shape[:2])} positions but the batch "
                f"has {tuple(labels.shape)} labels; this model's outputs do not line up with its tokens."
            )
        sums = response_loss(
            logits, rows, ref_hidden, self.reference.logits, ce_weight=1.0, kl_weight=self.beta
        )
        del ref_hidden
        scale, factor, divided_later = self._scale(num_items_in_batch, len(rows), logits.device)
        aux = self._router_aux_loss(model, outputs)  # added to the loss as MoE models add it with labels
        loss = (sums.objective * scale + aux) * factor
        ce = (sums.ce_sum * scale + aux.detach()) * factor
        kl = sums.kl_sum * scale * factor

        if self._window_start_step is None:
            self._window_start_step = trainer.state.global_step
        window_scale = 1.0 / trainer.current_gradient_accumulation_steps if divided_later else 1.0
        self._ce_window += ce.detach().float() * window_scale
        self._kl_window += kl.detach().float() * window_scale
        return (loss, outputs) if return_outputs else loss

    def _scale(self, num_items_in_batch, n_tokens: int, device) -> tuple[torch.Tensor, float, bool]:
        """(1 / token count, cross-device factor, whether training_step divides by the accumulation steps).

        Mirrors transformers' Trainer (compute_loss and training_step) with LlamaFactory's
        cross-entropy: the model divides its summed CE by ``num_items_in_batch`` (the response tokens
        of the whole accumulation window) when it receives it, else CE is the micro-batch mean;
        ``average_tokens_across_devices`` multiplies by the process count; and training_step divides
        the mean by the accumulation steps (applied by the trainer to the returned loss, so here only
        to the logged parts). A micro-batch without response tokens contributes 0, not NaN.
        """
        trainer = self.trainer
        has_items = num_items_in_batch is not None
        per_window = trainer.model_accepts_loss_kwargs and has_items
        if per_window:
            count = (
                num_items_in_batch.to(device) if torch.is_tensor(num_items_in_batch) else num_items_in_batch
            )
        else:
            count = max(n_tokens, 1)
        factor = 1.0
        if trainer.args.average_tokens_across_devices and trainer.model_accepts_loss_kwargs and has_items:
            factor = float(
                trainer.accelerator.num_processes if trainer.args.n_gpu <= 1 else trainer.args.n_gpu
            )
        scale = 1.0 / torch.as_tensor(count, dtype=torch.float32, device=device)
        return scale, factor, not per_window

    def _router_aux_loss(self, model, outputs) -> torch.Tensor:
        """``router_aux_loss_coef * aux_loss`` of a mixture-of-experts model that returned one, else 0.

        transformers' MoE models (Qwen3-MoE, Mixtral, ...) add it to their loss only when given labels;
        the model runs without them here, so it is added as they would add it.
        """
        aux = outputs.get("aux_loss") if isinstance(outputs, dict) else getattr(outputs, "aux_loss", None)
        if aux is None:
            return torch.zeros((), device=self.trainer.args.device)
        causal_lm = self.trainer.accelerator.unwrap_model(model)
        if hasattr(causal_lm, "get_base_model"):
            causal_lm = causal_lm.get_base_model()
        coef = getattr(causal_lm, "router_aux_loss_coef", None)
        if coef is None:
            raise ConfigError(
                f"kl_beta: {type(causal_lm).__name__} returned a router aux_loss but has no "
                "router_aux_loss_coef, so lfkit cannot add it as the model would. Set kl_beta: 0 for it."
            )
        return coef * aux

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
