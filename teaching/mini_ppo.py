"""PPO with a learned critic, on the same model and batch as mini_grpo, to show what GRPO saves.

RLHF-style PPO as in InstructGPT (Ouyang et al. 2022, arXiv 2203.02155, eq. 2), with the implementation
details of Huang et al. 2024 ("The N+ implementation details of RLHF with PPO", arXiv 2403.17031) and TRL's
former PPOTrainer::

    token reward   r_t = -β (log π_old(o_t) - log π_ref(o_t))  +  [t = last token] · R(q, o)
    advantage      Â_t = GAE(γ, λ) over the critic's values V(s_t)   (Schulman et al. 2015, arXiv 1506.02438)
    policy loss    -min(ρ_t Â_t, clip(ρ_t, 1-ε, 1+ε) Â_t), averaged over real tokens   (shared with mini_grpo)
    value loss     ½ max((V_t - G_t)², (clip(V_t, V_old ± ε_v) - G_t)²),  G_t = Â_t + V_old   (weight vf_coef)

The critic is what GRPO removes. Here it is a second transformer as large as the policy: a copy of the
policy's backbone (the AutoModelForCausalLM without its LM head) with a scalar value head, initialised from
the policy, as PPO for LLMs does (InstructGPT initialises it from the reward model; there is none here, the
rewards are rules). It has its own weights, gradients and AdamW state; `teaching/grpo_vs_ppo_memory.py`
measures the cost.
With LoRA the critic's backbone is frozen and carries its own adapter, but its weights still have to be held.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from teaching.mini_grpo import (
    LoraSettings,
    RewardFunc,
    Rollout,
    clipped_surrogate,
    masked_mean,
    per_token_logps,
    reference_logps,
    sample_and_score,
)


@dataclass
class MiniPPOConfig:
    """PPO settings; defaults from TRL's former PPOConfig (γ=1, λ=0.95, clips 0.2, vf_coef 0.1)."""

    # Completions per prompt: PPO needs no groups, but sampling G per prompt gives it GRPO's exact batch.
    num_generations: int = 8
    max_completion_length: int = 256
    temperature: float = 1.0
    epsilon: float = 0.2  # Schulman et al. 2017, arXiv 1707.06347 §6
    cliprange_value: float = 0.2
    vf_coef: float = 0.1
    gamma: float = 1.0  # the reward arrives once at the end of a finite answer: no reason to discount it
    lam: float = 0.95
    beta: float = 0.04  # KL penalty in the reward; same value as GRPO's KL weight so the two compare
    num_ppo_epochs: int = 1  # TRL used 4; 1 keeps the CPU demo and memory measurement short (memory is per step)
    whiten_advantages: bool = True  # Huang et al. 2024 detail: normalise advantages over the batch's real tokens
    learning_rate: float = 1e-6
    max_grad_norm: float | None = 1.0
    weight_decay: float = 0.0
    lora: LoraSettings | None = field(default_factory=LoraSettings)
    reward_names: tuple[str, ...] = ("format", "correctness")
    reward_weights: tuple[float, ...] | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        bad: list[str] = []
        if self.num_generations < 1:
            bad.append(f"num_generations must be >= 1 (got {self.num_generations!r})")
        if self.max_completion_length < 1:
            bad.append(f"max_completion_length must be >= 1 (got {self.max_completion_length!r})")
        if not self.temperature > 0:
            bad.append(f"temperature must be > 0 (got {self.temperature!r})")
        if not 0 < self.epsilon < 1:
            bad.append(f"epsilon must be in (0, 1) (got {self.epsilon!r})")
        if not self.cliprange_value > 0:
            bad.append(f"cliprange_value must be > 0 (got {self.cliprange_value!r})")
        if not self.vf_coef > 0:
            bad.append(f"vf_coef must be > 0 (got {self.vf_coef!r})")
        if not 0 < self.gamma <= 1:
            bad.append(f"gamma must be in (0, 1] (got {self.gamma!r})")
        if not 0 <= self.lam <= 1:
            bad.append(f"lam must be in [0, 1] (got {self.lam!r})")
        if not self.beta >= 0:
            bad.append(f"beta must be >= 0 (got {self.beta!r})")
        if self.num_ppo_epochs < 1:
            bad.append(f"num_ppo_epochs must be >= 1 (got {self.num_ppo_epochs!r})")
        if not self.learning_rate > 0:
            bad.append(f"learning_rate must be > 0 (got {self.learning_rate!r})")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            bad.append(f"max_grad_norm must be > 0 or None (got {self.max_grad_norm!r})")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_names):
            bad.append(
                f"reward_weights has {len(self.reward_weights)} entries for {len(self.reward_names)} "
                f"reward_names (got {self.reward_weights!r})"
            )
        if bad:
            raise ValueError("invalid MiniPPOConfig: " + "; ".join(bad))


# ----------------------------------------------------------------------------------------------------------
# The critic
# ----------------------------------------------------------------------------------------------------------


class ValueModel(nn.Module):
    """V(s_t) for every prefix: a transformer backbone and a linear head to one scalar per position."""

    def __init__(self, backbone: nn.Module, hidden_size: int):
        super().__init__()
        self.backbone = backbone
        self.value_head = nn.Linear(hidden_size, 1)
        # N(0, 1/sqrt(d+1)): the scalar-head init of OpenAI's lm-human-preferences reward model (Huang et al.,
        # "The N Implementation Details of RLHF with PPO", 2023). A zero head would send the backbone no
        # gradient on the first step.
        nn.init.normal_(self.value_head.weight, std=1 / math.sqrt(hidden_size + 1))
        nn.init.zeros_(self.value_head.bias)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
        hidden = hidden.last_hidden_state  # [B, L, H]
        return self.value_head(hidden.to(self.value_head.weight.dtype)).squeeze(-1).float()  # [B, L]


def build_value_model(causal_lm: nn.Module, lora: LoraSettings | None) -> ValueModel:
    """A critic initialised from `causal_lm`: its backbone deep-copied (separate storage) plus a value head.

    Full fine-tuning trains the whole critic; with LoRA the copied backbone is frozen and gets its own
    adapter, and the head trains.
    """
    if hasattr(causal_lm, "peft_config"):
        raise ValueError("build the critic from the plain causal LM, before the policy is wrapped with LoRA")
    backbone = copy.deepcopy(causal_lm.base_model)  # e.g. LlamaModel: the transformer without its LM head
    critic = ValueModel(backbone, causal_lm.config.hidden_size).to(
        device=next(backbone.parameters()).device, dtype=next(backbone.parameters()).dtype
    )
    if lora is None:
        for p in critic.parameters():
            p.requires_grad_(True)
        return critic
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(
        r=lora.r, lora_alpha=lora.alpha, lora_dropout=lora.dropout, target_modules=list(lora.target_modules)
    )
    critic.backbone = get_peft_model(backbone, config)  # freezes the backbone's own weights
    critic.value_head.requires_grad_(True)
    return critic


# ----------------------------------------------------------------------------------------------------------
# Rewards, GAE, whitening
# ----------------------------------------------------------------------------------------------------------


def token_rewards(scores: Tensor, logps: Tensor, ref_logps: Tensor, mask: Tensor, beta: float) -> Tensor:
    """Per-token reward: -β·(log π - log π_ref) on every real token, plus the sequence score on the last one.

    scores: [B]; logps, ref_logps, mask: [B, C]; returns [B, C] (0 on padding). The k1 estimator is the one
    InstructGPT's eq. 2 puts in the reward; its expectation is the KL.
    """
    rewards = -beta * (logps - ref_logps) * mask  # [B, C]
    last = (mask.sum(dim=1).long() - 1).clamp(min=0)  # [B] index of each row's last real token
    return rewards.scatter_add(1, last.unsqueeze(1), (scores * mask.amax(dim=1)).unsqueeze(1).to(rewards.dtype))


def gae(rewards: Tensor, values: Tensor, mask: Tensor, gamma: float, lam: float) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation; returns (advantages, returns), both [B, C].

    δ_t = r_t + γ V_{t+1} - V_t and Â_t = δ_t + γλ Â_{t+1}, with V = 0 after the last real token (the episode
    ends there). Padding positions get 0 advantage.
    """
    values = values * mask  # [B, C]
    advantages = torch.zeros_like(rewards)  # [B, C]
    next_advantage = torch.zeros_like(rewards[:, 0])  # [B]
    next_value = torch.zeros_like(rewards[:, 0])  # [B]
    for t in reversed(range(rewards.size(1))):
        delta = rewards[:, t] + gamma * next_value - values[:, t]  # [B]
        next_advantage = (delta + gamma * lam * next_advantage) * mask[:, t]
        advantages[:, t] = next_advantage
        next_value = values[:, t]
    returns = advantages + values  # [B, C]
    return advantages, returns


def whiten(values: Tensor, mask: Tensor, eps: float = 1e-8) -> Tensor:
    """(x - mean) / std over the real tokens; padding stays 0."""
    mean = masked_mean(values, mask)
    var = masked_mean((values - mean) ** 2, mask)
    return (values - mean) * torch.rsqrt(var + eps) * mask


# ----------------------------------------------------------------------------------------------------------
# Trainer
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PPOStepStats:
    step: int
    reward_mean: float
    policy_loss: float
    value_loss: float
    kl: float
    grad_norm: float
    seconds: float


class MiniPPOTrainer:
    """Same loop as MiniGRPOTrainer, but the baseline comes from a learned critic instead of the group."""

    def __init__(
        self,
        policy: nn.Module,
        critic: ValueModel,
        tokenizer,
        cfg: MiniPPOConfig,
        reference: nn.Module | None = None,
        reward_funcs: Sequence[RewardFunc] | None = None,
    ):
        if reward_funcs is None:
            from reasoning_rl.task.rewards import get_reward_funcs

            reward_funcs = get_reward_funcs(list(cfg.reward_names))
        if cfg.beta > 0 and reference is None and not hasattr(policy, "disable_adapter"):
            raise ValueError(f"beta={cfg.beta} needs a reference model (full fine-tuning) or a LoRA policy")
        self.policy, self.critic, self.reference, self.tokenizer, self.cfg = (
            policy,
            critic,
            reference,
            tokenizer,
            cfg,
        )
        self.reward_funcs = list(reward_funcs)
        params = [p for m in (policy, critic) for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
        self.step_count = 0

    def optimise(self, rollout: Rollout, scores: Tensor) -> dict[str, float]:
        """PPO epochs on one sampled batch with per-sequence `scores` [N]."""
        cfg = self.cfg
        input_ids, attention_mask = rollout.input_ids, rollout.attention_mask  # [N, P + C]
        c, p = rollout.completion_length, rollout.prompt_ids.size(1)
        mask = rollout.completion_mask.float()  # [N, C]
        self.policy.eval()
        self.critic.eval()
        with torch.no_grad():
            old = per_token_logps(self.policy, input_ids, attention_mask, c, cfg.temperature)  # [N, C]
            ref = (
                reference_logps(self.policy, self.reference, input_ids, attention_mask, c, cfg.temperature)
                if cfg.beta > 0
                else old
            )
            # V(s_t) is read at the position just before completion token t is emitted.
            values = self.critic(input_ids, attention_mask)[:, p - 1 : -1] * mask  # [N, C]
            rewards = token_rewards(scores.to(old.device, old.dtype), old, ref, mask, cfg.beta)  # [N, C]
            advantages, returns = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # [N, C] each
            if cfg.whiten_advantages:
                advantages = whiten(advantages, mask)
            kl = float(masked_mean(old - ref, mask))
        self.policy.train()
        self.critic.train()
        out: dict[str, float] = {}
        for _ in range(cfg.num_ppo_epochs):
            logps = per_token_logps(self.policy, input_ids, attention_mask, c, cfg.temperature)  # [N, C]
            ratio = torch.exp(logps - old)  # [N, C]
            policy_loss = masked_mean(clipped_surrogate(ratio, advantages, cfg.epsilon, cfg.epsilon), mask)
            new_values = self.critic(input_ids, attention_mask)[:, p - 1 : -1]  # [N, C]
            clipped_values = values + torch.clamp(new_values - values, -cfg.cliprange_value, cfg.cliprange_value)
            value_loss = 0.5 * masked_mean(
                torch.max((new_values - returns) ** 2, (clipped_values - returns) ** 2), mask
            )
            loss = policy_loss + cfg.vf_coef * value_loss
            loss.backward()
            params = [q for g in self.optimizer.param_groups for q in g["params"]]
            norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm or float("inf"))
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            out = {
                "policy_loss": float(policy_loss.detach()),
                "value_loss": float(value_loss.detach()),
                "kl": kl,
                "grad_norm": float(norm),
            }
        return out

    def step(self, prompts: Sequence[Sequence[dict[str, str]]], answers: Sequence[str]) -> PPOStepStats:
        start = time.perf_counter()
        rollout, scores, _ = sample_and_score(self, prompts, answers)
        out = self.optimise(rollout, scores)
        self.step_count += 1
        return PPOStepStats(
            step=self.step_count,
            reward_mean=float(scores.mean()),
            policy_loss=out["policy_loss"],
            value_loss=out["value_loss"],
            kl=out["kl"],
            grad_norm=out["grad_norm"],
            seconds=time.perf_counter() - start,
        )
