"""Model of lfkit's tiny ChatTS-compatible model (remote code, loaded with trust_remote_code).

A Qwen2 decoder plus ``ts_encoder``, an MLP over fixed-size patches of each series, with
ChatTS's forward contract: ``forward(input_ids, attention_mask, labels, timeseries=...)``
where ``timeseries`` is the ``[series, 2*max_len, 1]`` value+mask tensor. Each
``<ts>`` ``<ts/>`` pair (ids from the config) is replaced by ``ceil(valid_length / patch_size)``
encoder embeddings, in order; labels there are ignored. Written by lfkit (not ChatTS's code);
self-contained on purpose so it loads like a real checkpoint.
"""

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import GenerationMixin, Qwen2Model, Qwen2PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_qwen2 import Qwen2TSConfig

IGNORE_INDEX = -100


class TimeSeriesEmbedding(nn.Module):
    """Patch-MLP encoder: [series, 2*max_len, 1] -> ([total_patches, hidden], patch_cnt)."""

    def __init__(self, ts_config):
        super().__init__()
        self.patch_size = int(ts_config["patch_size"])
        self.num_features = int(ts_config["num_features"])
        hidden = int(ts_config["hidden_size"])
        layers, width = [], self.patch_size * self.num_features
        for _ in range(int(ts_config["num_layers"]) - 1):
            layers += [nn.Linear(width, hidden), nn.GELU()]
            width = hidden
        layers.append(nn.Linear(width, hidden))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        n = x.size(0)
        x = x.reshape(n, -1, self.num_features).to(self.mlp[0].weight.dtype)
        valid = x[:, :, -1].sum(dim=1).round().long()
        patch_cnt = (valid + self.patch_size - 1) // self.patch_size
        patches = []
        for i in range(n):
            length, count = int(valid[i]), int(patch_cnt[i])
            xi = x[i, :length, :]
            pad = count * self.patch_size - length
            if pad:
                xi = torch.cat([xi, xi.new_zeros(pad, self.num_features)], dim=0)
            patches.append(xi.reshape(count, self.patch_size * self.num_features))
        return self.mlp(torch.cat(patches, dim=0)), patch_cnt


@dataclass
class MergedInputs:
    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    ts_positions: list  # per series: (row, first position, number of positions)


class Qwen2TSForCausalLM(Qwen2PreTrainedModel, GenerationMixin):
    config_class = Qwen2TSConfig

    def __init__(self, config):
        super().__init__(config)
        self.model = Qwen2Model(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.ts_encoder = TimeSeriesEmbedding(config.ts)
        self.post_init()

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def merge_timeseries(self, input_ids, inputs_embeds, attention_mask, labels, features, patch_cnt):
        """Splice the series embeddings in place of each ``<ts>`` ``<ts/>`` pair."""
        start, end = self.config.ts_token_start_index, self.config.ts_token_end_index
        batch, length = input_ids.shape
        n_start = int((input_ids == start).sum())
        n_end = int((input_ids == end).sum())
        if n_start != n_end or n_start != len(patch_cnt):
            raise ValueError(
                f"{n_start} <ts> and {n_end} <ts/> tokens in the batch but {len(patch_cnt)} time series."
            )
        left_padding = bool((attention_mask[:, 0] == 0).any()) and not bool(
            (attention_mask[:, -1] == 0).any()
        )
        offsets = [0] + torch.cumsum(patch_cnt, 0).tolist()
        rows, k, ts_positions = [], 0, []
        for b in range(batch):
            emb, mask, lab, used, prev = [], [], [], 0, 0
            for s in (input_ids[b] == start).nonzero().flatten().tolist():
                if s + 1 >= length or int(input_ids[b, s + 1]) != end:
                    raise ValueError(f"row {b}: <ts> at position {s} is not followed by <ts/>.")
                emb.append(inputs_embeds[b, prev:s])
                mask.append(attention_mask[b, prev:s])
                if labels is not None:
                    lab.append(labels[b, prev:s])
                used += s - prev
                count = int(patch_cnt[k])
                emb.append(features[offsets[k] : offsets[k + 1]].to(inputs_embeds.dtype))
                mask.append(attention_mask[b, s].repeat(count))
                if labels is not None:
                    lab.append(labels.new_full((count,), IGNORE_INDEX))
                ts_positions.append((b, used, count))
                used += count
                prev, k = s + 2, k + 1
            emb.append(inputs_embeds[b, prev:])
            mask.append(attention_mask[b, prev:])
            if labels is not None:
                lab.append(labels[b, prev:])
            rows.append((torch.cat(emb), torch.cat(mask), torch.cat(lab) if labels is not None else None))
        new_len = max(r[0].shape[0] for r in rows)
        out_emb, out_mask, out_lab = [], [], []
        for b, (emb, mask, lab) in enumerate(rows):
            pad = new_len - emb.shape[0]
            if left_padding and pad:
                ts_positions = [(r, p + pad, c) if r == b else (r, p, c) for r, p, c in ts_positions]
            side = (pad, 0) if left_padding else (0, pad)
            out_emb.append(F.pad(emb, (0, 0) + side))
            out_mask.append(F.pad(mask, side))
            if lab is not None:
                out_lab.append(F.pad(lab, side, value=IGNORE_INDEX))
        attention = torch.stack(out_mask)
        position_ids = (attention.long().cumsum(-1) - 1).clamp(min=0)
        return MergedInputs(
            torch.stack(out_emb),
            attention,
            position_ids,
            torch.stack(out_lab) if labels is not None else None,
            ts_positions,
        )

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
        num_items_in_batch=None,
        **kwargs,
    ):
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_tokens(input_ids)
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=inputs_embeds.device)
        if timeseries is not None and timeseries.shape[0] > 0:
            features, patch_cnt = self.ts_encoder(timeseries)
            merged = self.merge_timeseries(
                input_ids, inputs_embeds, attention_mask, labels, features, patch_cnt
            )
            inputs_embeds, attention_mask, position_ids, labels = (
                merged.inputs_embeds,
                merged.attention_mask,
                merged.position_ids,
                merged.labels,
            )
            use_cache, past_key_values = False, None
        elif position_ids is None and past_key_values is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        outputs = self.model(
            inputs_embeds=inputs_embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            use_cache=use_cache,
        )
        logits = self.lm_head(outputs.last_hidden_state).float()
        loss = None
        if labels is not None:
            shift_logits = logits[:, :-1, :].reshape(-1, logits.size(-1))
            shift_labels = labels[:, 1:].reshape(-1).to(shift_logits.device)
            total = F.cross_entropy(shift_logits, shift_labels, ignore_index=IGNORE_INDEX, reduction="sum")
            count = (
                num_items_in_batch if num_items_in_batch is not None else (shift_labels != IGNORE_INDEX).sum()
            )
            loss = total / torch.as_tensor(count, device=total.device).clamp(min=1)
        return CausalLMOutputWithPast(loss=loss, logits=logits, past_key_values=outputs.past_key_values)

    def prepare_inputs_for_generation(self, input_ids, attention_mask=None, timeseries=None, **kwargs):
        # The tiny model recomputes the whole sequence at each step (no cache): simple and exact.
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "timeseries": timeseries,
            "use_cache": False,
        }
