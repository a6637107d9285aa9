"""Series-aware generation for ChatTS models on transformers 5 (the ``generation`` fix).

ChatTS's forward replaces each ``<ts>`` ``<ts/>`` pair of ``input_ids`` by the series' patch
embeddings, so the sequence the decoder sees is longer than the text; it returns that merged
``attention_mask``. transformers 5's generation loop knows only the text: it builds
``position_ids`` from the text mask and increments them per new token, and it keeps no
``cache_position`` in the generation kwargs. ChatTS's own 4.x-era plumbing
(``prepare_inputs_for_generation`` / ``_update_model_kwargs_for_generation``) therefore either
fails (``seen_tokens``, ``cache_position``), feeds positions that ignore the expansion, or
merges the series a second time. These replacements keep one invariant instead:

* while the cache is empty (the prefill, or every step of a ``use_cache=False`` full
  recompute) the model gets the whole text, its text mask and the series, and no position
  ids: its merge computes them from the merged mask;
* once the cache holds the merged prompt, the model gets only the tokens the cache lacks, the
  merged mask (grown by one per generated token), position ids counted on that merged mask,
  and no series: they are merged exactly once.

So cached greedy decoding equals a full recompute token for token (the tests check it).
"""

from __future__ import annotations

import inspect
import types

from lfkit.plugin.timeseries.compat import as_chatts_cache, log_once, refuse

_FORWARD_ARGS = ("timeseries", "attention_mask", "position_ids", "past_key_values", "use_cache")


def _positions(attention_mask):
    return (attention_mask.long().cumsum(-1) - 1).masked_fill(attention_mask == 0, 1)


def prepare_inputs_for_generation(
    self,
    input_ids,
    past_key_values=None,
    attention_mask=None,
    inputs_embeds=None,
    timeseries=None,
    next_sequence_length=None,
    is_first_iteration=False,
    **kwargs,
):
    """The model inputs of one generation step (see module docstring)."""
    import torch

    if inputs_embeds is not None:
        raise ValueError(
            "ChatTS generation takes input_ids (series are merged at their <ts> tokens), not inputs_embeds."
        )
    cache = (
        as_chatts_cache(past_key_values) if getattr(self, "_lfkit_chatts_cache", False) else past_key_values
    )
    kwargs.pop("position_ids", None)
    kwargs.pop("cache_position", None)
    past = cache.get_seq_length() if cache is not None else 0
    inputs = {"past_key_values": cache, "use_cache": kwargs.pop("use_cache", None)}
    if past == 0:
        inputs.update(input_ids=input_ids, attention_mask=attention_mask, timeseries=timeseries)
        if (timeseries is None or len(timeseries) == 0) and attention_mask is not None:
            inputs["position_ids"] = _positions(attention_mask)
    else:
        if attention_mask is not None:
            new = attention_mask.shape[1] - past
            positions = _positions(attention_mask)[:, -new:]
        else:
            new = next_sequence_length or 1
            positions = torch.arange(past, past + new, device=input_ids.device).expand(input_ids.shape[0], -1)
        inputs.update(input_ids=input_ids[:, -new:], attention_mask=attention_mask, position_ids=positions)
        inputs["timeseries"] = None
    accepted = inspect.signature(type(self).forward).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    for key, value in kwargs.items():
        if key not in inputs and (takes_any or key in accepted):
            inputs[key] = value
    return inputs


def update_model_kwargs_for_generation(
    self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1
):
    """transformers' own update, on the merged attention mask once the cache holds the merged prompt."""
    from transformers.generation import GenerationMixin

    merged = getattr(outputs, "attention_mask", None)
    if model_kwargs.get("use_cache"):
        if merged is None and model_kwargs.get("timeseries") is not None:
            raise refuse(
                "generation", f"{type(self).__name__}.forward no longer returns its merged attention_mask"
            )
        if merged is not None:
            model_kwargs["attention_mask"] = merged
    model_kwargs.pop("position_ids", None)  # counted on the merged mask in prepare_inputs_for_generation
    return GenerationMixin._update_model_kwargs_for_generation(
        self, outputs, model_kwargs, is_encoder_decoder=is_encoder_decoder, num_new_tokens=num_new_tokens
    )


def _with_generation_mixin(model) -> None:
    """Give a remote class without ``GenerationMixin`` its ``generate`` back, as transformers itself does.

    transformers 5's ``PreTrainedModel`` no longer inherits ``GenerationMixin``; ChatTS-14B's
    class does not either. ``AutoModelForCausalLM`` adds the mixin to such remote classes, but only
    on the first load in a process: later loads find the class it registered, without the mixin,
    and the model has no ``generate``.
    """
    from transformers.generation import GenerationMixin
    from transformers.models.auto.auto_factory import add_generation_mixin_to_remote_model

    if isinstance(model, GenerationMixin):
        return
    cls = add_generation_mixin_to_remote_model(type(model))
    if not issubclass(cls, GenerationMixin):
        raise refuse(
            "generation", f"{type(model).__name__} has no generate and no prepare_inputs_for_generation"
        )
    model.__class__ = cls
    if getattr(model, "generation_config", None) is None:  # what from_pretrained sets for a generative model
        from transformers import GenerationConfig

        try:
            model.generation_config = GenerationConfig.from_pretrained(model.name_or_path)
        except OSError:  # the checkpoint ships no generation_config.json
            model.generation_config = GenerationConfig.from_model_config(model.config)
    log_once("generation_mixin", f"{cls.__name__} got GenerationMixin back (transformers 5 adds it once).")


def install_series_generation(model) -> bool:
    """Replace the model's generation plumbing by the series-aware one (on this instance)."""
    cls = type(model)
    params = inspect.signature(cls.forward).parameters
    missing = [name for name in _FORWARD_ARGS if name not in params]
    if missing:
        raise refuse("generation", f"{cls.__name__}.forward no longer takes {missing}")
    _with_generation_mixin(model)
    model.prepare_inputs_for_generation = types.MethodType(prepare_inputs_for_generation, model)
    model._update_model_kwargs_for_generation = types.MethodType(update_model_kwargs_for_generation, model)
    log_once(
        "generation",
        f"{cls.__name__} generates with series-aware inputs (series merged once, positions counted on the "
        "merged sequence) instead of its transformers-4 prepare_inputs_for_generation.",
    )
    return True
