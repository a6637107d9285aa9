"""The true sequence length of a time-series sample, so ``cutoff_len`` never cuts a series.

For the encoder form a sample occupies, after ChatTS's processor and model have done their work:

    text tokens (the chat template, the messages, the processor's scaling text before each
    placeholder, and the two placeholder tokens ``<ts>`` ``<ts/>`` per series)
    + per series ``ceil(length / patch_size) - 2`` positions

because the model replaces each placeholder pair by one embedding per patch (see
:mod:`lfkit.data_tools.timeseries.chatts`). For ``--ts-format text`` the series are text and
the sample is just its text tokens.

Text tokens are exact with a tokenizer: the messages are encoded by LlamaFactory's own chat
template, with ``<ts>`` and ``<ts/>`` added as special tokens as ChatTS tokenizers have them.
Without one they are estimated as ``ceil(characters / chars_per_token)`` (an estimate, and
labelled as such everywhere it is shown).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

from lfkit.data_tools.timeseries.chatts import (
    DEFAULT_PATCH_SIZE,
    END_TOKEN,
    PLACEHOLDER,
    START_TOKEN,
    processor_text,
    series_extra_positions,
)
from lfkit.data_tools.timeseries.records import TsSample
from lfkit.data_tools.timeseries.text import DEFAULT_DECIMALS, render_text

DEFAULT_CHARS_PER_TOKEN = 4.0


class TextCounter(Protocol):
    """Counts the tokens of a conversation; ``exact`` says whether it is a real tokenizer."""

    exact: bool
    label: str

    def count(self, system: str, messages: list[dict[str, str]]) -> int: ...


class CharEstimate:
    """``ceil(chars / chars_per_token)`` for the text, plus 1 token per ``<ts>``/``<ts/>`` marker."""

    exact = False

    def __init__(self, chars_per_token: float = DEFAULT_CHARS_PER_TOKEN) -> None:
        if chars_per_token <= 0:
            raise ValueError("chars_per_token must be > 0")
        self.chars_per_token = chars_per_token
        self.label = f"estimate: characters / {chars_per_token:g}, no tokenizer"

    def count(self, system: str, messages: list[dict[str, str]]) -> int:
        texts = [system, *(m["content"] for m in messages)]
        markers = sum(t.count(PLACEHOLDER) for t in texts) * 2
        chars = sum(len(t.replace(PLACEHOLDER, "")) for t in texts)
        return math.ceil(chars / self.chars_per_token) + markers


class TemplateTokens:
    """Exact count: LlamaFactory's ``template`` encoding with ``tokenizer`` (plus ``<ts>`` tokens)."""

    exact = True

    def __init__(self, tokenizer_path: str, template: str = "qwen") -> None:
        from llamafactory.data import get_template_and_fix_tokenizer
        from llamafactory.hparams import DataArguments
        from transformers import AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(tokenizer_path, trust_remote_code=True)
        missing = [t for t in (START_TOKEN, END_TOKEN) if t not in self.tokenizer.get_vocab()]
        if missing:  # a plain Qwen tokenizer: split on the markers exactly as a ChatTS one does
            self.tokenizer.add_tokens(missing, special_tokens=True)
        self.template = get_template_and_fix_tokenizer(self.tokenizer, DataArguments(template=template))
        self.label = f"tokenizer {tokenizer_path}, template {template}"

    def count(self, system: str, messages: list[dict[str, str]]) -> int:
        pairs = self.template.encode_multiturn(self.tokenizer, messages, system or None, None)
        return sum(len(source) + len(target) for source, target in pairs)


@dataclass(frozen=True)
class Budget:
    """One sample's sequence budget; ``total = text_tokens + series_positions``."""

    text_tokens: int
    series_positions: int
    series_lengths: tuple[int, ...]

    @property
    def total(self) -> int:
        return self.text_tokens + self.series_positions


def sample_budget(
    sample: TsSample,
    counter: TextCounter,
    *,
    ts_format: str = "encoder",
    patch_size: int = DEFAULT_PATCH_SIZE,
    decimals: int = DEFAULT_DECIMALS,
    scaling_style: str = "0801",
) -> Budget:
    """The :class:`Budget` of ``sample`` in the given output form."""
    lengths = tuple(len(s) for s in sample.timeseries)
    if ts_format == "text":
        messages = render_text(sample.messages, sample.timeseries, decimals)
        return Budget(counter.count(sample.system, messages), 0, lengths)
    if ts_format != "encoder":
        raise ValueError(f"unknown ts_format {ts_format!r}")
    messages = with_scaling_text(sample, scaling_style)
    positions = sum(series_extra_positions(n, patch_size) for n in lengths)
    return Budget(counter.count(sample.system, messages), positions, lengths)


def with_scaling_text(sample: TsSample, style: str = "0801") -> list[dict[str, str]]:
    """The messages as the ChatTS processor rewrites them: scaling text before each placeholder."""
    pending = iter(sample.timeseries)
    out = []
    for message in sample.messages:
        parts = message["content"].split(PLACEHOLDER)
        text = parts[0]
        for part in parts[1:]:
            text += processor_text(next(pending), style) + part
        out.append({"role": message["role"], "content": text})
    return out
