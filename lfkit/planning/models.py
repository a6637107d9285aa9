"""Model shapes for the planner: parameter counts by kind, from config.json or a known table.

The planner needs more than a parameter count: which parameters sit in ``nn.Linear`` layers
(those bitsandbytes quantises and LoRA adapts), the size of one decoder layer (what ZeRO-3
gathers at a time), the vocabulary (the logits dominate activation memory at short
sequence lengths) and, for mixture-of-experts models, how many expert parameters a token
actually uses. Everything is computed from the fields of a Hugging Face ``config.json``, so
a local model directory gives the exact shape; the table below holds the public configs of
the models the team trains, for recipes that name a hub id the hub cannot be asked about.

In transformers 5 the Qwen3-MoE experts are fused 3-D parameters, not ``nn.Linear``: LoRA
``all`` adapts attention only, and 4-bit quantisation leaves the experts in 16-bit.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

LINEAR_NAMES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class ModelShapeError(ValueError):
    """A model whose shape the planner cannot determine."""


@dataclass(frozen=True)
class ModelShape:
    """The architecture numbers the memory and time estimates need."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    intermediate_size: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    vocab_size: int
    tie_embeddings: bool
    attention_bias: bool
    qk_norm: bool = False
    num_experts: int = 0  # 0 = dense MLP
    experts_per_token: int = 0
    moe_intermediate_size: int = 0
    ts_encoder_params: int = 0  # ChatTS time-series encoder (an MLP over patches)
    source: str = "table"
    notes: tuple[str, ...] = field(default_factory=tuple)

    # ---- parameter counts -------------------------------------------------------------
    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """(in, out) of each ``nn.Linear`` of one decoder layer, by module name."""
        h, q, kv = self.hidden_size, self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        shapes = {"q_proj": (h, q), "k_proj": (h, kv), "v_proj": (h, kv), "o_proj": (q, h)}
        if not self.num_experts:
            i = self.intermediate_size
            shapes.update(gate_proj=(h, i), up_proj=(h, i), down_proj=(i, h))
        return shapes

    @property
    def layer_linear_params(self) -> int:
        shapes = self.linear_shapes()
        bias = 0
        if self.attention_bias:
            bias = shapes["q_proj"][1] + shapes["k_proj"][1] + shapes["v_proj"][1]
        return sum(i * o for i, o in shapes.values()) + bias

    @property
    def layer_expert_params(self) -> int:
        """Fused expert and router parameters of one layer (not ``nn.Linear``)."""
        if not self.num_experts:
            return 0
        return (
            self.num_experts * 3 * self.hidden_size * self.moe_intermediate_size
            + self.num_experts * self.hidden_size
        )

    @property
    def layer_other_params(self) -> int:
        return 2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + self.layer_expert_params + self.layer_other_params

    @property
    def embedding_params(self) -> int:
        return self.vocab_size * self.hidden_size

    @property
    def lm_head_params(self) -> int:
        return 0 if self.tie_embeddings else self.vocab_size * self.hidden_size

    @property
    def total_params(self) -> int:
        return (
            self.num_layers * self.layer_params
            + self.embedding_params
            + self.lm_head_params
            + self.hidden_size  # final norm
            + self.ts_encoder_params
        )

    @property
    def quantizable_params(self) -> int:
        """Parameters in decoder ``nn.Linear`` layers: what bitsandbytes 4/8-bit stores quantised."""
        return self.num_layers * self.layer_linear_params

    @property
    def active_params_per_token(self) -> int:
        """Parameters a token's forward pass multiplies through (experts: only the routed ones)."""
        active_experts = 0
        if self.num_experts:
            active_experts = self.experts_per_token * 3 * self.hidden_size * self.moe_intermediate_size
        return (
            self.num_layers * (self.layer_linear_params + active_experts) + self.vocab_size * self.hidden_size
        )

    def lora_params(self, targets: list[str], rank: int, dora: bool = False) -> int:
        """Trainable parameters LoRA (and DoRA's magnitude vectors) adds for ``targets``."""
        shapes = self.linear_shapes()
        names = list(shapes) if not targets or "all" in targets else [t for t in targets if t in shapes]
        per_layer = sum(rank * (shapes[n][0] + shapes[n][1]) + (shapes[n][1] if dora else 0) for n in names)
        return self.num_layers * per_layer

    def unknown_lora_targets(self, targets: list[str]) -> list[str]:
        shapes = self.linear_shapes()
        return [t for t in targets if t != "all" and t not in shapes]

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(total_params=self.total_params, quantizable_params=self.quantizable_params)
        return out


def _qwen2(name, h, layers, inter, heads, kv, vocab, tie, **kw) -> ModelShape:
    return ModelShape(name, "qwen2", h, layers, inter, heads, kv, h // heads, vocab, tie, True, **kw)


def _qwen3(name, h, layers, inter, heads, kv, vocab, tie, **kw) -> ModelShape:
    return ModelShape(name, "qwen3", h, layers, inter, heads, kv, 128, vocab, tie, False, qk_norm=True, **kw)


def chatts_encoder_params(
    hidden: int, patch_size: int = 16, num_layers: int = 5, input_factor: int = 2
) -> int:
    """Parameters of ChatTS's patch MLP: Linear(patch*factor -> hidden), then (layers-1) x Linear(hidden)."""
    first = patch_size * input_factor * hidden + hidden
    return first + (num_layers - 1) * (hidden * hidden + hidden)


_CHATTS_NOTE = (
    "ChatTS encoder shape assumed (patch_size 16, 5 MLP layers at the LLM width); "
    "point model_name_or_path at a local checkpoint for the exact figure",
)

KNOWN_MODELS: dict[str, ModelShape] = {
    m.name.lower(): m
    for m in [
        _qwen2("Qwen2.5-1.5B", 1536, 28, 8960, 12, 2, 151936, True),
        _qwen2("Qwen2.5-3B", 2048, 36, 11008, 16, 2, 151936, True),
        _qwen2("Qwen2.5-7B", 3584, 28, 18944, 28, 4, 152064, False),
        _qwen2("Qwen2.5-14B", 5120, 48, 13824, 40, 8, 152064, False),
        _qwen2("Qwen2.5-32B", 5120, 64, 27648, 40, 8, 152064, False),
        _qwen3("Qwen3-8B", 4096, 36, 12288, 32, 8, 151936, False),
        _qwen3("Qwen3-14B", 5120, 40, 17408, 40, 8, 151936, False),
        ModelShape(
            "Qwen3-30B-A3B",
            "qwen3_moe",
            2048,
            48,
            6144,
            32,
            4,
            128,
            151936,
            False,
            False,
            qk_norm=True,
            num_experts=128,
            experts_per_token=8,
            moe_intermediate_size=768,
        ),
        _qwen2(
            "ChatTS-14B",
            5120,
            48,
            13824,
            40,
            8,
            152064,
            False,
            ts_encoder_params=chatts_encoder_params(5120),
            notes=_CHATTS_NOTE,
        ),
        _qwen3(
            "ChatTS-8B",
            4096,
            36,
            12288,
            32,
            8,
            151936,
            False,
            ts_encoder_params=chatts_encoder_params(4096),
            notes=_CHATTS_NOTE,
        ),
    ]
}


def _strip_variant(name: str) -> str:
    base = name.rstrip("/").split("/")[-1].lower()
    return re.sub(r"-(instruct|chat|base|hf)(-.*)?$", "", base)


def lookup_known(name: str) -> ModelShape | None:
    """A known shape for a hub id or short name (``Qwen/Qwen2.5-7B-Instruct`` -> Qwen2.5-7B)."""
    return KNOWN_MODELS.get(_strip_variant(name))


def by_size(size: str, prefer_family: str | None = None) -> ModelShape:
    """The known shape for ``--model-size`` (``14B``, ``Qwen3-14B``), preferring the recipe's family."""
    direct = lookup_known(size)
    if direct is not None:
        return direct
    label = size.strip().upper()
    if not re.fullmatch(r"\d+(\.\d+)?B", label):
        raise ModelShapeError(
            f"--model-size '{size}' is neither a size like 14B nor a known model ({known_names()})"
        )
    matches = [m for m in KNOWN_MODELS.values() if re.search(rf"-{re.escape(label)}(-|$)", m.name.upper())]
    if not matches:
        raise ModelShapeError(f"no known model of size {label}; known: {known_names()}")
    if prefer_family:
        family = prefer_family.lower().split("-")[0]
        same = [m for m in matches if m.name.lower().startswith(family)]
        if same:
            return same[0]
    return matches[0]


def known_names() -> str:
    return ", ".join(m.name for m in KNOWN_MODELS.values())


def from_config(config: dict, name: str, source: str) -> ModelShape:
    """A shape from a Hugging Face config dict (multimodal configs: their ``text_config``)."""
    cfg = dict(config.get("text_config") or {}) or config
    missing = [
        k
        for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        if cfg.get(k) is None
    ]
    if missing:
        raise ModelShapeError(f"{source}: config lacks {', '.join(missing)}")
    model_type = str(config.get("model_type") or cfg.get("model_type") or "unknown")
    h, heads = int(cfg["hidden_size"]), int(cfg["num_attention_heads"])
    experts = int(cfg.get("num_experts") or cfg.get("num_local_experts") or 0)
    inter = cfg.get("intermediate_size")
    if inter is None and not experts:
        raise ModelShapeError(f"{source}: config lacks intermediate_size")
    # Qwen2 projections always carry a q/k/v bias; other families say so in attention_bias.
    bias = bool(cfg.get("attention_bias", "qwen2" in model_type))
    ts = config.get("ts") or {}
    ts_params = 0
    if ts:
        factor = 2 if ts.get("use_position_idx") or not ts.get("use_position_embedding") else 1
        ts_params = chatts_encoder_params(
            int(ts.get("hidden_size", h)), int(ts.get("patch_size", 16)), int(ts.get("num_layers", 5)), factor
        )
    return ModelShape(
        name=name,
        model_type=model_type,
        hidden_size=h,
        num_layers=int(cfg["num_hidden_layers"]),
        intermediate_size=int(inter or 0),
        num_heads=heads,
        num_kv_heads=int(cfg.get("num_key_value_heads") or heads),
        head_dim=int(cfg.get("head_dim") or h // heads),
        vocab_size=int(cfg["vocab_size"]),
        tie_embeddings=bool(cfg.get("tie_word_embeddings", config.get("tie_word_embeddings", False))),
        attention_bias=bias,
        qk_norm=model_type.startswith("qwen3"),
        num_experts=experts,
        experts_per_token=int(cfg.get("num_experts_per_tok") or 0),
        moe_intermediate_size=int(cfg.get("moe_intermediate_size") or 0),
        ts_encoder_params=ts_params,
        source=source,
    )


def resolve_model(model_name_or_path: str | None, model_size: str | None = None) -> ModelShape:
    """The shape for a recipe: ``--model-size`` wins, then a local config.json, then the table."""
    if model_size:
        return by_size(model_size, prefer_family=_strip_variant(model_name_or_path or ""))
    if not model_name_or_path:
        raise ModelShapeError("the recipe has no model_name_or_path; pass --model-size")
    path = Path(model_name_or_path).expanduser()
    config_path = path / "config.json"
    if config_path.is_file():
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as err:
            raise ModelShapeError(f"{config_path}:{err.lineno}: not valid JSON ({err.msg})") from None
        return from_config(config, path.name, str(config_path))
    known = lookup_known(model_name_or_path)
    if known is None:
        raise ModelShapeError(
            f"unknown model '{model_name_or_path}' (no local config.json); pass --model-size "
            f"with a size or one of: {known_names()}"
        )
    return known


def billions(params: int) -> float:
    return math.floor(params / 1e8 + 0.5) / 10
