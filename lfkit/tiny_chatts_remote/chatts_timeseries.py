"""Time-series encoder and series merge of lfkit's tiny ChatTS models (remote code).

Written by lfkit after reading the public ChatTS-14B / ChatTS-8B remote code, to reproduce
its interface and behaviour, not copied from it. Shared by the 14B-style (Qwen2) and 8B-style
(Qwen3) tiny models through a relative import, which transformers copies with the checkpoint's
code like any remote-code helper file.

* :class:`TimeSeriesEmbedding` follows ChatTS's ``TimeSeriesEmbedding``: the input is the
  ``[series, 2*max_len, 1]`` value+mask tensor; the valid length is the mask channel's sum; a
  series is padded to whole patches with its last value; with ``use_position_embedding`` each
  patch carries an ``nn.Embedding`` of the value positions (the padding positions get index
  ``max_sequence_length``); an MLP maps each patch to the LLM's hidden size. It returns
  ``(features [total_patches, hidden], patch_cnt [series])``.
* :func:`merge_time_series_features` follows ChatTS's ``_merge_input_ids_with_time_series_features``
  contract: each ``<ts>`` ``<ts/>`` pair becomes ``patch_cnt`` feature rows in place; the
  padding side is read from the mask; the merged attention mask is rebuilt from each row's
  count of attended positions (contiguous, left- or right-aligned); position ids are
  ``cumsum(mask) - 1`` (1 where masked); embeddings of pad tokens are zeroed; labels of
  series positions are ``ignore_index``. It returns ``(inputs_embeds, attention_mask,
  position_ids, labels, new_token_positions)``.
* :class:`TimeSeriesCausalLMMixin` holds what both tiny heads share with ChatTS's: the embedding
  accessors, ``_merge_input_ids_with_time_series_features`` and the first step of ``forward``
  (embed the tokens; with series, encode and merge them).
"""

import torch
from torch import nn

# The ``ts`` block of a tiny config: the keys of a real checkpoint's, tiny values.
DEFAULT_TS = {
    "patch_size": 4,
    "num_features": 2,
    "hidden_size": 64,
    "num_layers": 2,
    "max_sequence_length": 64,
    "use_position_embedding": True,
    "embedding_dim": 4,
}


class TimeSeriesEmbedding(nn.Module):
    """Patch encoder of a batch of series (see module docstring)."""

    def __init__(self, config):
        super().__init__()
        self.patch_size = int(config["patch_size"])
        self.num_layers = int(config["num_layers"])
        self.hidden_size = int(config["hidden_size"])
        self.num_features = int(config["num_features"])
        self.max_sequence_length = int(config["max_sequence_length"])
        self.use_position_embedding = bool(config.get("use_position_embedding", False))
        self.use_layer_norm = bool(config.get("use_layer_norm", False))
        self.embedding_dim = int(config.get("embedding_dim", 16))
        width = self.patch_size
        if self.use_position_embedding:
            self.position_embedding = nn.Embedding(self.max_sequence_length + 1, self.embedding_dim)
            self.padding_idx = self.max_sequence_length
            width += self.embedding_dim * self.patch_size
        layers = []
        for _ in range(self.num_layers - 1):
            layers += [nn.Linear(width, self.hidden_size), nn.GELU()]
            width = self.hidden_size
        layers.append(nn.Linear(width, self.hidden_size))
        if self.use_layer_norm:
            layers.append(nn.LayerNorm(self.hidden_size))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x):
        n = x.size(0)
        x = x.reshape(n, -1, self.num_features)
        valid = x[:, :, -1].long().sum(dim=1)
        patch_cnt = (valid + self.patch_size - 1) // self.patch_size
        dtype = next(self.mlp.parameters()).dtype
        patches = []
        for i in range(n):
            length, count = int(valid[i]), int(patch_cnt[i])
            if count == 0:
                continue
            values = x[i, :length, :1]
            positions = torch.arange(length, device=x.device)
            pad = count * self.patch_size - length
            if pad:
                values = torch.cat([values, values[-1:].repeat(pad, 1)], dim=0)
                positions = torch.cat([positions, positions.new_full((pad,), self.max_sequence_length)])
            patch = values.reshape(count, self.patch_size).to(dtype)
            if self.use_position_embedding:
                embedded = self.position_embedding(positions.reshape(count, self.patch_size))
                patch = torch.cat([patch, embedded.flatten(1).to(dtype)], dim=1)
            patches.append(patch)
        if not patches:
            return x.new_zeros(0, self.hidden_size, dtype=dtype), patch_cnt
        return self.mlp(torch.cat(patches, dim=0)), patch_cnt


def _left_padded(attention_mask):
    left = bool((attention_mask[:, 0] == 0).any())
    right = bool((attention_mask[:, -1] == 0).any())
    if left and right and attention_mask.size(0) > 1:
        raise ValueError(f"both sides of attention_mask have zeros, invalid: {attention_mask}")
    return left and not right


def merge_time_series_features(config, features, inputs_embeds, input_ids, attention_mask, labels, patch_cnt):
    """Splice series features in place of their ``<ts>`` ``<ts/>`` pairs (see module docstring)."""
    start, end = config.ts_token_start_index, config.ts_token_end_index
    ignore = getattr(config, "ignore_index", -100)
    batch, length = input_ids.shape
    starts = (input_ids == start).nonzero().tolist()
    if len(starts) != len(patch_cnt) or int((input_ids == end).sum()) != len(patch_cnt):
        raise ValueError(
            f"The input provided to the model are wrong. The number of time series tokens is {len(starts)} "
            f"while the number of time series given to the model is {len(patch_cnt)}."
        )
    counts = [int(c) for c in patch_cnt]
    offsets = [0]
    for c in counts:
        offsets.append(offsets[-1] + c)
    grow = [0] * batch
    k = 0
    # new position of every original token (the <ts> of a pair maps to the end of its patch block)
    new_pos = torch.zeros(batch, length, dtype=torch.long, device=input_ids.device)
    slots = []  # per row: (first merged position, series index) of each series
    for b in range(batch):
        here, prev, row_slots = 0, 0, []
        for s in (input_ids[b] == start).nonzero().flatten().tolist():
            if s + 1 >= length or int(input_ids[b, s + 1]) != end:
                raise ValueError(f"row {b}: <ts> at position {s} is not followed by <ts/>.")
            new_pos[b, prev:s] = torch.arange(here, here + s - prev, device=input_ids.device)
            here += s - prev
            row_slots.append((here, k))
            new_pos[b, s] = here + counts[k] - 2
            new_pos[b, s + 1] = here + counts[k] - 1
            here += counts[k]
            grow[b] += counts[k] - 2
            prev, k = s + 2, k + 1
        new_pos[b, prev:] = torch.arange(here, here + length - prev, device=input_ids.device)
        slots.append(row_slots)
    width = length + max(grow)
    left = _left_padded(attention_mask)
    shift = [width - (length + g) if left else 0 for g in grow]
    new_pos = new_pos + torch.tensor(shift, device=input_ids.device)[:, None]

    embeds = inputs_embeds.new_zeros(batch, width, inputs_embeds.size(-1))
    final_labels = None if labels is None else labels.new_full((batch, width), ignore)
    mask = attention_mask.new_zeros(batch, width)
    is_text = (input_ids != start) & (input_ids != end)
    for b in range(batch):
        keep = is_text[b].nonzero().flatten()
        embeds[b, new_pos[b, keep]] = inputs_embeds[b, keep]
        if labels is not None:
            final_labels[b, new_pos[b, keep]] = labels[b, keep]
        for first, series in slots[b]:
            at = first + shift[b]
            embeds[b, at : at + counts[series]] = features[offsets[series] : offsets[series + 1]].to(
                embeds.dtype
            )
        attended = int(attention_mask[b].sum()) + grow[b]
        if left:
            mask[b, width - attended :] = 1
        else:
            mask[b, :attended] = 1
    position_ids = (mask.long().cumsum(-1) - 1).masked_fill(mask == 0, 1)
    pad_id = getattr(config, "pad_token_id", None)
    if pad_id is not None:
        for b, i in (input_ids == pad_id).nonzero().tolist():
            embeds[b, new_pos[b, i]] = 0
    new_pos = new_pos.masked_fill(attention_mask == 0, -1)
    return embeds, mask, position_ids, final_labels, new_pos


class TimeSeriesCausalLMMixin:
    """The parts of ChatTS's ``*TSForCausalLM`` that the 14B-style and 8B-style heads share."""

    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, new_embeddings):
        self.lm_head = new_embeddings

    def get_decoder(self):
        return self.model

    def _merge_input_ids_with_time_series_features(
        self, time_series_features, inputs_embeds, input_ids, attention_mask, labels, patch_cnt
    ):
        return merge_time_series_features(
            self.config, time_series_features, inputs_embeds, input_ids, attention_mask, labels, patch_cnt
        )

    def embed_with_series(self, input_ids, inputs_embeds, timeseries, attention_mask, position_ids, labels):
        """ChatTS's forward prologue: embed the tokens and merge the series in.

        Returns ``(inputs_embeds, attention_mask, position_ids, labels, new_token_positions)``;
        series are merged only when the tokens are embedded here (not for given ``inputs_embeds``).
        """
        if inputs_embeds is not None:
            return inputs_embeds, attention_mask, position_ids, labels, None
        inputs_embeds = self.get_input_embeddings()(input_ids)
        if timeseries is None or timeseries.shape[0] == 0:
            return inputs_embeds, attention_mask, position_ids, labels, None
        features, patch_cnt = self.ts_encoder(timeseries)
        inputs_embeds = inputs_embeds.to(features.dtype)
        return self._merge_input_ids_with_time_series_features(
            features, inputs_embeds, input_ids, attention_mask, labels, patch_cnt
        )
