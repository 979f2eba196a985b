"""Serving a LoRA adapter unmerged through vLLM's CPU build: the one-adapter path against vLLM's own, and ranks."""

from __future__ import annotations

import pytest
import torch

from reasoning_rl.model import engine, served_lora

vllm_only = pytest.mark.skipif(not engine.vllm_installed(), reason="vLLM is not installed (make setup installs it)")

TOKENS, D_IN, RANK, SLOTS = 12, 64, 16, 2
SLICES = (48, 16, 16)  # a fused projection: q, k, v


def wrapper(mapping: tuple[int, ...], prefill: bool):
    """vLLM's CPU LoRA wrapper after its metadata update for one step whose tokens use the adapter ids `mapping`
    (0: none); adapter id i sits in slot i - 1."""
    from vllm.lora.layers.utils import LoRAMapping
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    served_lora.install_single_adapter_ops()
    w = PunicaWrapperCPU(max_num_batched_tokens=64, max_batches=8, device="cpu")
    w.update_metadata(LoRAMapping(mapping, mapping, is_prefill=prefill), [1, 2], max_loras=SLOTS, vocab_size=100)
    return w


def lora_linear_inputs():
    """(y, x, A per slice, B per slice): a bf16 layer output, its input, and random stacked adapter matrices."""
    torch.manual_seed(0)
    x, y = torch.randn(TOKENS, D_IN, dtype=torch.bfloat16), torch.randn(TOKENS, sum(SLICES), dtype=torch.bfloat16)
    a = tuple(torch.randn(SLOTS, 1, RANK, D_IN, dtype=torch.bfloat16) / 8 for _ in SLICES)
    b = tuple(torch.randn(SLOTS, 1, size, RANK, dtype=torch.bfloat16) / 4 for size in SLICES)
    return y, x, a, b


def lora_linear_both(mapping: tuple[int, ...], prefill: bool):
    """(y, ours, vLLM's): add_lora_linear on copies of one bf16 output y, with random stacked A and B per slice."""
    y, x, a, b = lora_linear_inputs()
    w = wrapper(mapping, prefill)
    ours, theirs = y.clone(), y.clone()
    w.add_lora_linear(ours, x, a, b, 1.0, SLICES)
    served_lora.VLLM_OPS["add_lora_linear"](w, theirs, x, a, b, 1.0, SLICES)
    return y, ours, theirs


@vllm_only
@pytest.mark.parametrize("prefill", [False, True])
def test_one_adapter_lora_linear_equals_vllms_within_bf16_rounding(prefill):
    y, ours, theirs = lora_linear_both((2,) * TOKENS, prefill)
    assert not torch.equal(theirs, y)  # the adapter moved the output
    # vLLM rounds the LoRA term to bf16 before adding it, ours adds it inside the matmul: one bf16 step apart
    torch.testing.assert_close(ours, theirs, rtol=1.6e-2, atol=1e-2)


@vllm_only
def test_a_step_with_several_adapters_runs_vllms_own_code():
    _, ours, theirs = lora_linear_both((1, 2) * (TOKENS // 2), prefill=False)
    assert torch.equal(ours, theirs)


@vllm_only
def test_a_step_without_adapter_leaves_the_output_alone():
    y, ours, theirs = lora_linear_both((0,) * TOKENS, prefill=False)
    assert torch.equal(ours, y)
    assert not torch.equal(theirs, y)  # vLLM's torch op reads index -1 as the last slot: it adds that adapter


VOCAB = 100


def lora_logits_both(mapping: tuple[int, ...]):
    """(y, ours, vLLM's): add_lora_logits on copies of bf16 logits y (one row per sampled sequence), with random
    stacked A [slots, 1, rank, hidden] and B [slots, 1, vocab, rank], as vLLM's LogitsProcessorWithLoRA holds them."""
    torch.manual_seed(1)
    x, y = torch.randn(TOKENS, D_IN, dtype=torch.bfloat16), torch.randn(TOKENS, VOCAB, dtype=torch.bfloat16)
    a = torch.randn(SLOTS, 1, RANK, D_IN, dtype=torch.bfloat16) / 8
    b = torch.randn(SLOTS, 1, VOCAB, RANK, dtype=torch.bfloat16) / 4
    w = wrapper(mapping, prefill=False)
    ours, theirs = y.clone(), y.clone()
    w.add_lora_logits(ours, x, a, b, 0.5)
    served_lora.VLLM_OPS["add_lora_logits"](w, theirs, x, a, b, 0.5)
    return y, ours, theirs


@vllm_only
def test_one_adapter_lora_logits_equal_vllms_within_bf16_rounding():
    y, ours, theirs = lora_logits_both((2,) * TOKENS)
    assert not torch.equal(theirs, y)  # the LM head's adapter moved the logits
    torch.testing.assert_close(ours, theirs, rtol=1.6e-2, atol=1e-2)


@vllm_only
def test_lora_logits_with_several_adapters_run_vllms_own_code():
    _, ours, theirs = lora_logits_both((1, 2) * (TOKENS // 2))
    assert torch.equal(ours, theirs)


def test_one_adapter_is_found_only_when_every_token_uses_it():
    assert served_lora._one_adapter(torch.tensor([3, 3, 3])) == 3
    assert served_lora._one_adapter(torch.tensor([3, 0, 3])) is None
    assert served_lora._one_adapter(torch.tensor([-1, -1])) is None  # tokens without an adapter
    assert served_lora._one_adapter(torch.tensor([], dtype=torch.long)) is None


@pytest.mark.parametrize(("rank", "served"), [(1, 1), (8, 8), (16, 16), (12, 16), (33, 64)])
def test_engine_serves_the_next_allowed_rank(monkeypatch, rank, served):
    monkeypatch.setattr(served_lora, "install_single_adapter_ops", lambda: None)
    assert served_lora.engine_kwargs(rank)["max_lora_rank"] == served


def test_a_rank_above_vllms_largest_is_refused(monkeypatch):
    monkeypatch.setattr(served_lora, "install_single_adapter_ops", lambda: None)
    with pytest.raises(ValueError, match="LoRA rank 600"):
        served_lora.engine_kwargs(600)


def test_an_adapter_above_the_engines_rank_is_refused_naming_it(tmp_path):
    (tmp_path / "adapter_config.json").write_text('{"r": 32}')
    with pytest.raises(engine.EngineError, match="rank 32"):
        served_lora.ServedLLM(llm=None, rank=16).serve(tmp_path)

