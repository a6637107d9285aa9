"""The reference model of ``kl_beta``: which model it is, how it runs, and what it costs.

Which model:

* LoRA (and OFT): the trained model with its adapters disabled (peft's ``disable_adapter``): no
  second copy of the weights. Refused with ``pissa_init`` unless ``kl_ref_model`` is set: PiSSA
  moves each weight's principal components into the adapters, so with them disabled the model is
  the PiSSA residual, not the base model (LlamaFactory refuses PiSSA with its own references).
* freeze / full: a frozen copy loaded with LlamaFactory's own ``create_ref_model`` from
  ``kl_ref_model`` (or ``model_name_or_path`` when unset) and prepared by ``CustomSeq2SeqTrainer``
  exactly like ASFT's reference (DeepSpeed, FSDP or plain device placement).
* ``kl_ref_model`` with LoRA loads that model as a separate frozen reference.

How it runs (:class:`Reference`): without gradients, with every module in eval mode for the
duration of the call (so no dropout and no NEFTune noise, which the trainer's own forward keeps),
with ``use_cache=False`` (no KV cache is built), and asking the model for the logits of one
position only (``logits_to_keep=1``). Its decoder's hidden states are taken at the response
positions (``[response tokens x hidden]``) and its output layer is applied to them one chunk at a
time by :func:`lfkit.plugin.kl_loss.response_loss`. Every call checks on the last position that
the output layer applied to those hidden states gives the model's own logits, so a model that
post-processes its logits (soft-capping, scaling) is refused rather than mis-referenced.

Cost: one extra forward pass without gradients per micro-batch (about a quarter to a third more
compute per step), its transient activations, and ``response tokens x hidden`` values. A frozen
copy adds its weights in the compute dtype, 2 bytes per parameter in bf16/fp16 (1.5B: 3.1 GB,
7B: 15 GB, 14B: 30 GB), per GPU unless ZeRO-3/FSDP shards it.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import inspect
from collections.abc import Iterator
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

import torch
from lfkit.plugin.errors import ConfigError

if TYPE_CHECKING:
    from llamafactory.hparams import FinetuningArguments, ModelArguments

ADAPTER_TYPES = ("lora", "oft")  # peft adapters: the reference is the model with them disabled

# LlamaFactory's ``run_sft`` does not hand its ModelArguments to the trainer, but the frozen
# reference of freeze/full tuning is loaded from them (``create_ref_model(model_args, ...)``).
# :func:`remember_model_args`, patched around run_sft's ``load_model``, records them here.
_SFT_MODEL_ARGS: ContextVar[ModelArguments | None] = ContextVar("lfkit_sft_model_args", default=None)


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
        raise ConfigError(
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


@contextlib.contextmanager
def eval_mode(module: torch.nn.Module) -> Iterator[None]:
    """Every submodule in eval mode inside the block; each one's own mode restored after it.

    Restoring each flag (rather than calling ``train()``) keeps modules that the run deliberately
    holds in eval mode as they were.
    """
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def _accepts(forward, name: str) -> bool:
    try:
        return name in inspect.signature(forward).parameters
    except (TypeError, ValueError):
        return False


def _is_adapted(module: torch.nn.Module) -> bool:
    """Whether peft put an adapter or a trainable copy (modules_to_save) in ``module``."""
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils import ModulesToSaveWrapper

    return any(isinstance(m, (BaseTunerLayer, ModulesToSaveWrapper)) for m in module.modules())


class Reference:
    """Runs the reference model on a batch and gives its logits at the response positions, chunk by chunk.

    ``ref_model`` is the trainer's frozen reference (possibly wrapped by DeepSpeed), or None to use
    the trained (peft) model with its adapters disabled. ``unwrap`` strips DDP/DeepSpeed wrappers
    (the trainer's ``accelerator.unwrap_model``).
    """

    def __init__(self, ref_model: torch.nn.Module | None, unwrap=lambda m: m) -> None:
        self.ref_model = ref_model
        self._unwrap = unwrap
        self._head: torch.nn.Module | None = None
        self._head_context = contextlib.nullcontext

    def _parts(self, model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module, Any]:
        """(module to call, the causal LM inside it, factory of the context that makes it the reference)."""
        if self.ref_model is not None:
            return self.ref_model, self._unwrap(self.ref_model), contextlib.nullcontext
        peft_model = self._unwrap(model)
        if not hasattr(peft_model, "disable_adapter"):
            raise RuntimeError(
                "kl_beta with LoRA needs a peft model to disable its adapters, "
                f"got {type(peft_model).__name__}."
            )
        return model, peft_model.get_base_model(), peft_model.disable_adapter

    @torch.no_grad()
    def hidden_states(
        self, model: torch.nn.Module, inputs: dict[str, Any], rows: torch.Tensor
    ) -> torch.Tensor:
        """The reference decoder's final hidden states at the given ``[batch * seq]`` rows ([rows, hidden]).

        ``model`` is the trained model as the trainer calls it; ``inputs`` its batch without labels.
        """
        call, causal_lm, reference_context = self._parts(model)
        captured: list[torch.Tensor] = []
        hook = causal_lm.get_decoder().register_forward_hook(lambda _m, _a, out: captured.append(out[0]))
        kwargs = {"use_cache": False}
        if _accepts(causal_lm.forward, "logits_to_keep"):
            kwargs["logits_to_keep"] = 1
        head = causal_lm.get_output_embeddings()
        try:
            with reference_context(), eval_mode(call):
                logits = call(**inputs, **kwargs).logits
                hidden = captured[-1]
                own = head(hidden[:, -1:])
        finally:
            hook.remove()
        if not torch.allclose(own.float(), logits[:, -1:].float(), rtol=1e-3, atol=1e-3):
            raise ConfigError(
                f"kl_beta: {type(causal_lm).__name__}'s logits are not its output layer applied to its "
                "decoder's hidden states (it post-processes them, e.g. soft-capping), so lfkit cannot "
                "compute its reference logits at the response positions. Set kl_beta: 0 for this model."
            )
        self._head = head
        # A reference that is the trained model needs its adapters off for its output layer too, when the
        # adapters reach that layer (lm_head in lora_target or additional_target).
        self._head_context = reference_context if _is_adapted(head) else contextlib.nullcontext
        return hidden.reshape(-1, hidden.shape[-1]).index_select(0, rows)

    @torch.no_grad()
    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """The reference's logits for a chunk of the rows :meth:`hidden_states` returned."""
        with self._head_context():
            return self._head(hidden)
