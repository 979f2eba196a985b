"""DAPO dynamic sampling on TRL-shaped batches: tied groups are found, replaced by informative ones, re-padded."""

import os

import pytest
import torch

from reasoning_rl.train import dynamic_sampling as ds

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental in TRL

PAD = 0
G = 2


def batch(advantages, prompt_len=3, completion_len=4, tag=1):
    """A TRL-like batch: one row per completion, `tag` marks where its rows came from."""
    n = len(advantages)
    return {
        "prompt_ids": torch.full((n, prompt_len), tag),
        "prompt_mask": torch.ones(n, prompt_len, dtype=torch.long),
        "completion_ids": torch.full((n, completion_len), tag),
        "completion_mask": torch.ones(n, completion_len, dtype=torch.long),
        "old_per_token_logps": torch.full((n, completion_len), -1.0),
        "importance_sampling_ratio": torch.full((n, completion_len), 0.5),
        "advantages": torch.tensor(advantages, dtype=torch.float),
        "num_items_in_batch": torch.tensor(n * completion_len),
    }


def test_tied_groups_are_those_with_all_zero_advantages():
    adv = torch.tensor([0.0, 0.0, 0.5, -0.5, 1e-9, -1e-9])
    assert ds.tied_groups(adv, G).tolist() == [True, False, True]


def test_concat_pads_prompts_left_and_completions_right():
    merged = ds.concat_batches(batch([1, -1], prompt_len=3, completion_len=4, tag=1),
                               batch([1, -1], prompt_len=5, completion_len=2, tag=2), PAD)
    assert merged["prompt_ids"][0].tolist() == [PAD, PAD, 1, 1, 1]
    assert merged["prompt_mask"][0].tolist() == [0, 0, 1, 1, 1]
    assert merged["completion_ids"][2].tolist() == [2, 2, PAD, PAD]
    assert merged["completion_mask"][2].tolist() == [1, 1, 0, 0]
    assert merged["importance_sampling_ratio"][2].tolist() == [0.5, 0.5, 1.0, 1.0]
    assert int(merged["num_items_in_batch"]) == 2 * 4 + 2 * 2


def test_concat_refuses_entries_it_cannot_pad():
    a, b = batch([1, -1]), batch([1, -1])
    a["pixel_values"] = b["pixel_values"] = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="pixel_values"):
        ds.concat_batches(a, b, PAD)


def test_refill_replaces_tied_groups_with_informative_ones_from_extra_rounds():
    first = batch([0, 0, 1, -1, 0, 0], tag=1)  # groups: tied, informative, tied
    calls = []

    def sample_groups(count, round_):
        calls.append(count)
        return batch([0.5, -0.5] * count, tag=2)  # every new group informative

    out, stats = ds.refill(first, G, rounds=2, sample_groups=sample_groups, pad_token_id=PAD)
    assert calls == [2]
    assert out["advantages"].numel() == 6 and not ds.tied_groups(out["advantages"], G).any()
    assert sorted(out["completion_ids"][:, 0].tolist()) == [1, 1, 2, 2, 2, 2]
    assert (stats.extra_groups, stats.tied_before, stats.tied_after) == (2, 2, 0)


def test_refill_keeps_the_batch_size_with_tied_groups_when_rounds_run_out():
    first = batch([0, 0, 1, -1], tag=1)

    def sample_groups(count, round_):
        return batch([0, 0] * count, tag=2)  # every new group tied again

    out, stats = ds.refill(first, G, rounds=3, sample_groups=sample_groups, pad_token_id=PAD)
    assert out["advantages"].numel() == 4
    assert out["completion_ids"][:, 0].tolist() == [1, 1, 1, 1]  # the original tied group fills the place
    assert (stats.extra_groups, stats.tied_after) == (3, 1)


def test_refill_samples_nothing_when_no_group_is_tied():
    def sample_groups(count, round_):
        raise AssertionError("no extra round is needed")

    out, stats = ds.refill(batch([1, -1, 1, -1]), G, rounds=2, sample_groups=sample_groups, pad_token_id=PAD)
    assert out["advantages"].tolist() == [1, -1, 1, -1] and stats.extra_groups == 0


def test_extra_prompts_are_the_same_for_a_step_on_every_run_and_differ_between_steps():
    assert ds.extra_prompts(1000, 5, seed=42, step=7) == ds.extra_prompts(1000, 5, seed=42, step=7)
    assert ds.extra_prompts(1000, 5, seed=42, step=7) != ds.extra_prompts(1000, 5, seed=42, step=8)


def test_grpo_trainer_refills_a_tied_group_from_a_fresh_prompt(tmp_path):
    """Our GrpoTrainer end to end: a tied group of the step's batch is replaced by a fresh prompt's group."""
    from datasets import Dataset
    from tiny_models import EOS, tiny_llama, tiny_tokenizer
    from trl import GRPOConfig

    from reasoning_rl.train.grpo import GrpoTrainer

    model_dir = tmp_path / "model"
    tiny_llama(0, max_position_embeddings=64).save_pretrained(model_dir)
    tiny_tokenizer(chat_template=False).save_pretrained(model_dir)

    def rollout_func(prompts, trainer):  # fixed completions; the prompt text picks its token ids
        ids = [[5, 9] if p == "t2 t6" else [7, 3, 22] for p in prompts]
        return {"prompt_ids": ids, "completion_ids": [[11, 12, EOS]] * len(prompts), "logprobs": None}

    def spread_reward(completions, spread, **kwargs):  # a group's rewards differ iff its row says so
        return [float(s) * (i % G) for i, s in enumerate(spread)]

    args = GRPOConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, bf16=False,
                      per_device_train_batch_size=4, num_generations=G, max_completion_length=8,
                      scale_rewards="none", loss_type="dr_grpo", seed=0)
    trainer = GrpoTrainer(
        model=str(model_dir), reward_funcs=spread_reward, args=args, rollout_func=rollout_func,
        train_dataset=Dataset.from_dict({"prompt": ["t2 t6"] * 3, "spread": [1, 1, 1]}),  # fresh: informative
        processing_class=tiny_tokenizer(chat_template=False), dynamic_sampling_rounds=1,
    )
    trainer.model.train()
    inputs = [{"prompt": "t1 t3 t4", "spread": s} for s in (0, 0, 1, 1)]  # group 0 tied, group 1 not
    out = trainer._generate_and_score_completions(inputs)

    assert not ds.tied_groups(out["advantages"], G).any()
    assert out["prompt_ids"].shape == (4, 3) and sorted(out["prompt_mask"].sum(1).tolist()) == [2, 2, 3, 3]
    assert trainer._metrics["train"]["dynamic_sampling/extra_groups"] == [1]
    assert trainer._metrics["train"]["frac_reward_zero_std"] == [0.5]  # the step's own batch, as TRL logs it
