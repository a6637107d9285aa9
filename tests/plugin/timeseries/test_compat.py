"""ChatTS's transformers-4-era remote code on transformers 5, with and without lfkit's fixes.

The tiny models reproduce the public ChatTS-14B (``variant="14b"``: its own Qwen2 stack) and
ChatTS-8B (``variant="8b"``: transformers' Qwen3 plus a generation mixin) code's patterns, so
each fault shows on them exactly as on the real checkpoints (the first test pins that), and
each fix is checked against what transformers 4 computed or against a full recompute.
"""

from __future__ import annotations

import pytest
import torch
from lfkit.plugin.timeseries.compat import FIXES, ChatTSCompatError, apply_chatts_compat

from lfkit.tiny_chatts import build_tiny_chatts

VARIANTS = ("14b", "8b")
NEW_TOKENS = 8


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    return {v: build_tiny_chatts(tmp_path_factory.mktemp(f"chatts_{v}"), variant=v) for v in VARIANTS}


def load(path, fixes=FIXES):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
    apply_chatts_compat(model, fixes)
    return model


def prompts(path):
    """Two left-padded rows whose series grow them by different amounts (5 and 2 positions)."""
    from transformers import AutoProcessor

    processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
    series = [[float(i % 7) for i in range(23)], [3.0, 1.0, 2.0, 5.0, 6.0, 1.0, 2.0, 3.0, 4.0], [0.5] * 13]
    out = processor(
        text=["Compare <ts><ts/> with <ts><ts/>.", "Is <ts><ts/> flat?"],
        timeseries=series,
        padding=True,
        return_tensors="pt",
    )
    assert out["attention_mask"][1, 0] == 0, "the shorter row is left-padded"
    return {
        "input_ids": out["input_ids"],
        "attention_mask": out["attention_mask"],
        "timeseries": out["timeseries"],
    }


def generate(model, inputs):
    with torch.no_grad():
        out = model.generate(
            **inputs,
            max_new_tokens=NEW_TOKENS,
            do_sample=False,
            output_logits=True,
            return_dict_in_generate=True,
            pad_token_id=model.config.pad_token_id,
        )
    return out.sequences[:, inputs["input_ids"].shape[1] :], out.logits


def full_recompute(model, inputs, tokens):
    """Next-token logits of every step, each from one forward over the whole sequence (no cache)."""
    ids, mask, steps = inputs["input_ids"], inputs["attention_mask"], []
    with torch.no_grad():
        for step in range(tokens.shape[1]):
            out = model(input_ids=ids, attention_mask=mask, timeseries=inputs["timeseries"], use_cache=False)
            steps.append(out.logits[:, -1].float())
            ids = torch.cat([ids, tokens[:, step : step + 1]], dim=1)
            mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
    return steps


def reference_model(model):
    """The same weights in a model built directly (no meta-device load): transformers 4's buffers."""
    reference = type(model)(model.config).eval()
    reference.load_state_dict(model.state_dict())
    return reference


def test_tiny_remote_code_reproduces_the_transformers5_faults(checkpoints, tmp_path):
    from transformers.cache_utils import DynamicCache

    bare = load(checkpoints["14b"], fixes=())
    rotary = bare.model.layers[0].self_attn.rotary_emb
    fresh = reference_model(bare).model.layers[0].self_attn.rotary_emb
    assert not torch.equal(rotary.cos_cached, fresh.cos_cached)  # left uninitialised by the load
    for variant in VARIANTS:
        model = load(checkpoints[variant], fixes=())
        with pytest.raises(AttributeError, match="'list' object has no attribute 'keys'"):
            model.save_pretrained(tmp_path / variant)
        inputs = prompts(checkpoints[variant])
        with pytest.raises(AttributeError, match="seen_tokens"):
            model.prepare_inputs_for_generation(past_key_values=DynamicCache(), **inputs)
    model = load(
        checkpoints["14b"], fixes=("rotary", "cache_api")
    )  # 14B, cache API alone: its 4.x kwargs update
    inputs = prompts(checkpoints["14b"])
    with torch.no_grad():
        outputs = model(**model.prepare_inputs_for_generation(past_key_values=DynamicCache(), **inputs))
    with pytest.raises(KeyError, match="cache_position"):  # transformers 5 keeps no cache_position
        model._update_model_kwargs_for_generation(outputs, {"use_cache": True, **inputs})
    model = load(checkpoints["8b"], fixes=("cache_api",))  # 8B, cache API alone: stale positions
    inputs = prompts(checkpoints["8b"])
    tokens, logits = generate(model, inputs)
    reference = full_recompute(model, inputs, tokens)
    off = [float((a - b).abs().max()) for a, b in zip(logits, reference, strict=True)]
    assert off[0] < 1e-4 and min(off[1:]) > 1e-2, off  # the prefill is right, every decode step is not


def test_rotary_buffers_are_rebuilt_to_their_transformers4_values(checkpoints):
    model = load(checkpoints["14b"])
    reference = reference_model(model)
    for built, loaded in zip(reference.modules(), model.modules(), strict=True):
        for name in ("inv_freq", "cos_cached", "sin_cached"):
            if name in built._buffers:
                assert torch.equal(built._buffers[name], loaded._buffers[name]), name
    inputs = prompts(checkpoints["14b"])
    with torch.no_grad():
        loss = model(**inputs, labels=inputs["input_ids"], use_cache=False).loss
        expected = reference(**inputs, labels=inputs["input_ids"], use_cache=False).loss
    assert torch.isfinite(loss) and loss == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_save_pretrained_works_and_round_trips(checkpoints, tmp_path, variant):
    from safetensors.torch import load_file

    model = load(checkpoints[variant])
    assert model._tied_weights_keys == {"lm_head.weight": "model.embed_tokens.weight"}
    model.save_pretrained(tmp_path / "saved")
    saved = load_file(tmp_path / "saved" / "model.safetensors")
    assert set(saved) == set(model.state_dict()) and all(
        torch.equal(saved[k], v) for k, v in model.state_dict().items()
    )


def test_a_forward_with_use_cache_builds_its_legacy_cache(checkpoints):
    """An evaluation forward of a model loaded for inference (use_cache: true, no cache object)."""
    model = load(checkpoints["14b"])
    inputs = prompts(checkpoints["14b"])
    with torch.no_grad():
        legacy = model(**inputs, use_cache=True)  # the 14B code calls DynamicCache.from_legacy_cache(None)
        plain = model(**inputs, use_cache=False)
    assert isinstance(legacy.past_key_values, tuple) and len(legacy.past_key_values) == 2
    torch.testing.assert_close(legacy.logits, plain.logits)


@pytest.mark.parametrize("variant", VARIANTS)
def test_cached_greedy_generation_equals_a_full_recompute(checkpoints, variant):
    model = load(checkpoints[variant])
    inputs = prompts(checkpoints[variant])
    tokens, logits = generate(model, inputs)
    reference = full_recompute(model, inputs, tokens)
    for step, (cached, full) in enumerate(zip(logits, reference, strict=True)):
        torch.testing.assert_close(cached.float(), full, rtol=0, atol=1e-4, msg=f"step {step}")
        assert torch.equal(cached.argmax(-1), tokens[:, step]) and torch.equal(
            full.argmax(-1), tokens[:, step]
        )
    with torch.no_grad():  # use_cache=False through generate: a full recompute of its own
        again = model.generate(**inputs, max_new_tokens=NEW_TOKENS, do_sample=False, use_cache=False)
    assert torch.equal(again[:, inputs["input_ids"].shape[1] :], tokens)


def test_remote_code_that_moved_is_refused_in_one_line(checkpoints, monkeypatch):
    refusals = []
    model = load(checkpoints["14b"], fixes=())
    del model.model.layers[1].self_attn.rotary_emb.base
    with pytest.raises(
        ChatTSCompatError, match=r"'rotary'.*Qwen2RotaryEmbedding keeps .* no longer has \['base'\]"
    ) as e:
        apply_chatts_compat(model, ("rotary",))
    refusals.append(e.value)

    model = load(checkpoints["8b"], fixes=())
    model._tied_weights_keys = ["lm_head.weights"]
    with pytest.raises(
        ChatTSCompatError, match=r"'tied_weights'.*\['lm_head.weights'\], not parameters"
    ) as e:
        apply_chatts_compat(model, ("tied_weights",))
    refusals.append(e.value)

    def forward(self, input_ids=None, timeseries=None, attention_mask=None, labels=None, **kwargs):
        raise AssertionError("not called")

    monkeypatch.setattr(type(model), "forward", forward)
    with pytest.raises(
        ChatTSCompatError, match=r"'generation'.*forward no longer takes \['position_ids'"
    ) as e:
        apply_chatts_compat(model, ("generation",))
    refusals.append(e.value)
    assert all("\n" not in str(r) for r in refusals)
