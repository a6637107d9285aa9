"""Model of lfkit's tiny ChatTS-8B-style model (remote code, loaded with trust_remote_code).

Written by lfkit after reading the public ChatTS-8B ``modeling_qwen3_ts.py``; not copied from it.
Unlike the 14B code it builds on transformers' own ``Qwen3Model`` (so its rotary buffers are
initialised by transformers), but it keeps the same transformers-4-era generation and saving
patterns (see :mod:`lfkit.plugin.timeseries.compat`):

* ``_tied_weights_keys`` as a list;
* a generation mixin whose ``prepare_inputs_for_generation`` reads ``Cache.seen_tokens`` to
  decide whether the series were merged already, then defers to transformers' own
  ``prepare_inputs_for_generation`` (which, on transformers 5, feeds the ``position_ids`` it
  tracked on the un-merged prompt); and whose ``_update_model_kwargs_for_generation`` adopts
  the merged (grown) attention mask from the outputs before transformers' own update.

The series themselves go through :mod:`.chatts_timeseries` (encoder and merge).
"""

from dataclasses import dataclass

import torch
from torch import nn
from transformers.cache_utils import Cache
from transformers.generation import GenerationMixin
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.qwen3.modeling_qwen3 import Qwen3Model, Qwen3PreTrainedModel

from .chatts_timeseries import TimeSeriesCausalLMMixin, TimeSeriesEmbedding
from .configuration_qwen3_ts import Qwen3TSConfig


@dataclass
class Qwen3TSCausalLMOutputWithPast(CausalLMOutputWithPast):
    attention_mask: torch.FloatTensor | None = None
    labels: torch.LongTensor | None = None
    new_token_positions: torch.LongTensor | None = None


class Qwen3TSGenerationMixin(GenerationMixin):
    """Series are merged in the first forward only; later steps reuse the cache."""

    def prepare_inputs_for_generation(
        self,
        input_ids,
        past_key_values=None,
        attention_mask=None,
        inputs_embeds=None,
        timeseries=None,
        **kwargs,
    ):
        if timeseries is not None and len(timeseries) > 0 and past_key_values is not None:
            if isinstance(past_key_values, Cache):
                past_length = past_key_values.seen_tokens
            else:
                past_length = past_key_values[0][0].shape[2] if past_key_values[0] is not None else 0
            if past_length > 0:
                input_ids = input_ids[:, -1:]
                timeseries = None
        model_inputs = super().prepare_inputs_for_generation(
            input_ids=input_ids,
            past_key_values=past_key_values,
            attention_mask=attention_mask,
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        model_inputs["timeseries"] = timeseries
        return model_inputs

    def _update_model_kwargs_for_generation(
        self, outputs, model_kwargs, is_encoder_decoder=False, num_new_tokens=1
    ):
        if getattr(outputs, "attention_mask", None) is not None:
            model_kwargs["attention_mask"] = outputs.attention_mask
        return super()._update_model_kwargs_for_generation(
            outputs=outputs,
            model_kwargs=model_kwargs,
            is_encoder_decoder=is_encoder_decoder,
            num_new_tokens=num_new_tokens,
        )

    def _validate_model_kwargs(self, model_kwargs):
        timeseries = model_kwargs.pop("timeseries", None)
        super()._validate_model_kwargs(model_kwargs)
        if timeseries is not None:
            model_kwargs["timeseries"] = timeseries


class Qwen3TSPreTrainedModel(Qwen3PreTrainedModel):
    config_class = Qwen3TSConfig


class Qwen3TSForCausalLM(TimeSeriesCausalLMMixin, Qwen3TSPreTrainedModel, Qwen3TSGenerationMixin):
    _tied_weights_keys = ["lm_head.weight"]

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen3Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.ts_encoder = TimeSeriesEmbedding(config.ts)
        self.post_init()

    def forward(
        self,
        input_ids=None,
        timeseries=None,
        attention_mask=None,
        position_ids=None,
        past_key_values=None,
        inputs_embeds=None,
        labels=None,
        use_cache=None,
        logits_to_keep=0,
        **kwargs,
    ):
        inputs_embeds, attention_mask, position_ids, labels, new_token_positions = self.embed_with_series(
            input_ids, inputs_embeds, timeseries, attention_mask, position_ids, labels
        )
        outputs = self.model(
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            inputs_embeds=inputs_embeds,
            use_cache=use_cache,
            **kwargs,
        )
        hidden_states = outputs.last_hidden_state
        keep = slice(-logits_to_keep, None) if isinstance(logits_to_keep, int) else logits_to_keep
        logits = self.lm_head(hidden_states[:, keep, :])
        loss = None
        if labels is not None:
            loss = self.loss_function(
                logits=logits, labels=labels, vocab_size=self.config.vocab_size, **kwargs
            )
        return Qwen3TSCausalLMOutputWithPast(
            loss=loss,
            logits=logits,
            past_key_values=outputs.past_key_values,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
            attention_mask=attention_mask,
            labels=labels,
            new_token_positions=new_token_positions,
        )
