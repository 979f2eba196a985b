"""GRPO in one readable file of plain PyTorch: sample a group, score it, push up the better half.

The objective (DeepSeekMath, Shao et al. 2024, arXiv 2402.03300, eq. 3), maximised over θ::

    J(θ) = E_{q, {o_i}_{i=1..G} ~ π_old(·|q)}  1/G Σ_i 1/|o_i| Σ_t [
               min( ρ_{i,t} Â_{i,t},  clip(ρ_{i,t}, 1-ε, 1+ε) Â_{i,t} )  -  β D_KL[π_θ || π_ref]_{i,t} ]

    ρ_{i,t} = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | q, o_{i,<t})    importance ratio
    Â_{i,t} = (r_i - mean(r_1..r_G)) / std(r_1..r_G)                      outcome supervision (§4.1.2): every
                                                                           token of o_i gets the same Â
    D_KL    = π_ref/π_θ - log(π_ref/π_θ) - 1                               eq. 4, Schulman's k3 estimator:
                                                                           unbiased and always >= 0

What replaces PPO's learned critic is the group: G completions of the same prompt are sampled and each one's
reward is compared with its siblings' mean. No value network, so no second model's weights, gradients and
optimizer state (see `teaching/mini_ppo.py` and `teaching/grpo_vs_ppo_memory.py` for the measured cost).

Variants implemented, each a config switch:

* `scale_rewards=False`: Dr. GRPO (Liu et al. 2025, arXiv 2503.20783) drops the division by the group
  std, which up-weights prompts that are nearly always solved or nearly always failed ("question-level
  difficulty bias", §3).
* `loss_type`: how the per-token terms are averaged. `grpo` is eq. 3 literally (mean over the tokens of a
  sequence, then over sequences), which favours short right answers and long wrong ones. `dr_grpo` divides the
  token sum by a constant, `batch_size × max_completion_length` (Dr. GRPO §3). `bnpo` and `dapo` divide by
  the number of real tokens in the batch (DAPO, Yu et al. 2025, arXiv 2503.14476, §3.3 "token-level policy
  gradient loss"; `dapo` counts tokens over the whole generation batch, `bnpo` over the micro-batch; they
  coincide when the batch is not split, as in this loop).
* `epsilon_high`: DAPO's "Clip-Higher" (§3.1) lets low-probability tokens grow more (upper bound 1+ε_high)
  than they may shrink (lower bound 1-ε).
* `beta > 0`: the k3 KL to a frozen reference (the SFT model). With LoRA the reference costs nothing: it is
  the same network with the adapter switched off.

The loss is written to agree with TRL's `GRPOTrainer._compute_loss` for the same inputs;
tests/test_mini_grpo_vs_trl.py checks loss and gradients against TRL's own code, and docs/grpo_explained.md
records the tolerances reached.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from reasoning_rl.paths import adapter_dir

LossType = Literal["grpo", "bnpo", "dr_grpo", "dapo"]
LOSS_TYPES: tuple[str, ...] = ("grpo", "bnpo", "dr_grpo", "dapo")
# The SFT stage writes its LoRA adapter there; GRPO starts from it when it exists, as DeepSeek-R1 starts RL
# from a "cold start" SFT on formatted reasoning (arXiv 2501.12948 §2.3.1).
DEFAULT_SFT_ADAPTER = adapter_dir("sft")
# Every linear layer of a Llama block: LoRA on all of them tracks full fine-tuning much better than on
# attention alone (QLoRA, Dettmers et al. 2023, arXiv 2305.14314 §4).
LLAMA_LINEAR_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


# ----------------------------------------------------------------------------------------------------------
# Configuration
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (Hu et al. 2021, arXiv 2106.09685) on the policy; `lora=None` means full fine-tuning."""

    r: int = 16
    alpha: int = 32  # alpha = 2r, as params.yaml's SFT adapter (the LoRA paper §4.1 fixes α, tunes lr)
    dropout: float = 0.0  # dropout would make π_θ differ from π_old on the very batch it sampled
    target_modules: tuple[str, ...] = LLAMA_LINEAR_MODULES

    def __post_init__(self) -> None:
        if self.r < 1:
            raise ValueError(f"lora r must be >= 1, got {self.r!r}")
        if self.alpha <= 0:
            raise ValueError(f"lora alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"lora dropout must be in [0, 1), got {self.dropout!r}")
        if not self.target_modules:
            raise ValueError("lora target_modules must name at least one module, got an empty tuple")


@dataclass
class MiniGRPOConfig:
    """Everything the mini loop needs; defaults follow DeepSeekMath §4.2 unless a comment says otherwise."""

    num_generations: int = 8  # G. DeepSeekMath samples 64; 8 is TRL's default and fits a CPU
    max_completion_length: int = 256
    temperature: float = 1.0  # sample from π itself, so the ratio ρ is exactly 1 on the first iteration
    epsilon: float = 0.2  # PPO's clip range (Schulman et al. 2017, arXiv 1707.06347, §6: best of 0.1/0.2/0.3)
    epsilon_high: float | None = None  # None = symmetric; DAPO's Clip-Higher uses 0.28
    beta: float = 0.0  # KL weight. DeepSeekMath used 0.04; DAPO (§2.3) and TRL's default drop the term
    # Multiply the k3 KL by ρ, which makes its gradient the unbiased reverse-KL gradient (DeepSeek-V3.2,
    # arXiv 2512.02556); TRL does so by default (`use_bias_correction_kl=True`), DeepSeekMath eq. 3 does not.
    kl_importance_correction: bool = False
    loss_type: LossType = "grpo"
    scale_rewards: bool = True  # False = Dr. GRPO's unscaled advantages
    # Added to the group std so that a near-constant group cannot blow the advantages up; TRL's constant.
    advantage_eps: float = 1e-4
    num_iterations: int = 1  # μ in DeepSeekMath Algorithm 1: policy updates per sampled batch
    # DeepSeekMath §4.2 (full fine-tuning); LoRA wants ~10x more (Thinking Machines, "LoRA Without Regret", 2025)
    learning_rate: float = 1e-6
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    reward_names: tuple[str, ...] = ("format", "correctness")
    reward_weights: tuple[float, ...] | None = None  # None = every reward weighs 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        bad: list[str] = []
        if self.num_generations < 2:
            bad.append(f"num_generations must be >= 2 to form a group (got {self.num_generations!r})")
        if self.max_completion_length < 1:
            bad.append(f"max_completion_length must be >= 1 (got {self.max_completion_length!r})")
        if not self.temperature > 0:
            bad.append(f"temperature must be > 0 (got {self.temperature!r})")
        if not 0 < self.epsilon < 1:
            bad.append(f"epsilon must be in (0, 1) (got {self.epsilon!r})")
        if self.epsilon_high is not None and not self.epsilon_high > 0:
            bad.append(f"epsilon_high must be > 0 or None (got {self.epsilon_high!r})")
        if not self.beta >= 0:
            bad.append(f"beta must be >= 0 (got {self.beta!r})")
        if self.loss_type not in LOSS_TYPES:
            bad.append(f"loss_type must be one of {LOSS_TYPES} (got {self.loss_type!r})")
        if not self.advantage_eps > 0:
            bad.append(f"advantage_eps must be > 0 (got {self.advantage_eps!r})")
        if self.num_iterations < 1:
            bad.append(f"num_iterations must be >= 1 (got {self.num_iterations!r})")
        if not self.learning_rate > 0:
            bad.append(f"learning_rate must be > 0 (got {self.learning_rate!r})")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad.append(f"max_grad_norm must be > 0 or None (got {self.max_grad_norm!r})")
        if not self.weight_decay >= 0:
            bad.append(f"weight_decay must be >= 0 (got {self.weight_decay!r})")
        if not self.reward_names:
            bad.append("reward_names must name at least one reward function (got an empty tuple)")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_names):
            bad.append(
                f"reward_weights has {len(self.reward_weights)} entries for {len(self.reward_names)} "
                f"reward_names (got {self.reward_weights!r})"
            )
        if bad:
            raise ValueError("invalid MiniGRPOConfig: " + "; ".join(bad))

    @property
    def epsilon_low(self) -> float:
        return self.epsilon

    @property
    def clip_high(self) -> float:
        return self.epsilon if self.epsilon_high is None else self.epsilon_high


# ----------------------------------------------------------------------------------------------------------
# Advantages: the whole "critic" of GRPO
# ----------------------------------------------------------------------------------------------------------


def group_advantages(rewards: Tensor, num_generations: int, scale_rewards: bool = True, eps: float = 1e-4) -> Tensor:
    """Â_i = (r_i - mean_group) / (std_group + eps), or without the division when `scale_rewards` is False.

    `rewards` is [num_prompts * G], ordered prompt by prompt (the G completions of prompt 0 first). The std is
    the unbiased one (Bessel), as TRL's `nanstd`. A group whose rewards are all equal gets exactly zero: float
    rounding in its mean must not invent a signal the group does not have.
    """
    if rewards.dim() != 1 or rewards.numel() == 0 or rewards.numel() % num_generations:
        raise ValueError(
            f"rewards must be 1-D with a multiple of num_generations={num_generations} entries, "
            f"got shape {tuple(rewards.shape)}"
        )
    grouped = rewards.view(-1, num_generations)  # [num_prompts, G]
    mean = grouped.mean(dim=1, keepdim=True)  # [num_prompts, 1]
    advantages = grouped - mean  # [num_prompts, G]
    if scale_rewards:
        std = grouped.std(dim=1, keepdim=True)  # [num_prompts, 1]
        advantages = advantages / (std + eps)
    constant = (grouped == grouped[:, :1]).all(dim=1, keepdim=True)  # [num_prompts, 1]
    advantages = advantages.masked_fill(constant, 0.0)
    return advantages.reshape(-1)  # [num_prompts * G]


@dataclass(frozen=True)
class AdvantageRow:
    index: int
    completion: str  # shortened for display
    reward: float
    advantage: float
    push: str  # "up", "down" or "none": what the policy-gradient step does to this completion's tokens


@dataclass(frozen=True)
class GroupExplanation:
    rows: tuple[AdvantageRow, ...]
    mean: float
    std: float
    scale_rewards: bool
    all_equal: bool
    note: str


ZERO_SIGNAL_NOTE = (
    "All {n} completions got the same reward ({reward:g}), so every advantage is r - mean = 0 and the policy "
    "gradient for this prompt is exactly zero: nothing in the group is better or worse than its siblings, so "
    "GRPO has nothing to reinforce or discourage. Such a prompt only costs sampling time (DAPO's 'dynamic "
    "sampling', arXiv 2503.14476 §3.2, filters these groups out). It is either too hard (all fail) or "
    "already solved (all succeed) for the current policy."
)


def shorten(text: str, width: int = 80) -> str:
    """One line of at most `width` characters: a completion's head and tail, which is where format lives."""
    flat = " ".join(text.split())
    if len(flat) <= width:
        return flat
    head = (width - 3) * 2 // 3
    tail = width - 3 - head
    return flat[:head] + "..." + flat[len(flat) - tail :]


def explain_group(
    completions: Sequence[str],
    rewards: Sequence[float],
    scale_rewards: bool = True,
    eps: float = 1e-4,
    width: int = 80,
) -> GroupExplanation:
    """The advantage table for one group, with no model involved (the explainer script and tests use it)."""
    if len(completions) != len(rewards):
        raise ValueError(f"{len(completions)} completions but {len(rewards)} rewards")
    if len(rewards) < 2:
        raise ValueError(f"a group needs at least 2 completions, got {len(rewards)}")
    r = torch.tensor(list(rewards), dtype=torch.float64)  # [G]
    adv = group_advantages(r, num_generations=len(rewards), scale_rewards=scale_rewards, eps=eps)  # [G]
    all_equal = bool((r == r[0]).all())
    rows = tuple(
        AdvantageRow(
            index=i,
            completion=shorten(text, width),
            reward=float(r[i]),
            advantage=float(adv[i]),
            push="up" if adv[i] > 0 else "down" if adv[i] < 0 else "none",
        )
        for i, text in enumerate(completions)
    )
    if all_equal:
        note = ZERO_SIGNAL_NOTE.format(n=len(rewards), reward=float(r[0]))
    else:
        ups = sum(row.push == "up" for row in rows)
        note = (
            f"{ups} of {len(rows)} completions beat the group mean: their tokens' log-probabilities are "
            "pushed up, the others' pushed down, each in proportion to |advantage|. Advantages sum to zero: "
            "the group mean is the baseline a PPO critic would otherwise have to learn."
        )
    return GroupExplanation(
        rows=rows,
        mean=float(r.mean()),
        std=float(r.std()),
        scale_rewards=scale_rewards,
        all_equal=all_equal,
        note=note,
    )


def explanation_markdown(
    expl: GroupExplanation, header: str = "", extra_columns: dict[str, Sequence[str]] | None = None
) -> str:
    """The group table as Markdown; `extra_columns` (name -> one cell per row) go before the reward column.

    Pipes and backticks in completions are escaped so that the table stays a table.
    """
    extra = dict(extra_columns or {})
    for name, cells in extra.items():
        if len(cells) != len(expl.rows):
            raise ValueError(f"extra column {name!r} has {len(cells)} cells for {len(expl.rows)} rows")
    formula = "(r - mean) / (std + eps)" if expl.scale_rewards else "r - mean (Dr. GRPO, no std scaling)"
    lines = [header.rstrip(), ""] if header else []
    lines += [
        f"Group mean reward: **{expl.mean:.4f}**, std (unbiased): **{expl.std:.4f}**; advantage = {formula}.",
        "",
        "| # | completion (shortened) | " + "".join(f"{n} | " for n in extra) + "reward | advantage | push |",
        "|---:|---|" + "---:|" * len(extra) + "---:|---:|---|",
    ]
    arrows = {"up": "up (more likely)", "down": "down (less likely)", "none": "none (zero gradient)"}
    for i, row in enumerate(expl.rows):
        text = row.completion.replace("|", "\\|").replace("`", "'")
        cells = "".join(f"{extra[n][i]} | " for n in extra)
        lines.append(f"| {row.index} | {text} | {cells}{row.reward:g} | {row.advantage:+.4f} | {arrows[row.push]} |")
    lines += ["", expl.note, ""]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------
# Log-probabilities and the loss
# ----------------------------------------------------------------------------------------------------------


def per_token_logps(
    model: nn.Module, input_ids: Tensor, attention_mask: Tensor, logits_to_keep: int, temperature: float = 1.0
) -> Tensor:
    """log π(token_t | tokens_<t) for the last `logits_to_keep` tokens of each row.

    input_ids/attention_mask: [B, P + C] (left-padded prompt, then right-padded completion); returns [B, C].
    Positions are left as the model's default (0..L-1), as TRL does: RoPE only sees position differences, so
    left padding shifts every position equally and changes nothing but rounding.
    """
    out = model(input_ids=input_ids, attention_mask=attention_mask, logits_to_keep=logits_to_keep + 1, use_cache=False)
    # The logit at position t predicts token t+1, so the last kept logit predicts nothing and is dropped.
    logits = out.logits[:, :-1, :].float()  # [B, C, V]; fp32 so bf16 models still get exact-enough logps
    if temperature != 1.0:
        logits = logits / temperature  # sampling used softmax(logits / T), so the ratio must too
    targets = input_ids[:, -logits_to_keep:]  # [B, C]
    # gather - logsumexp is log_softmax + gather without a second [B, C, V] tensor
    target_logits = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [B, C]
    return target_logits - torch.logsumexp(logits, dim=-1)  # [B, C]


def clipped_surrogate(ratio: Tensor, advantages: Tensor, epsilon_low: float, epsilon_high: float) -> Tensor:
    """-min(ρ·A, clip(ρ, 1-ε_low, 1+ε_high)·A) per token (PPO eq. 7); shared with mini_ppo.

    ratio: [B, C]; advantages: [B, 1] (GRPO: one per sequence) or [B, C] (PPO: one per token). Returns [B, C].
    """
    clipped = torch.clamp(ratio, 1 - epsilon_low, 1 + epsilon_high)  # [B, C]
    return -torch.min(ratio * advantages, clipped * advantages)  # [B, C]


def k3_kl(per_token_logps: Tensor, ref_per_token_logps: Tensor) -> Tensor:
    """π_ref/π_θ - log(π_ref/π_θ) - 1 per token (DeepSeekMath eq. 4): >= 0, 0 where the two agree. [B, C]"""
    log_ratio = ref_per_token_logps - per_token_logps  # [B, C]
    return torch.exp(log_ratio) - log_ratio - 1


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over the positions where mask is 1 (a scalar); 0 when the mask is empty."""
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def aggregate_loss(
    per_token_loss: Tensor,
    mask: Tensor,
    loss_type: str,
    max_completion_length: int,
    num_items_in_batch: Tensor | float | None = None,
) -> Tensor:
    """Reduce [B, C] per-token losses to a scalar; only real (mask == 1) tokens count.

    grpo: per-sequence mean, then mean over sequences (eq. 3's 1/|o_i|).  bnpo: mean over the batch's tokens.
    dapo: sum / tokens in the whole generation batch (`num_items_in_batch`, default: this batch's).
    dr_grpo: sum / (B × max_completion_length), a constant, so no sequence's length changes its weight.
    """
    masked = per_token_loss * mask  # [B, C]
    if loss_type == "grpo":
        return (masked.sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if loss_type == "bnpo":
        return masked.sum() / mask.sum().clamp(min=1.0)
    if loss_type == "dr_grpo":
        return masked.sum() / (per_token_loss.size(0) * max_completion_length)
    if loss_type == "dapo":
        n = mask.sum() if num_items_in_batch is None else torch.as_tensor(num_items_in_batch, dtype=mask.dtype)
        return masked.sum() / n.clamp(min=1.0)
    raise ValueError(f"loss_type must be one of {LOSS_TYPES}, got {loss_type!r}")


@dataclass(frozen=True)
class LossStats:
    kl: float  # mean k3 KL over real tokens (0.0 when beta == 0)
    clip_ratio: float  # fraction of real tokens whose ratio sat outside the clip range in the gradient-killing way
    ratio_mean: float


def grpo_loss(
    per_token_logps: Tensor,
    old_per_token_logps: Tensor,
    advantages: Tensor,
    completion_mask: Tensor,
    cfg: MiniGRPOConfig,
    ref_per_token_logps: Tensor | None = None,
    num_items_in_batch: Tensor | float | None = None,
) -> tuple[Tensor, LossStats]:
    """The negated GRPO objective for one batch (minimise it).

    per_token_logps (with grad), old_per_token_logps, ref_per_token_logps, completion_mask: [B, C];
    advantages: [B] (one per completion; outcome supervision gives every token the same value).
    """
    mask = completion_mask.to(per_token_logps.dtype)  # [B, C]
    adv = advantages.to(per_token_logps.device, per_token_logps.dtype).unsqueeze(1)  # [B, 1]
    ratio = torch.exp(per_token_logps - old_per_token_logps)  # [B, C]
    per_token_loss = clipped_surrogate(ratio, adv, cfg.epsilon_low, cfg.clip_high)  # [B, C]
    kl_value = 0.0
    if cfg.beta != 0.0:
        if ref_per_token_logps is None:
            raise ValueError(f"beta={cfg.beta} needs ref_per_token_logps")
        kl = k3_kl(per_token_logps, ref_per_token_logps)  # [B, C]
        kl_value = float(masked_mean(kl.detach(), mask))
        if cfg.kl_importance_correction:
            kl = kl * ratio
        per_token_loss = per_token_loss + cfg.beta * kl  # [B, C]
    loss = aggregate_loss(per_token_loss, mask, cfg.loss_type, cfg.max_completion_length, num_items_in_batch)
    with torch.no_grad():
        # Clipping only bites where it removes the gradient: ρ below 1-ε with A < 0, or above 1+ε with A > 0.
        clipped = ((ratio < 1 - cfg.epsilon_low) & (adv < 0)) | ((ratio > 1 + cfg.clip_high) & (adv > 0))
        stats = LossStats(
            kl=kl_value,
            clip_ratio=float(masked_mean(clipped.to(mask.dtype), mask)),
            ratio_mean=float(masked_mean(ratio, mask)),
        )
    return loss, stats


# ----------------------------------------------------------------------------------------------------------
# Rollouts and rewards
# ----------------------------------------------------------------------------------------------------------


@dataclass
class Rollout:
    """G completions per prompt, padded for one forward pass."""

    prompt_ids: Tensor  # [N, P] left-padded, N = num_prompts * G
    prompt_mask: Tensor  # [N, P]
    completion_ids: Tensor  # [N, C] right-padded
    completion_mask: Tensor  # [N, C] 1 up to and including the first EOS
    completions: list[str] = field(default_factory=list)

    @property
    def input_ids(self) -> Tensor:
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)  # [N, P + C]

    @property
    def attention_mask(self) -> Tensor:
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)  # [N, P + C]

    @property
    def completion_length(self) -> int:
        return self.completion_ids.size(1)


def completion_mask_from_ids(completion_ids: Tensor, eos_token_id: int) -> Tensor:
    """1 for every token up to and including the first EOS, 0 after it (and all 1s for a truncated row).

    The EOS itself stays in the loss: ending the answer is a decision the policy must learn too.
    completion_ids [N, C] -> mask [N, C].
    """
    is_eos = completion_ids == eos_token_id  # [N, C]
    length = completion_ids.size(1)
    first_eos = torch.where(
        is_eos.any(dim=1), is_eos.int().argmax(dim=1), torch.full_like(is_eos[:, 0], length, dtype=torch.long)
    )  # [N]
    positions = torch.arange(length, device=completion_ids.device).expand_as(completion_ids)  # [N, C]
    return (positions <= first_eos.unsqueeze(1)).long()  # [N, C]


@torch.no_grad()
def generate_rollouts(
    model: nn.Module,
    tokenizer,
    prompts: Sequence[Sequence[dict[str, str]]],
    num_generations: int,
    max_completion_length: int,
    temperature: float = 1.0,
) -> Rollout:
    """Sample `num_generations` completions for each chat prompt, from the policy's own distribution.

    top_k=0 and top_p=1 so that the sampling distribution is exactly softmax(logits / T), the one whose
    log-probabilities the loss uses; a truncated sampler would make the first-iteration ratio differ from 1.
    """
    texts = [tokenizer.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in prompts]
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    device = next(model.parameters()).device
    prompt_ids = enc["input_ids"].repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    prompt_mask = enc["attention_mask"].repeat_interleave(num_generations, dim=0).to(device)  # [N, P]
    was_training = model.training
    model.eval()
    out = model.generate(
        input_ids=prompt_ids,
        attention_mask=prompt_mask,
        do_sample=True,
        temperature=temperature,
        top_k=0,
        top_p=1.0,
        max_new_tokens=max_completion_length,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # [N, P + C]
    model.train(was_training)
    completion_ids = out[:, prompt_ids.size(1) :]  # [N, C]
    completion_mask = completion_mask_from_ids(completion_ids, tokenizer.eos_token_id)  # [N, C]
    # Anything after the first EOS is padding; make it the pad id so decoding and hashing see clean rows.
    completion_ids = completion_ids.masked_fill(completion_mask == 0, tokenizer.pad_token_id)
    completions = tokenizer.batch_decode(completion_ids, skip_special_tokens=True)
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask, completions)


RewardFunc = Callable[..., list[float]]


def score_completions(
    completions: Sequence[str],
    answers: Sequence[str],
    reward_funcs: Sequence[RewardFunc],
    weights: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Weighted sum of the project's reward functions: ([N] total, [N, num_funcs] per function)."""
    weights = [1.0] * len(reward_funcs) if weights is None else list(weights)
    per_func = torch.tensor(
        [func(list(completions), answer=list(answers)) for func in reward_funcs], dtype=torch.float32
    ).T  # [N, F]
    total = (per_func * torch.tensor(weights, dtype=torch.float32)).sum(dim=1)  # [N]
    return total, per_func


# ----------------------------------------------------------------------------------------------------------
# Models: policy, reference, trainer
# ----------------------------------------------------------------------------------------------------------


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts; tied weights are counted once."""
    seen: set[int] = set()
    trainable = frozen = 0
    for p in model.parameters():  # parameters() already skips repeats of a tied tensor
        if id(p) in seen:
            continue
        seen.add(id(p))
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def freeze(model: nn.Module) -> nn.Module:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def prepare_policy(model: nn.Module, lora: LoraSettings | None, beta: float) -> tuple[nn.Module, nn.Module | None]:
    """Make `model` trainable; return (policy, reference or None).

    LoRA: only the adapter trains, and the reference is the same network with the adapter disabled, so it
    costs no memory. Full fine-tuning: every weight trains, and a frozen copy is the reference when beta > 0.
    """
    if lora is not None:
        from peft import LoraConfig, get_peft_model

        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=list(lora.target_modules),
            task_type="CAUSAL_LM",
        )
        return get_peft_model(model, config), None
    reference = freeze(copy.deepcopy(model)) if beta > 0 else None
    for p in model.parameters():
        p.requires_grad_(True)
    return model, reference


@torch.no_grad()
def reference_logps(
    policy: nn.Module,
    reference: nn.Module | None,
    input_ids: Tensor,
    attention_mask: Tensor,
    logits_to_keep: int,
    temperature: float = 1.0,
) -> Tensor:
    """log π_ref per completion token [B, C]: the frozen copy, or the LoRA policy with adapter disabled."""
    if reference is not None:
        return per_token_logps(reference, input_ids, attention_mask, logits_to_keep, temperature)
    if not hasattr(policy, "disable_adapter"):
        raise ValueError("beta > 0 needs a reference model, or a LoRA (peft) policy whose adapter can be disabled")
    with policy.disable_adapter():
        return per_token_logps(policy, input_ids, attention_mask, logits_to_keep, temperature)


def load_policy(
    model_name: str | None = None,
    adapter: str | Path | None = DEFAULT_SFT_ADAPTER,
    dtype: str = "auto",
):
    """Load the base model, with the SFT adapter merged in when one exists at `adapter`.

    Merging makes the SFT model the new base: a fresh GRPO LoRA goes on top of it, and "adapter disabled" then
    means "the SFT model", which is the reference GRPO's KL should pull towards.
    Returns (model, tokenizer, description of what was loaded).
    """
    import json

    from reasoning_rl.model.loading import EMBEDDED_MODEL, load_model, resolve_model_path

    model_name = model_name or EMBEDDED_MODEL
    config = Path(adapter) / "adapter_config.json" if adapter is not None else None
    use_adapter = config is not None and config.is_file()
    note = "no SFT adapter found"
    if use_adapter:  # the pipeline's adapter fits only the base model it was trained on
        trained_on = json.loads(config.read_text()).get("base_model_name_or_path")
        if trained_on and trained_on not in (model_name, str(resolve_model_path(model_name))):
            use_adapter, note = False, f"the SFT adapter at {adapter} was trained on {trained_on}: not used"
    loaded = load_model(model_name, dtype=dtype, adapter=adapter if use_adapter else None)
    model = loaded.model
    if use_adapter:
        model = model.merge_and_unload()
    source = f"{loaded.path} + SFT adapter {adapter}" if use_adapter else f"{loaded.path} ({note})"
    return model, loaded.tokenizer, source


@dataclass(frozen=True)
class StepStats:
    step: int
    reward_mean: float
    reward_per_func: dict[str, float]
    zero_std_groups: float  # fraction of groups whose rewards were all equal (no learning signal)
    loss: float
    kl: float
    clip_ratio: float
    grad_norm: float
    completion_tokens_mean: float
    seconds: float


def sample_and_score(trainer, prompts, answers) -> tuple[Rollout, Tensor, Tensor]:
    """Sample G completions per prompt and score them: the rollout half shared by GRPO and PPO.

    `trainer` needs `.policy`, `.tokenizer`, `.reward_funcs` and `.cfg` (num_generations,
    max_completion_length, temperature, reward_weights). Returns the rollout, the weighted rewards [N] and
    per-function rewards [N, num_funcs].
    """
    cfg = trainer.cfg
    rollout = generate_rollouts(
        trainer.policy,
        trainer.tokenizer,
        prompts,
        cfg.num_generations,
        cfg.max_completion_length,
        cfg.temperature,
    )
    group_answers = [a for a in answers for _ in range(cfg.num_generations)]  # each answer G times
    rewards, per_func = score_completions(rollout.completions, group_answers, trainer.reward_funcs, cfg.reward_weights)
    return rollout, rewards, per_func


class MiniGRPOTrainer:
    """The loop: sample G completions per prompt, score, compute group advantages, take μ clipped steps."""

    def __init__(
        self,
        policy: nn.Module,
        tokenizer,
        cfg: MiniGRPOConfig,
        reference: nn.Module | None = None,
        reward_funcs: Sequence[RewardFunc] | None = None,
    ):
        if reward_funcs is None:
            from reasoning_rl.task.rewards import get_reward_funcs

            reward_funcs = get_reward_funcs(list(cfg.reward_names))
        if cfg.beta > 0 and reference is None and not hasattr(policy, "disable_adapter"):
            raise ValueError(f"beta={cfg.beta} needs a reference model (full fine-tuning) or a LoRA policy")
        self.policy, self.reference, self.tokenizer, self.cfg = policy, reference, tokenizer, cfg
        self.reward_funcs = list(reward_funcs)
        self.reward_names = [getattr(f, "__name__", f"reward_{i}") for i, f in enumerate(self.reward_funcs)]
        params = [p for p in policy.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.step_count = 0

    def optimise(self, rollout: Rollout, advantages: Tensor) -> tuple[float, LossStats, float]:
        """μ policy-gradient steps on one sampled batch; returns (last loss, its stats, last grad norm)."""
        cfg = self.cfg
        input_ids, attention_mask = rollout.input_ids, rollout.attention_mask  # [N, P + C]
        c = rollout.completion_length
        self.policy.eval()  # no dropout while scoring the batch the policy just sampled
        with torch.no_grad():
            # μ = 1: π_old is π_θ itself, so ρ = 1 in value and only its gradient matters (TRL does the same).
            old = (
                per_token_logps(self.policy, input_ids, attention_mask, c, cfg.temperature)
                if cfg.num_iterations > 1
                else None
            )
            ref = (
                reference_logps(self.policy, self.reference, input_ids, attention_mask, c, cfg.temperature)
                if cfg.beta > 0
                else None
            )
        self.policy.train()
        loss_value, stats, grad_norm = math.nan, LossStats(0.0, 0.0, 1.0), math.nan
        for _ in range(cfg.num_iterations):
            logps = per_token_logps(self.policy, input_ids, attention_mask, c, cfg.temperature)  # [N, C]
            loss, stats = grpo_loss(
                logps, logps.detach() if old is None else old, advantages, rollout.completion_mask, cfg, ref
            )
            loss.backward()
            params = [p for g in self.optimizer.param_groups for p in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_value, grad_norm = float(loss.detach()), float(norm)
        return loss_value, stats, grad_norm

    def step(self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str]) -> StepStats:
        """One GRPO iteration on a batch of chat prompts with their gold answers."""
        cfg = self.cfg
        start = time.perf_counter()
        rollout, rewards, per_func = sample_and_score(self, prompts, answers)
        advantages = group_advantages(rewards, cfg.num_generations, cfg.scale_rewards, cfg.advantage_eps)  # [N]
        loss, stats, grad_norm = self.optimise(rollout, advantages)
        grouped = rewards.view(-1, cfg.num_generations)  # [num_prompts, G]
        self.step_count += 1
        return StepStats(
            step=self.step_count,
            reward_mean=float(rewards.mean()),
            reward_per_func={n: float(per_func[:, i].mean()) for i, n in enumerate(self.reward_names)},
            zero_std_groups=float((grouped == grouped[:, :1]).all(dim=1).float().mean()),
            loss=loss,
            kl=stats.kl,
            clip_ratio=stats.clip_ratio,
            grad_norm=grad_norm,
            completion_tokens_mean=float(rollout.completion_mask.sum(1).float().mean()),
            seconds=time.perf_counter() - start,
        )
