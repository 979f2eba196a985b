"""grpo.autocast_lora: under bf16 autocast the LoRA branch runs in bf16 instead of upcasting its inputs."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_lora_policy


@pytest.fixture
def policy():
    """A tiny bf16 PEFT policy (fp32 adapter weights, PEFT's default) whose LoRA is not a no-op."""
    return tiny_lora_policy(torch.bfloat16).train()


def lora_layers(model):
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


def test_compute_loss_runs_without_lora_upcasting_and_restores_it(monkeypatch, policy):
    from trl import GRPOTrainer

    from reasoning_rl.train.grpo import GrpoTrainer

    seen = []
    monkeypatch.setattr(GRPOTrainer, "compute_loss", lambda self, model, inputs, *a, **k: seen.append(
        {layer.cast_input_dtype_enabled for layer in lora_layers(model)}) or "loss")
    trainer = object.__new__(GrpoTrainer)  # no __init__: only the loss wrapper is under test
    trainer.autocast_lora = True
    assert trainer.compute_loss(policy, {}) == "loss"
    assert seen == [{False}]
    assert {layer.cast_input_dtype_enabled for layer in lora_layers(policy)} == {True}


def test_lora_gradients_are_the_upcast_ones_bit_for_bit(policy):
    """Autocast casts the upcast input straight back to bf16, so skipping the upcast changes no number."""
    from peft.helpers import disable_input_dtype_casting

    ids = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(2))
    grads = []
    for upcast in (True, False):
        policy.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16), disable_input_dtype_casting(policy, active=not upcast):
            loss = policy(input_ids=ids).logits.float().logsumexp(-1).mean()
        loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in policy.parameters() if p.requires_grad]))
    assert grads[1].dtype == torch.float32  # the adapter's weights and gradients stay fp32
    assert torch.equal(grads[1], grads[0])
