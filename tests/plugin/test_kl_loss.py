"""kl_beta: the KL term's arithmetic, and real training runs on the tiny model.

The arithmetic tests check :mod:`lfkit.plugin.kl_loss` against torch.distributions. The training
tests start real ``llamafactory-cli train`` subprocesses and then measure everything they assert
with their own code (the trained and reference models loaded from disk, KL computed here), never
with the trainer's.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import tiny_recipe
from lfkit.plugin.kl_loss import IGNORE_INDEX, response_token_kl
from torch.distributions import Categorical, kl_divergence

# ----------------------------------------------------------------------------------------------
# The KL term's arithmetic


def _batch(seed: int = 0, vocab: int = 11):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(2, 6, vocab, generator=g)
    ref_logits = torch.randn(2, 6, vocab, generator=g)
    labels = torch.randint(0, vocab, (2, 6), generator=g)
    labels[0, :3] = IGNORE_INDEX  # prompt of sample 0
    labels[1, :2] = IGNORE_INDEX  # prompt of sample 1
    labels[1, 5] = IGNORE_INDEX  # padding of sample 1
    return logits, ref_logits, labels


def test_kl_is_forward_kl_on_shifted_response_positions_only():
    logits, ref_logits, labels = _batch()
    kl_sum, n = response_token_kl(logits, ref_logits, labels)

    expected, count = 0.0, 0
    for b in range(labels.shape[0]):
        for t in range(labels.shape[1] - 1):
            if labels[b, t + 1] != IGNORE_INDEX:  # logits at t predict the label at t + 1
                p_ref, p_theta = Categorical(logits=ref_logits[b, t]), Categorical(logits=logits[b, t])
                expected += kl_divergence(p_ref, p_theta).item()  # KL(p_ref || p_theta)
                count += 1
    assert count == 3 + 3 == int(n)
    assert kl_sum.item() == pytest.approx(expected, rel=1e-5)


def test_kl_ignores_prompt_and_padding_logits():
    logits, ref_logits, labels = _batch()
    base, _ = response_token_kl(logits, ref_logits, labels)
    changed = logits.clone()
    changed[0, :2] += 5 * torch.randn_like(changed[0, :2])  # positions that predict prompt labels
    changed[1, 4:] += 5 * torch.randn_like(changed[1, 4:])  # predicts padding, and the last position
    again, _ = response_token_kl(changed, ref_logits, labels)
    assert again.item() == pytest.approx(base.item(), rel=1e-6)


def test_kl_is_zero_for_identical_models_and_positive_otherwise():
    logits, ref_logits, labels = _batch()
    same, _ = response_token_kl(logits, logits.clone(), labels)
    other, _ = response_token_kl(logits, ref_logits, labels)
    assert abs(same.item()) < 1e-6
    assert other.item() > 0.1


def test_kl_gradient_is_distillation_towards_the_reference():
    """d/dlogits of beta * KL(p_ref || p_theta) is beta * (p_theta - p_ref) at each response position."""
    logits, ref_logits, labels = _batch()
    logits.requires_grad_(True)
    kl_sum, _ = response_token_kl(logits, ref_logits, labels)
    (0.3 * kl_sum).backward()
    b, t = 0, 3  # predicts labels[0, 4], a response token
    expected = 0.3 * (logits[b, t].softmax(-1) - ref_logits[b, t].softmax(-1))
    assert torch.allclose(logits.grad[b, t], expected.detach(), atol=1e-6)
    assert torch.count_nonzero(logits.grad[0, :2]) == 0  # prompt positions get no gradient


def test_sum_over_micro_batches_over_window_tokens_is_the_window_token_mean():
    """The num_items_in_batch normalisation: gradient accumulation weighs every response token equally."""
    logits, ref_logits, labels = _batch()
    full_sum, full_n = response_token_kl(logits, ref_logits, labels)
    parts = [response_token_kl(logits[i : i + 1], ref_logits[i : i + 1], labels[i : i + 1]) for i in range(2)]
    num_items = sum(int(n) for _, n in parts)
    assert num_items == int(full_n)
    window = sum(s.item() / num_items for s, _ in parts)
    assert window == pytest.approx(full_sum.item() / int(full_n), rel=1e-6)


def _dense(logits, ref_logits, labels, ce_weight, kl_weight):
    """The unchunked reference formula, differentiated by autograd."""
    mask = labels[:, 1:] != IGNORE_INDEX
    logp = torch.log_softmax(logits[:, :-1][mask].float(), dim=-1)
    logq = torch.log_softmax(ref_logits[:, :-1][mask].float(), dim=-1)
    ce = torch.nn.functional.nll_loss(logp, labels[:, 1:][mask], reduction="sum")
    kl = torch.nn.functional.kl_div(logp, logq, reduction="sum", log_target=True)
    return ce_weight * ce + kl_weight * kl, ce, kl


@pytest.mark.parametrize("chunk", [1, 4, 1000])
@pytest.mark.parametrize("ce_weight,kl_weight", [(1.0, 0.3), (0.0, 1.0), (1.0, 2.0)])
def test_chunked_loss_and_gradient_equal_the_dense_ones(chunk, ce_weight, kl_weight):
    from lfkit.plugin.kl_loss import ResponseRows, response_loss

    logits, ref_logits, labels = _batch(seed=3, vocab=50)
    rows = ResponseRows.of(labels)
    ref_rows = ref_logits.reshape(-1, 50)[rows.rows]
    chunked_logits = logits.clone().requires_grad_(True)
    sums = response_loss(
        chunked_logits, rows, ref_rows, lambda h: h, ce_weight=ce_weight, kl_weight=kl_weight, chunk=chunk
    )
    (2.5 * sums.objective).backward()

    dense_logits = logits.clone().requires_grad_(True)
    objective, ce, kl = _dense(dense_logits, ref_logits, labels, ce_weight, kl_weight)
    (2.5 * objective).backward()
    assert sums.objective.item() == pytest.approx(objective.item(), rel=1e-6)
    assert sums.ce_sum.item() == pytest.approx(ce.item(), rel=1e-6)
    assert sums.kl_sum.item() == pytest.approx(kl.item(), rel=1e-5)
    assert torch.allclose(chunked_logits.grad, dense_logits.grad, atol=1e-6)


def test_chunked_loss_in_bf16_follows_the_float32_one():
    """Half-precision logits are upcast per chunk; the gradient comes back in the logits' dtype."""
    from lfkit.plugin.kl_loss import ResponseRows, response_loss

    logits, ref_logits, labels = _batch(seed=4, vocab=64)
    rows = ResponseRows.of(labels)
    half = logits.bfloat16().requires_grad_(True)
    ref_rows = ref_logits.bfloat16().reshape(-1, 64)[rows.rows]
    sums = response_loss(half, rows, ref_rows, lambda h: h, ce_weight=1.0, kl_weight=0.5, chunk=2)
    sums.objective.backward()
    dense_logits = logits.bfloat16().float().requires_grad_(True)
    objective, _, _ = _dense(dense_logits, ref_logits.bfloat16().float(), labels, 1.0, 0.5)
    objective.backward()
    assert half.grad.dtype == torch.bfloat16
    assert sums.objective.item() == pytest.approx(objective.item(), rel=1e-5)
    assert torch.allclose(half.grad.float(), dense_logits.grad, atol=1e-2)


def test_chunked_loss_keeps_nothing_of_size_tokens_times_vocab_but_the_logits_gradient():
    """What the loss holds between forward and backward: only the logits' own gradient buffer.

    The dense formula keeps several float32 [response tokens x vocab] tensors for backward (the
    log-probabilities of both models, the KL terms); the chunked one keeps none of them.
    """
    from lfkit.plugin.kl_loss import ResponseRows, response_loss

    g = torch.Generator().manual_seed(0)
    vocab = 4096
    logits = torch.randn(2, 64, vocab, generator=g, requires_grad=True)
    labels = torch.randint(0, vocab, (2, 64), generator=g)
    labels[:, :8] = IGNORE_INDEX
    ref = torch.randn(2, 64, vocab, generator=g)
    rows = ResponseRows.of(labels)
    ref_rows = ref.reshape(-1, vocab)[rows.rows]

    def saved_bytes(fn) -> int:
        total = 0

        def pack(t):
            nonlocal total
            total += t.numel() * t.element_size() if t is not logits else 0  # the input is not a copy
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            fn()
        return total

    dense = saved_bytes(lambda: _dense(logits, ref, labels, 1.0, 0.1)[0])
    chunked = saved_bytes(
        lambda: response_loss(logits, rows, ref_rows, lambda h: h, ce_weight=1.0, kl_weight=0.1, chunk=16)
    )
    n_by_vocab = len(rows) * vocab * 4
    assert dense >= 2 * n_by_vocab
    assert chunked < n_by_vocab / 100


# ----------------------------------------------------------------------------------------------
# The reference forward


def _qwen2(seed: int, **config):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    cfg = dict(vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    cfg.update(num_attention_heads=4, num_key_value_heads=2, pad_token_id=0, use_cache=True, **config)
    return Qwen2ForCausalLM(Qwen2Config(**cfg))


def _text_batch(vocab: int = 96):
    g = torch.Generator().manual_seed(7)
    input_ids = torch.randint(1, vocab, (2, 10), generator=g)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[1, 8:] = 0  # right padding
    labels = input_ids.clone()
    labels[:, :4] = IGNORE_INDEX
    labels[1, 8:] = IGNORE_INDEX
    return {"input_ids": input_ids, "attention_mask": attention_mask}, labels


def test_frozen_reference_logits_per_chunk_are_the_reference_models_logits():
    from lfkit.plugin.kl_loss import ResponseRows
    from lfkit.plugin.kl_reference import Reference

    policy, ref = _qwen2(0), _qwen2(1)
    inputs, labels = _text_batch()
    rows = ResponseRows.of(labels)
    reference = Reference(ref.eval())
    hidden = reference.hidden_states(policy.train(), inputs, rows.rows)
    assert hidden.shape == (len(rows), 32)
    with torch.no_grad():
        expected = ref(**inputs).logits.reshape(-1, 96)[rows.rows]
    chunks = torch.cat([reference.logits(hidden[i : i + 3]) for i in range(0, len(rows), 3)])
    assert torch.allclose(chunks, expected, atol=1e-5)


def test_adapter_reference_runs_without_noise_dropout_or_cache_and_leaves_the_modes_as_they_were():
    """NEFTune noise, attention dropout and LoRA dropout stay on the trained model's forward only."""
    from lfkit.plugin.kl_loss import ResponseRows
    from lfkit.plugin.kl_reference import Reference
    from peft import LoraConfig, get_peft_model
    from transformers.integrations.neftune import activate_neftune

    base = _qwen2(0, attention_dropout=0.5)
    model = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.5))
    with torch.no_grad():  # adapters that change the model, so that "disabled" is visible
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_()
    inputs, labels = _text_batch()
    rows = ResponseRows.of(labels)
    with torch.no_grad(), model.disable_adapter():
        clean = base.eval().model(**inputs).last_hidden_state.reshape(-1, 32)[rows.rows]

    model.train()
    model.base_model.model.model.layers[1].eval()  # a module the run keeps in eval mode on purpose
    modes = {name: m.training for name, m in model.named_modules()}
    activate_neftune(model, neftune_noise_alpha=50.0)
    caches = []
    base.register_forward_hook(lambda _m, _a, out: caches.append(out.past_key_values))

    reference = Reference(None)
    first = reference.hidden_states(model, inputs, rows.rows)
    second = reference.hidden_states(model, inputs, rows.rows)
    assert torch.equal(first, second)  # no random noise or dropout
    assert torch.allclose(first, clean, atol=1e-5)  # the base model, adapters off
    assert caches == [None, None]  # use_cache=False although the config enables it
    assert {name: m.training for name, m in model.named_modules()} == modes
    # the trained model's own forward still has its noise (so the reference's absence of it is meaningful)
    with torch.no_grad():
        a, b = model(**inputs).logits, model(**inputs).logits
    assert not torch.equal(a, b)


def test_reference_refuses_a_model_whose_logits_are_not_its_head_on_its_hidden_states():
    """Gemma 2 soft-caps its logits in its forward: its output layer alone would give a wrong reference."""
    from lfkit.plugin.errors import ConfigError
    from lfkit.plugin.kl_loss import ResponseRows
    from lfkit.plugin.kl_reference import Reference
    from transformers import Gemma2Config, Gemma2ForCausalLM

    torch.manual_seed(0)
    config = Gemma2Config(
        vocab_size=96, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, head_dim=16, final_logit_softcapping=1.0, pad_token_id=0,
    )  # fmt: skip
    inputs, labels = _text_batch()
    with pytest.raises(ConfigError, match="post-processes them"):
        Reference(Gemma2ForCausalLM(config).eval()).hidden_states(
            _qwen2(0), inputs, ResponseRows.of(labels).rows
        )


def test_pissa_with_the_adapters_disabled_reference_is_refused():
    """With PiSSA the model without its adapters is the residual, not the base model."""
    import llamafactory.hparams  # noqa: F401  (LlamaFactory's parser first, as in a real run)
    from lfkit.plugin.hparams import LfkitFinetuningArguments

    with pytest.raises(ValueError, match="kl_beta with pissa_init needs kl_ref_model"):
        LfkitFinetuningArguments(stage="sft", finetuning_type="lora", pissa_init=True, kl_beta=0.1)
    LfkitFinetuningArguments(
        stage="sft", finetuning_type="lora", pissa_init=True, kl_beta=0.1, kl_ref_model="x"
    )
    LfkitFinetuningArguments(stage="sft", finetuning_type="lora", pissa_init=True)


@pytest.mark.parametrize("other_loss", ["use_asft_loss", "use_dft_loss", "use_eaft_loss"])
def test_kl_beta_refuses_the_other_sft_loss_variants(other_loss):
    import llamafactory.hparams  # noqa: F401  (LlamaFactory's parser first, as in a real run)
    from lfkit.plugin.hparams import LfkitFinetuningArguments
    from lfkit.plugin.kl_loss import check_kl_args

    check_kl_args(LfkitFinetuningArguments(stage="sft", kl_beta=0.1))
    with pytest.raises(ValueError, match=f"kl_beta .* cannot be combined with {other_loss}"):
        check_kl_args(LfkitFinetuningArguments(stage="sft", kl_beta=0.1, **{other_loss: True}))


def test_kl_beta_refuses_time_series_models(tmp_path):
    """ChatTS logits are longer than the labels (patch positions): refused, not mis-aligned."""
    from lfkit.plugin.hparams import LfkitFinetuningArguments
    from lfkit.plugin.kl_loss import check_kl_args
    from transformers import AutoModelForCausalLM

    from lfkit.tiny_chatts import build_tiny_chatts

    model = AutoModelForCausalLM.from_pretrained(build_tiny_chatts(tmp_path), trust_remote_code=True)
    with pytest.raises(ValueError, match="not supported for time-series"):
        check_kl_args(LfkitFinetuningArguments(stage="sft", kl_beta=0.1), model)


# ----------------------------------------------------------------------------------------------
# Real training runs on the tiny model (5 runs in all)

_TRAIN = [
    "the weather is nice today",
    "I will go to the market",
    "please close the door",
    "the cat sleeps on the window",
    "we should talk about the plan",
    "my friend likes the story",
    "the dog runs in the park",
    "you answer the question well",
    "the values rise and fall",
    "thank you for the reply",
    "the fox jumps over the dog",
    "how are you today",
    "I like this scene",
    "tell me about the trend",
    "the spike is an anomaly",
    "what would you like",
]
_HELD_OUT = [
    "the bird sings in the tree",
    "open the window please",
    "we will read the book",
    "the river flows",
]


def _pirate(sentence: str, i: int) -> list[dict]:
    """Training pair i of the style; rows 0-1 have long responses and rows 2-3 short ones, so the two
    micro-batches of the first accumulation window differ in response tokens."""
    return [
        {"role": "user", "content": f"Say it like a pirate: {sentence}."},
        {"role": "assistant", "content": "Arr! " * (6, 6, 1, 1)[i % 4] + sentence + ", matey!"},
    ]


def _write_style_data(dataset_dir: Path) -> None:
    dataset_dir.mkdir(parents=True, exist_ok=True)
    rows = [{"messages": _pirate(s, i)} for i, s in enumerate(_TRAIN)]
    (dataset_dir / "style.json").write_text(json.dumps(rows))
    tags = {"role_tag": "role", "content_tag": "content", "user_tag": "user", "assistant_tag": "assistant"}
    info = {
        "style": {"file_name": "style.json", "formatting": "sharegpt", "columns": {"messages": "messages"}}
    }
    info["style"]["tags"] = tags
    (dataset_dir / "dataset_info.json").write_text(json.dumps(info))


def _encoded(tokenizer, conversations: list[list[dict]]) -> list[tuple[list[int], list[int]]]:
    """(prompt ids, response ids) per conversation, encoded by LlamaFactory's qwen template as in training."""
    from llamafactory.data import get_template_and_fix_tokenizer
    from llamafactory.hparams import DataArguments

    template = get_template_and_fix_tokenizer(tokenizer, DataArguments(template="qwen"))
    return [template.encode_oneturn(tokenizer, messages) for messages in conversations]


def _load(model_dir: Path, adapter_dir: Path | None = None):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if adapter_dir is not None:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter_dir)
    return model.eval()


@torch.no_grad()
def _response_logprobs(model, encoded) -> list[torch.Tensor]:
    """Log-probabilities at the positions that predict each response token ([n_response, vocab])."""
    out = []
    for prompt, response in encoded:
        logits = model(torch.tensor([prompt + response])).logits[0].float()
        out.append(logits[len(prompt) - 1 : -1].log_softmax(-1))
    return out


def _mean_forward_kl(ref_logps, logps) -> float:
    """KL(p_ref || p) averaged over all response tokens, computed here from scratch."""
    total = sum((r.exp() * (r - p)).sum().item() for r, p in zip(ref_logps, logps, strict=True))
    return total / sum(r.shape[0] for r in ref_logps)


def _held_out_kl(base_dir: Path, trained_dir: Path, adapter: bool = False) -> float:
    from transformers import AutoTokenizer

    encoded = _encoded(AutoTokenizer.from_pretrained(base_dir), [_pirate(s, 0) for s in _HELD_OUT])
    base = _response_logprobs(_load(base_dir), encoded)
    trained = _response_logprobs(_load(base_dir, trained_dir) if adapter else _load(trained_dir), encoded)
    return _mean_forward_kl(base, trained)


def _train_log(output_dir: Path) -> list[dict]:
    lines = (output_dir / "trainer_log.jsonl").read_text().splitlines()
    return [row for row in map(json.loads, lines) if "loss" in row]


def _state_log(output_dir: Path) -> list[dict]:
    state = json.loads((output_dir / "trainer_state.json").read_text())
    return [row for row in state["log_history"] if "loss" in row]


def _check_kl_logging(output_dir: Path, beta: float, steps: int) -> list[dict]:
    """ce_loss and kl_loss are on every training line of both logs, and loss = ce_loss + beta * kl_loss."""
    rows = _train_log(output_dir)
    assert [r["current_steps"] for r in rows] == list(range(1, steps + 1))
    state_rows = _state_log(output_dir)
    for row, state_row in zip(rows, state_rows, strict=True):
        assert row["ce_loss"] == state_row["ce_loss"] and row["kl_loss"] == state_row["kl_loss"]
        assert row["loss"] == pytest.approx(row["ce_loss"] + beta * row["kl_loss"], rel=1e-5)
        assert row["kl_loss"] >= -1e-6 and math.isfinite(row["ce_loss"])
    return rows


@pytest.mark.train
def test_full_kl_beta_zero_is_stock_and_kl_beta_keeps_the_model_closer_to_the_base(
    tiny_model, run_train, tmp_path
):
    """Full fine-tuning at a deliberately high lr, so the model drifts far from the base without kl_beta."""
    _write_style_data(tmp_path / "data")

    def recipe(name: str, **keys):
        return tiny_recipe(
            tiny_model, tmp_path / "data", "style", tmp_path / name,
            finetuning_type="full", lora_target=None, lora_rank=None,
            learning_rate=5.0e-3, max_steps=20, save_strategy="no", **keys,
        )  # fmt: skip

    stock = run_train(recipe("stock"), env={"LFKIT_DISABLE_PLUGIN": "1"}).check()
    plain = run_train(recipe("plain", kl_beta=0.0)).check()
    regularised = run_train(recipe("kl", kl_beta=1.0)).check()  # reference: a frozen copy of the base

    # kl_beta 0 is LlamaFactory's own training: identical per-step losses and trainer_log.jsonl keys.
    stock_rows, plain_rows = _train_log(stock.output_dir), _train_log(plain.output_dir)
    assert len(stock_rows) == 20
    assert [r["loss"] for r in plain_rows] == [r["loss"] for r in stock_rows]
    assert [set(r) for r in plain_rows] == [set(r) for r in stock_rows]
    assert not any("kl_loss" in r for r in _state_log(plain.output_dir))

    rows = _check_kl_logging(regularised.output_dir, beta=1.0, steps=20)
    assert rows[0]["kl_loss"] == pytest.approx(0.0, abs=1e-6)  # first forward: model == reference
    assert rows[-1]["kl_loss"] > 0.05
    assert rows[0]["ce_loss"] == pytest.approx(stock_rows[0]["loss"], rel=1e-6)  # same data, same weights

    kl_plain = _held_out_kl(tiny_model, plain.output_dir)
    kl_regularised = _held_out_kl(tiny_model, regularised.output_dir)
    print(f"held-out KL(base || trained): kl_beta 0 -> {kl_plain:.4f}, kl_beta 1 -> {kl_regularised:.4f}")
    assert kl_plain > 0.5  # the unregularised run really moved away from the base
    assert kl_regularised < 0.5 * kl_plain


@pytest.mark.train
def test_lora_reference_is_the_model_with_adapters_disabled(tiny_model, run_train, tmp_path):
    _write_style_data(tmp_path / "data")
    run = run_train(
        tiny_recipe(
            tiny_model,
            tmp_path / "data",
            "style",
            tmp_path / "lora",
            learning_rate=3.0e-2,
            max_steps=8,
            kl_beta=0.1,
        )
    ).check()

    rows = _check_kl_logging(run.output_dir, beta=0.1, steps=8)
    # LoRA starts as the base (B = 0): no KL at the first step; afterwards the adapters move the model
    # while the reference (adapters disabled) stays the base, so the KL becomes positive.
    assert rows[0]["kl_loss"] == pytest.approx(0.0, abs=1e-7)
    assert min(r["kl_loss"] for r in rows[2:]) > 1e-4
    assert (run.output_dir / "adapter_model.safetensors").exists()
    assert _held_out_kl(tiny_model, run.output_dir, adapter=True) > 1e-4


@pytest.mark.train
def test_kl_ref_model_is_the_reference_and_kl_is_normalised_like_cross_entropy(
    tiny_model, run_train, tmp_path
):
    """A different model as kl_ref_model, two accumulation steps with unequal token counts.

    At step 1 the logged values come from the untouched weights, so they can be recomputed here:
    the token-weighted means over the whole accumulation window, as LlamaFactory's cross-entropy.
    """
    from transformers import AutoTokenizer

    from lfkit.tiny_model import build_tiny_model

    # Same tokenizer, other weights, and a final norm scaled up so that its distributions are peaked and
    # disagree with the base's by several nats per token, more on some responses than on others.
    reference = build_tiny_model(tmp_path / "reference", seed=1)
    sharp = _load(reference)
    with torch.no_grad():
        sharp.model.norm.weight.mul_(10.0)
    sharp.save_pretrained(reference)
    _write_style_data(tmp_path / "data")
    beta = 0.5
    run = run_train(
        tiny_recipe(
            tiny_model,
            tmp_path / "data",
            "style",
            tmp_path / "full",
            finetuning_type="full",
            lora_target=None,
            lora_rank=None,
            per_device_train_batch_size=2,
            gradient_accumulation_steps=2,
            disable_shuffling=True,
            learning_rate=1.0e-3,
            max_steps=3,
            kl_beta=beta,
            kl_ref_model=str(reference),
        )
    ).check()
    rows = _check_kl_logging(run.output_dir, beta=beta, steps=3)

    encoded = _encoded(
        AutoTokenizer.from_pretrained(tiny_model), [_pirate(s, i) for i, s in enumerate(_TRAIN[:4])]
    )
    base = _response_logprobs(_load(tiny_model), encoded)
    ref = _response_logprobs(_load(reference), encoded)
    targets = [torch.tensor(response) for _, response in encoded]
    n_tokens = [len(t) for t in targets]
    ce = [-lp.gather(1, t[:, None]).sum().item() for lp, t in zip(base, targets, strict=True)]
    kl = [(r.exp() * (r - p)).sum().item() for r, p in zip(ref, base, strict=True)]

    window_ce, window_kl = sum(ce) / sum(n_tokens), sum(kl) / sum(n_tokens)
    assert rows[0]["ce_loss"] == pytest.approx(window_ce, rel=1e-4)
    assert rows[0]["kl_loss"] == pytest.approx(window_kl, rel=1e-4)
    assert window_kl > 1.0  # the reference really is the other model, not the base

    # The check has teeth: a per-micro-batch mean would give a different number here.
    mean_of_micro_means = (sum(kl[:2]) / sum(n_tokens[:2]) + sum(kl[2:]) / sum(n_tokens[2:])) / 2
    assert abs(mean_of_micro_means - window_kl) > 1e-3 * window_kl


_PROBE = """
import json, sys
import torch

seen = []


def record(module, args, output):
    # every no-grad call of a whole causal LM (peft's PeftModelForCausalLM included) during training is
    # a reference forward
    if torch.is_grad_enabled() or not type(module).__name__.endswith("ForCausalLM"):
        return
    training = sorted({type(m).__name__ for m in module.modules() if m.training})
    seen.append({"training": training, "cache": getattr(output, "past_key_values", None) is not None})


torch.nn.modules.module.register_module_forward_hook(record)
from llamafactory.train.tuner import run_exp

out = sys.argv.pop()  # the recipe stays sys.argv[1], read as llamafactory-cli train reads it
run_exp()
with open(out, "w") as f:
    json.dump(seen, f)
"""


@pytest.mark.train
@pytest.mark.parametrize(
    "keys",
    [
        {"neftune_noise_alpha": 5.0, "lora_dropout": 0.1},  # reference: this model, adapters disabled
        {"finetuning_type": "full", "lora_target": None, "lora_rank": None},  # reference: a frozen copy
    ],
    ids=["adapters-disabled", "frozen-copy"],
)
def test_reference_forward_runs_in_eval_mode_without_kv_cache(tiny_model, tmp_path, keys):
    """Seen from outside, in a real run: no reference forward has a module in train mode (dropout,
    NEFTune's noise hook) or builds a KV cache."""
    import subprocess
    import sys

    import yaml
    from conftest import train_env

    _write_style_data(tmp_path / "data")
    recipe = tiny_recipe(tiny_model, tmp_path / "data", "style", tmp_path / "out", max_steps=2, kl_beta=0.1)
    recipe = {k: v for k, v in {**recipe, **keys}.items() if v is not None}
    (tmp_path / "recipe.yaml").write_text(yaml.safe_dump(recipe))
    (tmp_path / "probe.py").write_text(_PROBE)
    cmd = [
        sys.executable,
        str(tmp_path / "probe.py"),
        str(tmp_path / "recipe.yaml"),
        str(tmp_path / "seen.json"),
    ]
    proc = subprocess.run(cmd, env=train_env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    seen = json.loads((tmp_path / "seen.json").read_text())
    assert len(seen) == 2  # one reference forward per step
    assert seen == [{"training": [], "cache": False}] * 2


@pytest.mark.train
def test_mixture_of_experts_router_aux_loss_stays_in_the_loss(tiny_model, run_train, tmp_path):
    """The model runs without labels under kl_beta; a MoE model's router aux loss must still count."""
    from transformers import AutoTokenizer, Qwen3MoeConfig, Qwen3MoeForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = Qwen3MoeConfig(
        vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, moe_intermediate_size=32,
        num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16, num_experts=4,
        num_experts_per_tok=2, pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None, tie_word_embeddings=True,
    )  # fmt: skip
    torch.manual_seed(0)
    Qwen3MoeForCausalLM(config).save_pretrained(tmp_path / "moe")
    tokenizer.save_pretrained(tmp_path / "moe")
    _write_style_data(tmp_path / "data")

    def recipe(name, **keys):
        return tiny_recipe(
            tmp_path / "moe", tmp_path / "data", "style", tmp_path / name, max_steps=1,
            disable_shuffling=True, moe_aux_loss_coef=1.0, **keys,
        )  # fmt: skip

    stock = run_train(recipe("stock"), env={"LFKIT_DISABLE_PLUGIN": "1"}).check()
    regularised = run_train(recipe("kl", kl_beta=0.1)).check()
    (row,) = _check_kl_logging(regularised.output_dir, beta=0.1, steps=1)
    # LoRA starts at the base: the step-1 cross-entropy part is stock's loss, router aux loss included
    assert row["ce_loss"] == pytest.approx(_train_log(stock.output_dir)[0]["loss"], rel=1e-5)


@pytest.mark.train
def test_pissa_with_kl_ref_model_measures_the_kl_to_the_real_base(tiny_model, run_train, tmp_path):
    """PiSSA's model at step 1 is the base model: against the base as kl_ref_model its KL is ~0."""
    _write_style_data(tmp_path / "data")
    run = run_train(
        tiny_recipe(
            tiny_model,
            tmp_path / "data",
            "style",
            tmp_path / "out",
            max_steps=2,
            pissa_init=True,
            kl_beta=0.5,
            kl_ref_model=str(tiny_model),
        )  # fmt: skip
    ).check()
    rows = _check_kl_logging(run.output_dir, beta=0.5, steps=2)
    assert rows[0]["kl_loss"] == pytest.approx(0.0, abs=1e-6)
