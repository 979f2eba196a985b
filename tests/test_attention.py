"""grouped_eager attention (reasoning_rl/model/attention.py) computes what transformers' eager attention computes."""

from __future__ import annotations

import pytest
import torch

from reasoning_rl.model import attention
from tests.tiny_models import PAD, tiny_llama


@pytest.fixture(scope="module")
def batch():
    """Two left-padded rows, so the mask matters (row 0 starts with three pads)."""
    ids = torch.randint(3, 64, (2, 12), generator=torch.Generator().manual_seed(1))
    ids[0, :3] = PAD
    mask = torch.ones_like(ids)
    mask[0, :3] = 0
    return ids, mask


@pytest.mark.parametrize("kv_heads", [1, 2, 4])  # GQA with 4 or 2 query heads per KV head, and plain MHA
def test_grouped_eager_logits_match_eager(batch, kv_heads):
    from transformers import LlamaConfig, LlamaForCausalLM

    attention.register()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=kv_heads, pad_token_id=PAD)
    model = LlamaForCausalLM(config).eval()
    ids, mask = batch
    with torch.no_grad():
        model.set_attn_implementation("eager")
        expected = model(input_ids=ids, attention_mask=mask).logits
        model.set_attn_implementation(attention.NAME)
        got = model(input_ids=ids, attention_mask=mask).logits
    torch.testing.assert_close(got[mask.bool()], expected[mask.bool()], rtol=1e-5, atol=1e-5)


def test_grouped_eager_greedy_generation_matches_eager(batch):
    """Decoding with a KV cache (one query token per step) picks the same tokens."""
    attention.register()
    model = tiny_llama(seed=3)
    ids, mask = batch
    kwargs = dict(attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=PAD, eos_token_id=None)
    with torch.no_grad():
        model.set_attn_implementation("eager")
        expected = model.generate(ids, **kwargs)
        model.set_attn_implementation(attention.NAME)
        got = model.generate(ids, **kwargs)
    assert torch.equal(got, expected)


def test_load_model_registers_grouped_eager_by_name():
    """`attn_implementation="grouped_eager"` is accepted by from_pretrained once register() ran."""
    from transformers import AutoModelForCausalLM

    attention.register()
    model = tiny_llama()
    config = model.config
    config._attn_implementation = None
    loaded = AutoModelForCausalLM.from_config(config, attn_implementation=attention.NAME)
    assert loaded.config._attn_implementation == attention.NAME


def test_grouped_eager_gradients_match_eager(batch):
    """Training through grouped_eager (grpo.training_attention) gives eager's gradients."""
    attention.register()
    model = tiny_llama(seed=4).train()
    ids, mask = batch
    grads = {}
    for name in ("eager", attention.NAME):
        model.set_attn_implementation(name)
        model.zero_grad()
        logits = model(input_ids=ids, attention_mask=mask).logits
        logits[mask.bool()].logsumexp(-1).sum().backward()
        grads[name] = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    assert grads["eager"].keys() == grads[attention.NAME].keys()
    for n, g in grads["eager"].items():
        torch.testing.assert_close(grads[attention.NAME][n], g, rtol=1e-4, atol=1e-6, msg=n)
