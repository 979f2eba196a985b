"""grpo.merged_sampling: GRPO samples from a plain copy of the policy with the current LoRA merged in."""

from __future__ import annotations

import pytest
import torch

from reasoning_rl.train.lora import merged_copy
from tests.tiny_models import tiny_lora_policy


@pytest.fixture
def policy():
    """A tiny PEFT policy whose LoRA is not a no-op (B != 0)."""
    return tiny_lora_policy()


IDS = torch.randint(3, 64, (2, 10), generator=torch.Generator().manual_seed(2))


def test_merged_copy_computes_the_policy_logits(policy):
    copy = merged_copy(policy)
    assert not hasattr(copy, "peft_config")
    with torch.no_grad():
        torch.testing.assert_close(copy(IDS).logits, policy(IDS).logits, rtol=1e-5, atol=1e-5)


def test_merged_copy_refresh_follows_a_lora_update_without_touching_the_base(policy):
    copy = merged_copy(policy)
    base_before = {k: v.clone() for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    with torch.no_grad():
        for name, param in policy.named_parameters():
            if "lora_A" in name:
                param.add_(0.3)  # an optimizer step on the adapter
    assert merged_copy(policy, copy) is copy  # refreshed in place
    with torch.no_grad():
        torch.testing.assert_close(copy(IDS).logits, policy(IDS).logits, rtol=1e-5, atol=1e-5)
    base_after = {k: v for k, v in policy.get_base_model().state_dict().items() if "lora_" not in k}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)


def test_grpo_trainer_samples_from_the_merged_copy_and_restores_the_policy(monkeypatch, policy):
    from trl import GRPOTrainer

    from reasoning_rl.train.grpo import grpo_trainer_class

    seen = {}

    def fake_generate(self, *args, **kwargs):
        seen["sampler"] = self.model_wrapped
        return "completions"

    monkeypatch.setattr(GRPOTrainer, "_generate_single_turn", fake_generate)
    trainer = object.__new__(grpo_trainer_class())  # no __init__: only the generation wrapper is under test
    trainer.model = trainer.model_wrapped = policy
    trainer.accelerator = type("Acc", (), {"unwrap_model": staticmethod(lambda m: m)})()
    trainer.merged_sampling = True

    assert trainer._generate_single_turn([[1, 2]], None, {}) == "completions"
    assert seen["sampler"] is not policy and not hasattr(seen["sampler"], "peft_config")
    assert trainer.model_wrapped is policy
    with torch.no_grad():
        torch.testing.assert_close(seen["sampler"](IDS).logits, policy(IDS).logits, rtol=1e-5, atol=1e-5)
