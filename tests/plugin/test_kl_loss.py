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
