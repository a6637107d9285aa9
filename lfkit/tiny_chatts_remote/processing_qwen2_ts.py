"""Processor of lfkit's tiny ChatTS-14B-style model (remote code, loaded with trust_remote_code).

Honours the public ChatTS processor's contract (written by lfkit, not copied):
``__call__(text, timeseries, tokenize=...)`` replaces each bare ``<ts><ts/>`` with the current
checkpoints' scaling text ``[offset=..|scaling=..|length=..|max=..|min=..|left=..|right=..]<ts><ts/>``
for the next series and refuses a placeholder/series count mismatch; ``encode_timeseries``
returns the zero-padded ``[series, 2*max_len, 1]`` value+mask tensor in float16, as ChatTS's does.
"""

import numpy as np
import torch
from transformers.feature_extraction_utils import BatchFeature
from transformers.processing_utils import ProcessorMixin

PLACEHOLDER = "<ts><ts/>"


def sp_encoding(timeseries):
    """Shift by the mean, scale to |x| < 3 when needed; returns (value+mask column, prompt text)."""
    x = np.asarray(timeseries, dtype=np.float64)
    mean = float(np.mean(x))
    scaled = x - mean
    scale = 1.0
    if np.any(np.abs(scaled) >= 3.0):
        scale = float(np.max(np.abs(scaled)) / 3.0)
        scaled = scaled / scale
    prompt = (
        f"[offset={-mean:.4f}|scaling={scale:.4f}|length={len(x)}|max={max(timeseries):.4f}"
        f"|min={min(timeseries):.4f}|left={timeseries[0]:.4f}|right={timeseries[-1]:.4f}]{PLACEHOLDER}"
    )
    column = np.stack([scaled, np.ones_like(scaled)], axis=-1).reshape(-1, 1)
    return column, prompt


class Qwen2TSProcessor(ProcessorMixin):
    attributes = ["tokenizer"]
    tokenizer_class = "AutoTokenizer"

    def __init__(self, tokenizer=None, **kwargs):
        super().__init__(tokenizer=tokenizer)

    def __call__(self, text, timeseries=None, padding=False, padding_side="left", tokenize=True, **kwargs):
        texts = [text] if isinstance(text, str) else list(text)
        series = list(timeseries or [])
        placeholders = sum(t.count(PLACEHOLDER) for t in texts)
        if placeholders != len(series):
            raise ValueError(
                f"Mismatch between {PLACEHOLDER} placeholders ({placeholders}) "
                f"and time series ({len(series)})."
            )
        out_texts, k = [], 0
        for t in texts:
            pieces = t.split(PLACEHOLDER)
            rebuilt = pieces[0]
            for piece in pieces[1:]:
                rebuilt += sp_encoding(series[k])[1] + piece
                k += 1
            out_texts.append(rebuilt)
        if tokenize:
            outputs = dict(self.tokenizer(out_texts, padding=padding, padding_side=padding_side, **kwargs))
        else:
            outputs = {"text": out_texts}
        if series:
            outputs["timeseries"] = self.encode_timeseries(series)
        return BatchFeature(data=outputs)

    def encode_timeseries(self, timeseries=None):
        series = list(timeseries or [])
        if not series:
            return None
        columns = [sp_encoding(s)[0] for s in series]
        padded = np.zeros((len(columns), max(c.shape[0] for c in columns), 1), dtype=np.float32)
        for i, c in enumerate(columns):
            padded[i, : c.shape[0]] = c
        return torch.from_numpy(padded).half()

    @property
    def model_input_names(self):
        return list(dict.fromkeys(list(self.tokenizer.model_input_names) + ["timeseries"]))
