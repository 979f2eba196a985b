"""grpo.shared_prefix: each group's prompt is forwarded once, with the same logits and gradients as full rows."""

from __future__ import annotations

import contextlib

import pytest
import torch

from reasoning_rl.train.shared_prefix import completion_logits, prompt_groups
from tests.tiny_models import tiny_lora_policy

PROMPT, COMPLETION, GROUP = 7, 5, 3


@pytest.fixture
def policy():
    """A tiny GQA PEFT policy in training mode whose LoRA is not a no-op (B != 0)."""
    return tiny_lora_policy().train()


def fake_accelerator(unwrap=lambda m: m, autocast=contextlib.nullcontext):
    """What the trainer's log-prob code asks of accelerate's Accelerator."""
    return type("Acc", (), {"unwrap_model": staticmethod(unwrap), "autocast": staticmethod(autocast),
                            "is_main_process": True})()


def grouped_batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Two prompts x GROUP completions, rows shuffled as TRL does; the second prompt is left-padded,
    completions right-padded."""
    gen = torch.Generator().manual_seed(2)
    prompts = torch.randint(3, 64, (2, PROMPT), generator=gen).repeat_interleave(GROUP, dim=0)
    prompt_mask = torch.ones_like(prompts)
    prompt_mask[GROUP:, :2] = 0
    prompts[GROUP:, :2] = 0
    completions = torch.randint(3, 64, (2 * GROUP, COMPLETION), generator=gen)
    completion_mask = torch.ones_like(completions)
    completion_mask[0, 3:] = 0
    order = torch.tensor([3, 0, 4, 1, 5, 2])
    return torch.cat([prompts, completions], 1)[order], torch.cat([prompt_mask, completion_mask], 1)[order]


def full_row_logits(model, ids, mask):
    return model(input_ids=ids, attention_mask=mask, logits_to_keep=COMPLETION + 1, use_cache=False).logits[:, :-1]


def lora_grads(model, logits, ids, mask):
    model.zero_grad()
    logps = torch.log_softmax(logits, -1).gather(-1, ids[:, -COMPLETION:, None]).squeeze(-1)
    (logps * mask[:, -COMPLETION:]).sum().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_prompt_groups_finds_identical_prompt_rows_in_any_order():
    ids = torch.tensor([[3, 4], [1, 2], [3, 4], [1, 2], [1, 2]])
    first, inverse = prompt_groups(ids, torch.ones_like(ids))
    assert torch.equal(ids[first][inverse], ids)  # every row's prompt is its group's
    assert sorted(first.tolist()) == [0, 1]


def test_prompt_groups_is_none_when_no_prompt_repeats():
    ids = torch.tensor([[1, 2], [3, 4]])
    assert prompt_groups(ids, torch.ones_like(ids)) is None


def test_prompt_groups_tells_apart_prompts_that_differ_only_in_padding():
    ids = torch.tensor([[0, 2], [0, 2]])
    mask = torch.tensor([[1, 1], [0, 1]])
    assert prompt_groups(ids, mask) is None


@pytest.fixture(params=["joined_head", "model_head"])
def head_path(request, monkeypatch):
    """The head run once on joined hidden states (llama), or through the model's own forward (other models)."""
    if request.param == "model_head":
        monkeypatch.setattr("reasoning_rl.train.shared_prefix.PLAIN_HEAD_MODELS", ())
    return request.param


def test_shared_prefix_logits_equal_the_full_row_forward(policy, head_path):
    ids, mask = grouped_batch()
    shared = completion_logits(policy, ids, mask, COMPLETION, temperature=0.7)
    torch.testing.assert_close(shared, full_row_logits(policy, ids, mask) / 0.7, rtol=1e-5, atol=1e-5)


def test_shared_prefix_gradients_equal_the_full_row_backward(policy, head_path):
    ids, mask = grouped_batch()
    shared = lora_grads(policy, completion_logits(policy, ids, mask, COMPLETION), ids, mask)
    full = lora_grads(policy, full_row_logits(policy, ids, mask), ids, mask)
    assert shared.keys() == full.keys()
    for name in full:
        torch.testing.assert_close(shared[name], full[name], rtol=1e-4, atol=1e-6, msg=name)


def test_shared_prefix_is_none_without_repeated_prompts(policy):
    ids, mask = grouped_batch()
    assert completion_logits(policy, ids[:2], mask[:2], COMPLETION) is None  # rows 3 and 0: two prompts


def test_shared_prefix_refuses_a_model_that_does_not_cache_the_prompt(policy):
    policy.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    ids, mask = grouped_batch()
    with pytest.raises(RuntimeError, match="did not cache"):
        completion_logits(policy, ids, mask, COMPLETION)


def test_grpo_trainer_log_probs_match_trls_own_with_shared_prefix(policy):
    """The trainer's override against TRL's own `_get_per_token_logps_and_entropies` on the same batch."""
    from reasoning_rl.train.grpo import GrpoTrainer

    trainer = object.__new__(GrpoTrainer)  # no __init__: only the log-prob computation is under test
    trainer.temperature, trainer._entropy_bonus_enabled = 0.9, False
    trainer.accelerator = fake_accelerator()
    trainer.model_kwarg_keys = {"input_ids", "attention_mask", "logits_to_keep", "use_cache"}
    ids, mask = grouped_batch()
    results = {}
    for shared in (False, True):
        trainer.shared_prefix = shared
        results[shared] = trainer._get_per_token_logps_and_entropies(policy, ids, mask, COMPLETION,
                                                                     compute_entropy=True)
    (trl_logps, trl_entropy, _), (logps, entropy, _) = results[False], results[True]
    assert logps.shape == (2 * GROUP, COMPLETION)
    torch.testing.assert_close(logps, trl_logps, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(entropy, trl_entropy, rtol=1e-5, atol=1e-5)


def test_grpo_trainer_keeps_trls_forward_for_a_wrapped_model(monkeypatch, policy):
    """Under DDP/DeepSpeed (the accelerator unwraps to another object) the shared prefix stays off."""
    import reasoning_rl.train.shared_prefix as shared_prefix
    from reasoning_rl.train.grpo import GrpoTrainer

    monkeypatch.setattr(shared_prefix, "completion_logits", lambda *a, **k: pytest.fail("shared prefix used"))
    trainer = object.__new__(GrpoTrainer)
    trainer.temperature, trainer._entropy_bonus_enabled, trainer.shared_prefix = 0.9, False, True
    trainer.model_kwarg_keys = {"input_ids", "attention_mask", "logits_to_keep", "use_cache"}
    trainer.accelerator = fake_accelerator(unwrap=lambda m: object())
    ids, mask = grouped_batch()
    logps, _, _ = trainer._get_per_token_logps_and_entropies(policy, ids, mask, COMPLETION)
    assert logps.shape == (2 * GROUP, COMPLETION)


def test_grpo_trainer_shared_prefix_matches_trl_under_bf16_autocast(policy):
    """As accelerate prepares a bf16 model on CPU (forward under autocast, fp32 outputs): same fp32 log-probs."""
    from accelerate.utils import convert_outputs_to_fp32

    from reasoning_rl.train.grpo import GrpoTrainer

    policy.to(torch.bfloat16)
    for name, param in policy.named_parameters():
        if "lora_" in name:
            param.data = param.data.float()  # PEFT keeps adapter weights in fp32
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    policy.forward = convert_outputs_to_fp32(autocast()(policy.forward))  # accelerate's prepare_model
    trainer = object.__new__(GrpoTrainer)
    trainer.temperature, trainer._entropy_bonus_enabled = 0.9, False
    trainer.model_kwarg_keys = {"input_ids", "attention_mask", "logits_to_keep", "use_cache"}
    trainer.accelerator = fake_accelerator(autocast=autocast)
    ids, mask = grouped_batch()
    autocast_on = []
    layer = policy.get_base_model().model.layers[0]
    layer.register_forward_pre_hook(lambda *_: autocast_on.append(torch.is_autocast_enabled("cpu")))
    results = {}
    for shared in (False, True):
        trainer.shared_prefix = shared
        results[shared] = trainer._get_per_token_logps_and_entropies(policy, ids, mask, COMPLETION)[0]
    assert autocast_on == [True, True, True]  # TRL's one forward, then the prompts' and the completions'
    assert results[True].dtype == results[False].dtype == torch.float32
    torch.testing.assert_close(results[True], results[False], rtol=0, atol=0.05)  # bf16 rounding only
