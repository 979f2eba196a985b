"""Serving a LoRA adapter unmerged through vLLM's CPU build: the one-adapter ops against vLLM's own, and ranks."""

from __future__ import annotations

import pytest
import torch

from reasoning_rl.model import engine, served_lora

vllm_only = pytest.mark.skipif(not engine.vllm_installed(), reason="vLLM is not installed (make setup installs it)")

TOKENS, D_IN, RANK, D_OUT, SLOTS = 12, 64, 16, 48, 2


@pytest.fixture(scope="module")
def ops():
    """(ours, vLLM's) for each replaced op."""
    from vllm.lora.ops.torch_ops import lora_ops

    served_lora.install_single_adapter_ops()
    return {name: (getattr(lora_ops, name), original) for name, original in served_lora.VLLM_OPS.items()}


def run_both(ops, name, make_out, *args):
    """Each op on its own copy of the same output buffer; both buffers back."""
    ours, theirs = ops[name]
    out_ours, out_theirs = make_out(), make_out()
    ours(args[0], args[1], out_ours, *args[2:])
    theirs(args[0], args[1], out_theirs, *args[2:])
    return out_ours, out_theirs


def indices(kind: str) -> torch.Tensor:
    return {"one": torch.ones(TOKENS, dtype=torch.long),
            "mixed": torch.tensor([0, 1] * (TOKENS // 2))}[kind]


@vllm_only
@pytest.mark.parametrize("kind", ["one", "mixed"])
def test_shrink_equals_vllms(ops, kind):
    torch.manual_seed(0)
    x, a = torch.randn(TOKENS, D_IN, dtype=torch.bfloat16), torch.randn(SLOTS, 1, RANK, D_IN, dtype=torch.bfloat16)
    ours, theirs = run_both(ops, "bgmv_shrink", lambda: torch.zeros(TOKENS, RANK), x, a, indices(kind), 0.5)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)  # fp32 buffer: only summation order differs


@vllm_only
@pytest.mark.parametrize("kind", ["one", "mixed"])
@pytest.mark.parametrize("add_inputs", [True, False])
def test_expand_equals_vllms(ops, kind, add_inputs):
    torch.manual_seed(1)
    h, b = torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, D_OUT, RANK, dtype=torch.bfloat16)
    y = torch.randn(TOKENS, D_OUT, dtype=torch.bfloat16)
    ours, theirs = run_both(ops, "bgmv_expand", y.clone, h, b, indices(kind), add_inputs)
    torch.testing.assert_close(ours, theirs)  # bf16 output: bf16's default tolerance (one rounding step)


@vllm_only
@pytest.mark.parametrize("kind", ["one", "mixed"])
def test_expand_slice_writes_only_its_slice_as_vllms(ops, kind):
    torch.manual_seed(2)
    h, b = torch.randn(TOKENS, RANK), torch.randn(SLOTS, 1, D_OUT, RANK, dtype=torch.bfloat16)
    y = torch.randn(TOKENS, 3 * D_OUT, dtype=torch.bfloat16)
    ours, theirs = run_both(ops, "bgmv_expand_slice", y.clone, h, b, indices(kind), D_OUT, D_OUT, True)
    torch.testing.assert_close(ours, theirs)
    assert torch.equal(ours[:, :D_OUT], y[:, :D_OUT]) and torch.equal(ours[:, 2 * D_OUT:], y[:, 2 * D_OUT:])


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
