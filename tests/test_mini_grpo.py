"""Unit tests for teaching.mini_grpo: advantage maths, masking, loss, config, the explainer table."""

from __future__ import annotations

import math

import pytest
import torch
from tiny_models import EOS, PAD, tiny_llama, tiny_tokenizer

from teaching.mini_grpo import (
    LoraSettings,
    MiniGRPOConfig,
    MiniGRPOTrainer,
    aggregate_loss,
    clipped_surrogate,
    completion_mask_from_ids,
    count_parameters,
    explain_group,
    explanation_markdown,
    group_advantages,
    grpo_loss,
    k3_kl,
    per_token_logps,
    prepare_policy,
    reference_logps,
    score_completions,
    shorten,
)

# ---- advantages --------------------------------------------------------------------------------------------


def test_group_advantages_equal_rewards_give_zeros():
    for value in (0.0, 1.0, 0.1, 2.7):  # 0.1 and 2.7 are not exact in binary: the mean must not leak rounding
        adv = group_advantages(torch.full((8,), value), num_generations=8)
        assert torch.equal(adv, torch.zeros(8))


def test_group_advantages_equal_rewards_give_zeros_without_std_scaling():
    adv = group_advantages(torch.full((4,), 0.1), num_generations=4, scale_rewards=False)
    assert torch.equal(adv, torch.zeros(4))


def test_group_advantages_one_winner_gets_the_only_positive_advantage():
    adv = group_advantages(torch.tensor([0.0, 1.0, 0.0, 0.0]), num_generations=4)
    # mean 0.25, unbiased std 0.5: winner (1 - 0.25) / 0.5 = 1.5, losers -0.25 / 0.5 = -0.5
    torch.testing.assert_close(adv, torch.tensor([-0.5, 1.5, -0.5, -0.5]), atol=1e-3, rtol=0)
    assert adv.argmax() == 1 and (adv > 0).sum() == 1


def test_group_advantages_std_scaling_on_gives_unit_std_per_group():
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 10.0, 10.0, 30.0, 10.0])
    adv = group_advantages(rewards, num_generations=4, scale_rewards=True, eps=1e-8).view(2, 4)
    torch.testing.assert_close(adv.std(dim=1), torch.ones(2), atol=1e-6, rtol=0)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(2), atol=1e-6, rtol=0)


def test_group_advantages_std_scaling_off_is_reward_minus_group_mean():
    rewards = torch.tensor([0.0, 1.0, 2.0, 5.0, 10.0, 10.0, 30.0, 10.0])
    adv = group_advantages(rewards, num_generations=4, scale_rewards=False)
    expected = torch.tensor([-2.0, -1.0, 0.0, 3.0, -5.0, -5.0, 15.0, -5.0])
    torch.testing.assert_close(adv, expected)


def test_group_advantages_groups_are_normalised_independently():
    small = torch.tensor([0.0, 1.0, 0.0, 1.0])
    both = group_advantages(torch.cat([small, 100 * small]), num_generations=4)
    torch.testing.assert_close(both[:4], both[4:], atol=1e-3, rtol=0)  # scale-free within each group


def test_group_advantages_rejects_a_partial_group():
    with pytest.raises(ValueError, match="multiple of num_generations=4"):
        group_advantages(torch.zeros(6), num_generations=4)


# ---- masks -------------------------------------------------------------------------------------------------


def test_completion_mask_from_ids_keeps_tokens_up_to_and_including_first_eos():
    ids = torch.tensor([[5, 6, EOS, PAD, PAD], [5, EOS, 7, EOS, PAD]])
    expected = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]])
    assert torch.equal(completion_mask_from_ids(ids, EOS), expected)


def test_completion_mask_from_ids_keeps_a_truncated_row_whole():
    ids = torch.tensor([[5, 6, 7, 8]])
    assert torch.equal(completion_mask_from_ids(ids, EOS), torch.ones(1, 4, dtype=torch.long))


@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_grpo_loss_padding_tokens_do_not_change_loss(loss_type):
    """Extra padding columns with arbitrary log-probs change neither the loss nor real tokens' gradients."""
    gen = torch.Generator().manual_seed(0)
    cfg = MiniGRPOConfig(num_generations=4, max_completion_length=10, loss_type=loss_type, beta=0.04, lora=None)
    logps = torch.randn(4, 5, generator=gen) - 2
    old = logps + 0.3 * torch.randn(4, 5, generator=gen)
    ref = logps + 0.3 * torch.randn(4, 5, generator=gen)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 0, 0, 0, 0], [1, 1, 1, 1, 0]])
    adv = torch.tensor([1.0, -0.5, 0.3, -0.8])

    def loss_and_grad(lp, o, r, m):
        lp = lp.clone().requires_grad_(True)
        loss, _ = grpo_loss(lp, o, adv, m, cfg, r)
        loss.backward()
        return loss.detach(), lp.grad

    base_loss, base_grad = loss_and_grad(logps, old, ref, mask)
    junk = 5 * torch.randn(4, 3, generator=gen)  # wildly off-policy values where nothing is real
    padded = [torch.cat([t, junk], dim=1) for t in (logps, old, ref)]
    padded_loss, padded_grad = loss_and_grad(*padded, torch.cat([mask, torch.zeros(4, 3, dtype=mask.dtype)], 1))
    torch.testing.assert_close(padded_loss, base_loss, atol=1e-7, rtol=0)
    torch.testing.assert_close(padded_grad[:, :5], base_grad, atol=1e-7, rtol=0)
    assert torch.equal(padded_grad[:, 5:], torch.zeros(4, 3))


def test_per_token_logps_padding_does_not_change_real_tokens():
    """Left-padding the prompt and right-padding the completion leave a row's log-probs unchanged."""
    model = tiny_llama()
    prompt, completion = [5, 9, 12], [11, 12, EOS]
    ids = torch.tensor([prompt + completion])
    mask = torch.ones_like(ids)
    padded_ids = torch.tensor([[PAD, PAD] + prompt + completion + [PAD, PAD]])
    padded_mask = torch.tensor([[0, 0] + [1] * 6 + [0, 0]])
    with torch.no_grad():
        plain = per_token_logps(model, ids, mask, logits_to_keep=3)  # [1, 3]
        padded = per_token_logps(model, padded_ids, padded_mask, logits_to_keep=5)  # [1, 5]
    torch.testing.assert_close(padded[:, :3], plain, atol=1e-5, rtol=0)


# ---- the loss ----------------------------------------------------------------------------------------------


def test_clipped_surrogate_has_no_gradient_beyond_the_clip_in_the_advantage_direction():
    ratio = torch.tensor([[1.5, 0.5, 1.1, 0.9]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    clipped_surrogate(ratio, adv, 0.2, 0.2).sum().backward()
    # ρ=1.5, A>0 and ρ=0.5, A<0: clipped, no push further; inside the range: gradient -A
    assert torch.equal(ratio.grad, torch.tensor([[0.0, 0.0, -1.0, 1.0]]))


def test_clipped_surrogate_epsilon_high_widens_only_the_upper_bound():
    ratio = torch.tensor([[1.25, 0.75]], requires_grad=True)
    adv = torch.tensor([[1.0, -1.0]])
    clipped_surrogate(ratio, adv, 0.2, 0.28).sum().backward()
    assert torch.equal(ratio.grad, torch.tensor([[-1.0, 0.0]]))  # 1.25 < 1.28 still learns; 0.75 < 0.8 clipped


def test_k3_kl_is_zero_when_equal_and_positive_otherwise():
    logps = torch.tensor([-1.0, -2.0, -0.5])
    assert torch.equal(k3_kl(logps, logps), torch.zeros(3))
    assert (k3_kl(logps, logps + torch.tensor([0.3, -0.7, 1.2])) > 0).all()


def test_aggregate_loss_dr_grpo_divides_by_the_constant_not_the_lengths():
    per_token = torch.ones(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]], dtype=torch.float32)
    assert aggregate_loss(per_token, mask, "dr_grpo", max_completion_length=10) == pytest.approx(6 / 20)
    assert aggregate_loss(per_token, mask, "grpo", max_completion_length=10) == pytest.approx(1.0)
    assert aggregate_loss(per_token, mask, "bnpo", max_completion_length=10) == pytest.approx(1.0)


def test_grpo_loss_on_policy_value_is_minus_mean_advantage():
    logps = torch.tensor([[-1.0, -2.0], [-0.5, -0.1]])
    adv = torch.tensor([0.7, -0.2])
    cfg = MiniGRPOConfig(num_generations=2, lora=None)
    loss, stats = grpo_loss(logps, logps, adv, torch.ones(2, 2), cfg)
    assert float(loss) == pytest.approx(-0.25)  # ρ = 1 everywhere: -(0.7 - 0.2) / 2
    assert stats.clip_ratio == 0.0 and stats.ratio_mean == pytest.approx(1.0)


def test_grpo_step_raises_the_winner_and_lowers_the_loser():
    """One SGD step on the real loss moves log-probs in the direction of each completion's advantage."""
    model = tiny_llama()
    ids = torch.tensor([[5, 9, 12, 20, 21, EOS], [5, 9, 12, 30, 31, EOS]])
    mask = torch.ones_like(ids)
    adv = group_advantages(torch.tensor([1.0, 0.0]), num_generations=2)
    cfg = MiniGRPOConfig(num_generations=2, max_completion_length=3, lora=None)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    with torch.no_grad():
        before = per_token_logps(model, ids, mask, 3).sum(1)
    logps = per_token_logps(model, ids, mask, 3)
    loss, _ = grpo_loss(logps, logps.detach(), adv, torch.ones(2, 3), cfg)
    loss.backward()
    opt.step()
    with torch.no_grad():
        after = per_token_logps(model, ids, mask, 3).sum(1)
    assert after[0] > before[0] and after[1] < before[1]


# ---- config ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"num_generations": 1}, "num_generations"),
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon_high": -0.1}, "epsilon_high"),
        ({"beta": -1.0}, "beta"),
        ({"loss_type": "ppo"}, "loss_type"),
        ({"temperature": 0.0}, "temperature"),
        ({"max_completion_length": 0}, "max_completion_length"),
        ({"num_iterations": 0}, "num_iterations"),
        ({"learning_rate": 0.0}, "learning_rate"),
        ({"reward_weights": (1.0,)}, "reward_weights"),
    ],
)
def test_mini_grpo_config_rejects_bad_value_naming_it(kwargs, named):
    with pytest.raises(ValueError, match=named):
        MiniGRPOConfig(**kwargs)


def test_lora_settings_rejects_bad_rank():
    with pytest.raises(ValueError, match="lora r"):
        LoraSettings(r=0)


# ---- policy, reference, trainer ----------------------------------------------------------------------------


def test_prepare_policy_lora_trains_only_the_adapter_and_reference_is_the_base():
    base_logps_model = tiny_llama()
    policy, reference = prepare_policy(tiny_llama(), LoraSettings(r=4, alpha=8), beta=0.04)
    trainable, frozen = count_parameters(policy)
    assert reference is None and 0 < trainable < frozen
    assert all("lora_" in n for n, p in policy.named_parameters() if p.requires_grad)
    with torch.no_grad():  # make the adapter non-trivial, so "disabled" differs from "enabled"
        for n, p in policy.named_parameters():
            if "lora_B" in n:
                p.normal_(std=0.1)
    ids, mask = torch.tensor([[5, 9, 12, 20, 21]]), torch.ones(1, 5, dtype=torch.long)
    ref = reference_logps(policy, None, ids, mask, 2)
    with torch.no_grad():
        expected = per_token_logps(base_logps_model, ids, mask, 2)
        adapted = per_token_logps(policy, ids, mask, 2)
    torch.testing.assert_close(ref, expected, atol=1e-6, rtol=0)
    assert not torch.allclose(adapted, expected, atol=1e-4)


def test_prepare_policy_full_finetune_keeps_a_frozen_reference_copy():
    policy, reference = prepare_policy(tiny_llama(), None, beta=0.04)
    assert reference is not None and reference is not policy
    assert all(p.requires_grad for p in policy.parameters())
    assert not any(p.requires_grad for p in reference.parameters())
    assert {p.data_ptr() for p in policy.parameters()}.isdisjoint({p.data_ptr() for p in reference.parameters()})


def test_score_completions_sums_weighted_rewards():
    def first(completions, **kwargs):
        return [1.0 for _ in completions]

    def second(completions, answer, **kwargs):
        return [float(c == a) for c, a in zip(completions, answer, strict=True)]

    total, per_func = score_completions(["7", "8"], ["7", "7"], [first, second], weights=[0.5, 2.0])
    assert total.tolist() == [2.5, 0.5] and per_func.shape == (2, 2)


def test_mini_grpo_trainer_step_updates_the_policy():
    model = tiny_llama()
    tok = tiny_tokenizer()
    cfg = MiniGRPOConfig(num_generations=4, max_completion_length=6, lora=None, beta=0.04, learning_rate=1e-2)
    policy, reference = prepare_policy(model, cfg.lora, cfg.beta)

    def likes_t10(completions, **kwargs):  # a reward with variance on random text: contains token t10?
        return [float("t10" in c.split()) + 0.1 * len(c.split()) for c in completions]

    trainer = MiniGRPOTrainer(policy, tok, cfg, reference=reference, reward_funcs=[likes_t10])
    before = [p.detach().clone() for p in policy.parameters()]
    torch.manual_seed(0)
    stats = trainer.step([[{"role": "user", "content": "t1 t2 t3"}]] * 2, answers=["1", "2"])
    assert stats.step == 1 and math.isfinite(stats.loss) and stats.grad_norm > 0
    assert any(not torch.equal(b, p) for b, p in zip(before, policy.parameters(), strict=True))


# ---- explainer table ---------------------------------------------------------------------------------------


def test_explain_group_equal_rewards_show_zero_advantage_and_say_why():
    expl = explain_group(["a", "b", "c", "d"], [1.0, 1.0, 1.0, 1.0])
    assert expl.all_equal and expl.std == 0.0
    assert all(row.advantage == 0.0 and row.push == "none" for row in expl.rows)
    assert "exactly zero" in expl.note and "nothing to reinforce" in expl.note


def test_explain_group_one_winner_is_pushed_up_and_the_rest_down():
    expl = explain_group(["right", "wrong", "wrong", "wrong"], [2.0, 0.0, 0.0, 0.0])
    assert [row.push for row in expl.rows] == ["up", "down", "down", "down"]
    assert expl.mean == pytest.approx(0.5) and not expl.all_equal
    assert sum(row.advantage for row in expl.rows) == pytest.approx(0.0, abs=1e-9)


def test_explanation_markdown_escapes_pipes_and_has_one_row_per_completion():
    md = explanation_markdown(explain_group(["a|b", "c"], [1.0, 0.0]), header="# Group")
    assert "a\\|b" in md and md.count("\n| ") == 3  # header row + 2 completions (separator starts with |-)


def test_explanation_markdown_puts_extra_columns_before_the_reward():
    md = explanation_markdown(explain_group(["a", "c"], [1.0, 0.0]), extra_columns={"format": ["1", "0"]})
    assert "| format | reward |" in md and "| a | 1 | 1 | +0.7070 |" in md


def test_explanation_markdown_rejects_a_short_extra_column():
    with pytest.raises(ValueError, match="extra column 'format' has 1 cells for 2 rows"):
        explanation_markdown(explain_group(["a", "c"], [1.0, 0.0]), extra_columns={"format": ["1"]})


def test_shorten_keeps_head_and_tail_within_width():
    text = "<think>" + "x" * 500 + "</think><answer>42</answer>"
    short = shorten(text, width=60)
    assert len(short) == 60 and short.startswith("<think>") and short.endswith("<answer>42</answer>")


def save_tiny_model_with_adapter(tmp_path):
    """A tiny base model + tokenizer folder and a non-trivial LoRA adapter trained on nothing but noise."""
    from peft import LoraConfig, get_peft_model

    base_dir, adapter_dir = tmp_path / "base", tmp_path / "adapter"
    tiny_llama().save_pretrained(base_dir)
    tiny_tokenizer().save_pretrained(base_dir)
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.2)
    peft_model.save_pretrained(adapter_dir)
    return base_dir, adapter_dir, peft_model


def test_load_policy_merges_the_sft_adapter_into_the_base(tmp_path):
    from teaching.mini_grpo import load_policy

    base_dir, adapter_dir, peft_model = save_tiny_model_with_adapter(tmp_path)
    model, _, source = load_policy(str(base_dir), adapter=adapter_dir, dtype="float32")
    assert not hasattr(model, "peft_config") and "SFT adapter" in source
    ids, mask = torch.tensor([[5, 9, 12, 20, 21]]), torch.ones(1, 5, dtype=torch.long)
    with torch.no_grad():
        expected = per_token_logps(peft_model.eval(), ids, mask, 3)
        merged = per_token_logps(model, ids, mask, 3)
    torch.testing.assert_close(merged, expected, atol=1e-5, rtol=0)


def test_load_policy_skips_an_adapter_trained_on_another_base(tmp_path):
    import json

    from teaching.mini_grpo import load_policy

    base_dir, adapter_dir, _ = save_tiny_model_with_adapter(tmp_path)
    config = adapter_dir / "adapter_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"base_model_name_or_path": "other/model"}))
    model, _, source = load_policy(str(base_dir), adapter=adapter_dir, dtype="float32")
    assert "trained on other/model: not used" in source
    torch.testing.assert_close(model.model.embed_tokens.weight, tiny_llama().model.embed_tokens.weight)


def test_load_policy_without_an_adapter_loads_the_base(tmp_path):
    from teaching.mini_grpo import load_policy

    base_dir, _, _ = save_tiny_model_with_adapter(tmp_path)
    model, _, source = load_policy(str(base_dir), adapter=tmp_path / "missing", dtype="float32")
    assert "no SFT adapter" in source
    torch.testing.assert_close(model.model.embed_tokens.weight, tiny_llama().model.embed_tokens.weight)
