"""Unit tests for teaching.mini_ppo: the critic really is a second network; GAE and rewards are right."""

from __future__ import annotations

import math

import pytest
import tiny_models
import torch
from tiny_models import PAD, tiny_tokenizer

from teaching.mini_grpo import LoraSettings, count_parameters, prepare_policy
from teaching.mini_ppo import (
    MiniPPOConfig,
    MiniPPOTrainer,
    ValueModel,
    build_value_model,
    gae,
    token_rewards,
    whiten,
)


def tiny_llama(seed: int = 0):
    return tiny_models.tiny_llama(seed, tie_word_embeddings=True)  # as SmolLM2: the LM head shares the embedding


def storage(module: torch.nn.Module) -> set[int]:
    return {p.data_ptr() for p in module.parameters()}


# ---- the critic is a second network ------------------------------------------------------------------------


def test_value_model_full_finetune_doubles_the_parameter_count():
    policy = tiny_llama()
    critic = build_value_model(policy, lora=None)
    policy_params = sum(count_parameters(policy))
    critic_params = sum(count_parameters(critic))
    # backbone copy + a (hidden+1)-parameter head: the same size as the policy, to within the head
    assert critic_params == policy_params + policy.config.hidden_size + 1
    assert 1.99 < (policy_params + critic_params) / policy_params < 2.01


def test_value_model_shares_no_storage_with_the_policy():
    policy = tiny_llama()
    critic = build_value_model(policy, lora=None)
    assert storage(policy).isdisjoint(storage(critic))
    assert storage(critic.value_head).isdisjoint(storage(policy))


def test_value_model_head_params_are_distinct_trainable_tensors():
    policy = tiny_llama()
    critic = build_value_model(policy, lora=None)
    head = dict(critic.value_head.named_parameters())
    assert set(head) == {"weight", "bias"} and head["weight"].shape == (1, policy.config.hidden_size)
    assert all(p.requires_grad for p in head.values())
    policy_ids = {id(p) for p in policy.parameters()}
    assert not any(id(p) in policy_ids for p in critic.parameters())


def test_value_model_starts_from_the_policy_weights():
    policy = tiny_llama()
    critic = build_value_model(policy, lora=None)
    torch.testing.assert_close(critic.backbone.embed_tokens.weight, policy.model.embed_tokens.weight)


def test_value_model_update_leaves_the_policy_untouched():
    policy = tiny_llama()
    critic = build_value_model(policy, lora=None)
    before = [p.detach().clone() for p in policy.parameters()]
    ids = torch.tensor([[5, 6, 7, 8]])
    critic(ids, torch.ones_like(ids)).sum().backward()
    torch.optim.SGD(critic.parameters(), lr=1.0).step()
    assert all(torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))


def test_value_model_lora_holds_a_frozen_backbone_copy_and_trains_adapter_and_head():
    policy = tiny_llama()
    critic = build_value_model(policy, LoraSettings(r=4, alpha=8))
    trainable, frozen = count_parameters(critic)
    assert frozen == sum(count_parameters(policy))  # the whole backbone is held a second time
    assert 0 < trainable < frozen
    names = [n for n, p in critic.named_parameters() if p.requires_grad]
    assert "value_head.weight" in names and all("lora_" in n or n.startswith("value_head") for n in names)
    assert storage(critic).isdisjoint(storage(policy))


def test_value_model_forward_gives_one_value_per_position():
    critic = ValueModel(tiny_llama().model, hidden_size=32)
    ids = torch.tensor([[5, 6, 7], [8, 9, PAD]])
    values = critic(ids, torch.tensor([[1, 1, 1], [1, 1, 0]]))
    assert values.shape == (2, 3) and values.dtype == torch.float32


def test_build_value_model_rejects_a_peft_wrapped_policy():
    policy, _ = prepare_policy(tiny_llama(), LoraSettings(r=4, alpha=8), beta=0.0)
    with pytest.raises(ValueError, match="before the policy is wrapped"):
        build_value_model(policy, None)


# ---- rewards and GAE ---------------------------------------------------------------------------------------


def test_token_rewards_put_the_score_on_the_last_real_token():
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    zeros = torch.zeros(2, 4)
    rewards = token_rewards(torch.tensor([2.0, -1.0]), zeros, zeros, mask, beta=0.1)
    assert torch.equal(rewards, torch.tensor([[0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, -1.0]]))


def test_token_rewards_subtract_beta_times_log_ratio():
    mask = torch.ones(1, 2)
    rewards = token_rewards(torch.tensor([0.0]), torch.tensor([[-1.0, -1.0]]), torch.tensor([[-2.0, -1.5]]), mask, 0.5)
    torch.testing.assert_close(rewards, torch.tensor([[-0.5, -0.25]]))


def test_gae_with_gamma_and_lambda_one_is_reward_to_go_minus_value():
    rewards = torch.tensor([[0.0, 0.0, 1.0, 0.0]])
    values = torch.tensor([[0.2, 0.4, 0.6, 9.9]])  # 9.9 sits on padding and must be ignored
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    adv, returns = gae(rewards, values, mask, gamma=1.0, lam=1.0)
    torch.testing.assert_close(adv, torch.tensor([[0.8, 0.6, 0.4, 0.0]]))
    torch.testing.assert_close(returns, torch.tensor([[1.0, 1.0, 1.0, 0.0]]))


def test_gae_with_lambda_zero_is_the_one_step_td_error():
    rewards = torch.tensor([[0.0, 1.0]])
    values = torch.tensor([[0.5, 0.25]])
    adv, _ = gae(rewards, values, torch.ones(1, 2), gamma=0.9, lam=0.0)
    torch.testing.assert_close(adv, torch.tensor([[0.0 + 0.9 * 0.25 - 0.5, 1.0 - 0.25]]))


def test_whiten_gives_zero_mean_unit_variance_on_real_tokens_only():
    values = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    out = whiten(values, mask)
    real = out[mask.bool()]
    assert abs(float(real.mean())) < 1e-6 and abs(float((real**2).mean()) - 1) < 1e-5 and out[0, 3] == 0


def test_mini_ppo_config_rejects_bad_value_naming_it():
    with pytest.raises(ValueError, match="lam"):
        MiniPPOConfig(lam=1.5)


# ---- one PPO step ------------------------------------------------------------------------------------------


def test_mini_ppo_trainer_step_updates_policy_and_critic():
    model = tiny_llama()
    cfg = MiniPPOConfig(num_generations=2, max_completion_length=5, lora=None, beta=0.04, learning_rate=1e-2)
    critic = build_value_model(model, cfg.lora)
    policy, reference = prepare_policy(model, cfg.lora, cfg.beta)

    def length_reward(completions, **kwargs):
        return [0.1 * len(c.split()) for c in completions]

    trainer = MiniPPOTrainer(policy, critic, tiny_tokenizer(), cfg, reference, reward_funcs=[length_reward])
    policy_before = [p.detach().clone() for p in policy.parameters()]
    head_before = critic.value_head.weight.detach().clone()
    torch.manual_seed(0)
    stats = trainer.step([[{"role": "user", "content": "t1 t2"}]] * 2, answers=["1", "2"])
    assert math.isfinite(stats.policy_loss) and math.isfinite(stats.value_loss)
    assert any(not torch.equal(b, p) for b, p in zip(policy_before, policy.parameters(), strict=True))
    assert not torch.equal(head_before, critic.value_head.weight)
