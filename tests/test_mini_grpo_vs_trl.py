"""Cross-check: teaching.mini_grpo against TRL's own GRPOTrainer code on one fixed batch.

TRL's `compute_loss` (which calls `_compute_loss` and `_get_per_token_logps_and_entropies`) is driven with a
hand-built `inputs` dict; our loss uses the same prompts, completions,
advantages and old/reference log-probs. Old and reference log-probs are the policy's own plus fixed noise, so
the ratios leave the clip range and the KL term is non-zero: every branch of the loss is exercised.
Advantages are checked by running TRL's `_generate_and_score_completions` end to end, with a `rollout_func`
that returns fixed completions and a reward function that returns fixed rewards.

Run `python tests/test_mini_grpo_vs_trl.py` to print the differences reached (docs/grpo_explained.md).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch
from tiny_models import EOS, PAD, tiny_llama, tiny_tokenizer

from teaching.mini_grpo import MiniGRPOConfig, group_advantages, grpo_loss, per_token_logps

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental in TRL

trl = pytest.importorskip("trl")
try:  # TRL >= 1.15 scores tokens with a Triton kernel (fused LM head); CPU-only torch wheels ship no Triton
    from trl.trainer import utils as _trl_utils

    _TRL_NEEDS_MISSING_TRITON = getattr(_trl_utils, "_ChunkedLogProbFunction", object()) is None
except ImportError:
    _TRL_NEEDS_MISSING_TRITON = False
needs_trl_loss_on_cpu = pytest.mark.skipif(
    _TRL_NEEDS_MISSING_TRITON,
    reason=f"trl {trl.__version__} GRPOTrainer scores tokens with a Triton kernel; triton is not installed",
)

ATOL = 1e-5  # fp32 throughout; the differences reached are ~1e-7 (see __main__ below and the docs)
G = 4
MAX_COMPLETION_LENGTH = 8  # larger than the batch's widest completion (6), so dr_grpo's constant matters
# Two prompts x G completions: different prompt lengths (left padding) and completion lengths (right padding);
# rows ending in EOS finished, the others were truncated.
PROMPTS = [[5, 9, 12], [7, 3, 22, 40, 8]]
COMPLETIONS = [
    [11, 12, 13, EOS],
    [14, 15, 16, 17, 18, 19],
    [20, EOS],
    [21, 22, 23, 24, EOS],
    [30, 31, EOS],
    [32, 33, 34, 35, 36, 37],
    [38, EOS],
    [39, 40, 41, EOS],
]
REWARDS = [1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 0.0, 2.0]


def save_tiny_llama(path) -> str:
    """A 2-layer random LlamaForCausalLM saved to `path` (TRL loads its reference model from the path)."""
    tiny_llama(0, max_position_embeddings=64).save_pretrained(path)
    tiny_tokenizer(chat_template=False).save_pretrained(path)
    return str(path)


@dataclass(frozen=True)
class Case:
    loss_type: str
    beta: float = 0.0
    scale_rewards: bool = True
    epsilon_high: float | None = None
    kl_correction: bool = True
    temperature: float = 1.0

    @property
    def id(self) -> str:
        parts = [self.loss_type, f"beta{self.beta:g}"]
        if not self.scale_rewards:
            parts.append("noscale")
        if self.epsilon_high is not None:
            parts.append(f"epshigh{self.epsilon_high:g}")
        if self.beta and not self.kl_correction:
            parts.append("nokliscorr")
        if self.temperature != 1.0:
            parts.append(f"T{self.temperature:g}")
        return "-".join(parts)


CASES = [
    Case("grpo"),
    Case("grpo", beta=0.04),
    Case("grpo", beta=0.04, kl_correction=False, temperature=0.7),
    Case("dr_grpo", scale_rewards=False),
    Case("dr_grpo", beta=0.04, scale_rewards=False),
    Case("dapo", epsilon_high=0.28),
    Case("dapo", beta=0.04, epsilon_high=0.28),
    Case("bnpo", beta=0.04),
]


def make_trainer(model_dir: str, case: Case, out_dir: str, rollout_func=None, reward_func=None):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    args = GRPOConfig(
        output_dir=out_dir,
        report_to=[],
        use_cpu=True,
        bf16=False,
        per_device_train_batch_size=len(COMPLETIONS),  # one micro-batch = the whole generation batch
        num_generations=G,
        max_completion_length=MAX_COMPLETION_LENGTH,
        loss_type=case.loss_type,
        scale_rewards="group" if case.scale_rewards else "none",
        beta=case.beta,
        epsilon=0.2,
        epsilon_high=case.epsilon_high,
        use_bias_correction_kl=case.kl_correction,
        temperature=case.temperature,
        disable_dropout=True,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=model_dir,
        reward_funcs=reward_func or (lambda completions, **kw: [0.0] * len(completions)),
        args=args,
        train_dataset=Dataset.from_dict({"prompt": ["t1 t2"] * len(COMPLETIONS)}),
        processing_class=tiny_tokenizer(chat_template=False),
        rollout_func=rollout_func,
    )
    # The state TRL's training loop would be in: train mode, no gradient accumulation.
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1
    return trainer


def our_config(case: Case) -> MiniGRPOConfig:
    return MiniGRPOConfig(
        num_generations=G,
        max_completion_length=MAX_COMPLETION_LENGTH,
        loss_type=case.loss_type,
        scale_rewards=case.scale_rewards,
        beta=case.beta,
        epsilon=0.2,
        epsilon_high=case.epsilon_high,
        kl_importance_correction=case.kl_correction,
        temperature=case.temperature,
        lora=None,
    )


def fixed_batch() -> dict[str, torch.Tensor]:
    """PROMPTS (left-padded, each repeated G times) and COMPLETIONS (right-padded) as tensors."""
    prompts = [p for p in PROMPTS for _ in range(G)]
    p_len = max(map(len, prompts))
    c_len = max(map(len, COMPLETIONS))
    prompt_ids = torch.tensor([[PAD] * (p_len - len(p)) + p for p in prompts])  # [N, P]
    prompt_mask = torch.tensor([[0] * (p_len - len(p)) + [1] * len(p) for p in prompts])  # [N, P]
    completion_ids = torch.tensor([c + [PAD] * (c_len - len(c)) for c in COMPLETIONS])  # [N, C]
    completion_mask = torch.tensor([[1] * len(c) + [0] * (c_len - len(c)) for c in COMPLETIONS])  # [N, C]
    return {
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
    }


def compare(model_dir: str, out_dir: str, case: Case, our_case: Case | None = None) -> dict[str, float]:
    """Run both implementations on the fixed batch; return the largest absolute differences.

    `our_case` (default: `case`) lets a test configure our side differently, to show the check can fail.
    """
    trainer = make_trainer(model_dir, case, out_dir)
    model = trainer.model
    cfg = our_config(our_case or case)
    batch = fixed_batch()
    input_ids = torch.cat([batch["prompt_ids"], batch["completion_ids"]], dim=1)
    attention_mask = torch.cat([batch["prompt_mask"], batch["completion_mask"]], dim=1)
    c = batch["completion_ids"].size(1)
    mask = batch["completion_mask"].bool()

    advantages = group_advantages(torch.tensor(REWARDS), G, scale_rewards=case.scale_rewards)
    with torch.no_grad():
        base = per_token_logps(model, input_ids, attention_mask, c, case.temperature)
        noise = torch.Generator().manual_seed(1)
        old = base + 0.3 * torch.randn(base.shape, generator=noise)  # ratios well outside 1 ± 0.2
        ref = base + 0.5 * torch.randn(base.shape, generator=noise)
        trl_logps, _, _ = trainer._get_per_token_logps_and_entropies(model, input_ids, attention_mask, c)

    inputs = {
        **batch,
        "advantages": advantages,
        "old_per_token_logps": old,
        "num_items_in_batch": batch["completion_mask"].sum(),
    }
    if case.beta:
        inputs["ref_per_token_logps"] = ref

    model.zero_grad(set_to_none=True)
    trl_loss = trainer.compute_loss(model, inputs)
    trl_loss.backward()
    trl_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad(set_to_none=True)
    logps = per_token_logps(model, input_ids, attention_mask, c, case.temperature)
    our_loss, stats = grpo_loss(logps, old, advantages, batch["completion_mask"], cfg, ref if case.beta else None)
    our_loss.backward()
    our_grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    assert set(our_grads) == set(trl_grads) and our_grads, "both losses must reach the same parameters"
    assert 0.0 < stats.clip_ratio < 1.0, "the fixed batch must exercise clipping"
    return {
        "loss": float(our_loss.detach()),
        "logps_max_abs_diff": float((logps.detach() - trl_logps)[mask].abs().max()),
        "loss_abs_diff": abs(float(our_loss.detach()) - float(trl_loss.detach())),
        "grad_max_abs_diff": max(float((our_grads[n] - trl_grads[n]).abs().max()) for n in our_grads),
        "grad_max_abs": max(float(g.abs().max()) for g in trl_grads.values()),
        "clip_ratio": stats.clip_ratio,
    }


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> str:
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@needs_trl_loss_on_cpu
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_grpo_loss_matches_trl_loss_and_gradients(model_dir, tmp_path, case):
    diffs = compare(model_dir, str(tmp_path), case)
    assert diffs["logps_max_abs_diff"] <= ATOL
    assert diffs["loss_abs_diff"] <= ATOL
    assert diffs["grad_max_abs_diff"] <= ATOL
    assert diffs["grad_max_abs"] > 1e-3, "gradients must be non-trivial for the comparison to mean anything"


@needs_trl_loss_on_cpu
@pytest.mark.parametrize(
    ("trl_case", "our_case"),
    [(Case("grpo"), Case("dr_grpo")), (Case("dapo", beta=0.04), Case("dapo", beta=0.04, kl_correction=False))],
    ids=["grpo-vs-dr_grpo", "kl-correction-on-vs-off"],
)
def test_grpo_loss_cross_check_detects_a_mismatched_setting(model_dir, tmp_path, trl_case, our_case):
    """Negative control: a different normalisation or KL form is visible far above the tolerance."""
    diffs = compare(model_dir, str(tmp_path), trl_case, our_case)
    assert diffs["grad_max_abs_diff"] > 100 * ATOL


@pytest.mark.parametrize("scale_rewards", [True, False], ids=["group", "none"])
def test_group_advantages_match_trl_generate_and_score(model_dir, tmp_path, scale_rewards):
    """TRL's real reward → advantage path (`_generate_and_score_completions`) on fixed completions."""
    # The second group is all-equal: both implementations must give it zero advantage.
    rewards = [1.0, 0.0, 2.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    prompts = [p for p in PROMPTS for _ in range(G)]

    def rollout_func(batch_prompts, trainer):
        return {"prompt_ids": prompts, "completion_ids": COMPLETIONS, "logprobs": None}

    def fixed_reward(completions, reward, **kwargs):
        return list(reward)

    case = Case("grpo", scale_rewards=scale_rewards)
    trainer = make_trainer(model_dir, case, str(tmp_path), rollout_func=rollout_func, reward_func=fixed_reward)
    inputs = [{"prompt": "t1 t2", "reward": r} for r in rewards]
    out = trainer._generate_and_score_completions(inputs)

    ours = group_advantages(torch.tensor(rewards), G, scale_rewards=scale_rewards)
    torch.testing.assert_close(ours, out["advantages"], atol=1e-6, rtol=0)
    # TRL's padding of the same lists must give the tensors our fixed batch uses.
    batch = fixed_batch()
    for key in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
        assert torch.equal(out[key], batch[key]), key


if __name__ == "__main__":  # print the differences reached, for docs/grpo_explained.md
    import tempfile

    print(f"trl {trl.__version__}, torch {torch.__version__}, fp32, tiny random LlamaForCausalLM")
    print(f"{'case':34} {'loss':>10} {'|Δ logps|max':>13} {'|Δ loss|':>10} {'|Δ grad|max':>12} {'|grad|max':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        directory = save_tiny_llama(os.path.join(tmp, "model"))
        for case in CASES:
            d = compare(directory, os.path.join(tmp, case.id), case)
            print(
                f"{case.id:34} {d['loss']:10.6f} {d['logps_max_abs_diff']:13.2e} {d['loss_abs_diff']:10.2e} "
                f"{d['grad_max_abs_diff']:12.2e} {d['grad_max_abs']:10.2e}"
            )
