"""TRL's vLLM importance ratio taken from the loss forward, not from an extra no-grad forward over the batch.

With vLLM sampling TRL weights the loss by the trainer/engine probability ratio, and TRL 1.13 scores every sampled
completion in a no-grad forward to form it (`_generate_and_score_completions`). When each step trains on
completions sampled from its own weights (on-policy), that forward repeats the loss forward's log-probs; the mixin
forms the ratio right after the loss forward instead. Removable once TRL skips that forward itself: TRL issue
#5412, PR #5413 (open). TRL's ratio block is copied (`_vllm_is_ratio`), so a TRL upgrade must be checked against
it (tests/test_private_api.py pins the private methods; tests/test_is_ratio_from_loss.py compares losses,
gradients and metrics with TRL's own path in all four ratio modes).
"""

from __future__ import annotations

import math

import torch
from trl.trainer.utils import nanmax, nanmin


class IsRatioFromLossForward:
    """Mixin for trl.GRPOTrainer: `is_ratio_from_loss_forward` on = the ratio from the loss forward's log-probs."""

    is_ratio_from_loss_forward = False

    def _ratio_from_loss_forward(self) -> bool:
        """Whether the vLLM importance ratio is formed in the loss forward: asked for, vLLM sampling with the
        correction on, and on-policy (TRL's own test: every sampled batch is trained on before the next optimizer
        step, so the loss forward runs with the weights that sampled it). Liger's fused loss needs it earlier."""
        generate_every = self.args.steps_per_generation * self.num_iterations
        return (self.is_ratio_from_loss_forward and self.use_vllm and self.vllm_importance_sampling_correction
                and self.args.gradient_accumulation_steps % generate_every == 0 and not self.use_liger_kernel)

    def _generate_and_score_completions(self, inputs):
        """TRL's sampling and scoring; when the ratio comes from the loss forward, without TRL's scoring forward.

        With the correction off for the call, TRL skips that forward and leaves `old_per_token_logps` out (it is
        on-policy: the loss uses its own log-probs, detached), and keeps the engine's `sampling_per_token_logps`.
        """
        if not self._ratio_from_loss_forward():
            return super()._generate_and_score_completions(inputs)
        self.vllm_importance_sampling_correction = False
        try:
            return super()._generate_and_score_completions(inputs)
        finally:
            self.vllm_importance_sampling_correction = True

    def _compute_loss(self, model, inputs):
        """TRL's loss; when the ratio comes from the loss forward, formed right after that forward, as TRL forms it
        from its scoring forward (same weights, so the same log-probs up to kernel rounding)."""
        if "importance_sampling_ratio" in inputs or not self._ratio_from_loss_forward():
            return super()._compute_loss(model, inputs)
        inputs = dict(inputs)  # TRL's buffered batch stays as it was
        forward = self._get_per_token_logps_and_entropies

        def forward_and_ratio(*args, **kwargs):
            logps, entropies, aux_loss = forward(*args, **kwargs)
            inputs["importance_sampling_ratio"] = self._vllm_is_ratio(logps.detach(), inputs)
            return logps, entropies, aux_loss

        self._get_per_token_logps_and_entropies = forward_and_ratio  # TRL's first call in _compute_loss
        try:
            return super()._compute_loss(model, inputs)
        finally:
            del self._get_per_token_logps_and_entropies

    def _vllm_is_ratio(self, trainer_logps: torch.Tensor, inputs: dict) -> torch.Tensor:
        """TRL 1.13's vLLM importance ratio and its `sampling/*` metrics (grpo_trainer.py, "Compute the importance
        sampling ratio"), from the trainer's log-probs of the sampled tokens. The metrics are logged per
        micro-batch, TRL's once per sampled batch.

        Sequence modes multiply the token ratios (a sum in log space), as TRL does; TRL issue #5814 asked for a
        mean instead and was closed: the product is the sequence's probability ratio, by design."""
        mask = inputs["completion_mask"] * inputs.get("tool_mask", 1)
        sampling = inputs.get("sampling_per_token_logps")
        if sampling is None:  # the engine gave no log-probs: no correction
            return torch.ones_like(trainer_logps)
        diff = torch.nan_to_num((trainer_logps - sampling) * mask, nan=0.0)  # NaN: vLLM could not score the token
        sequence_level = self.vllm_importance_sampling_mode in ("sequence_mask", "sequence_truncate")
        ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if sequence_level else diff)  # [B, 1] or [B, T]
        low, high = self.vllm_importance_sampling_clip_min, self.vllm_importance_sampling_clip_max
        if self.vllm_importance_sampling_mode in ("sequence_truncate", "token_truncate"):
            ratio = torch.clamp(ratio, min=low, max=high)
        elif self.vllm_importance_sampling_mode in ("sequence_mask", "token_mask"):
            low, high = -math.inf if low is None else low, math.inf if high is None else high
            ratio = ratio.masked_fill((ratio < low) | (ratio > high), 0.0)
        else:
            raise ValueError(f"unknown vllm_importance_sampling_mode {self.vllm_importance_sampling_mode!r}")

        metrics = self._metrics["train" if self.model.training else "eval"]
        gather = self.accelerator.gather
        delta = (trainer_logps - sampling).abs()
        delta = delta[mask.bool() & ~torch.isnan(delta)]
        zero = torch.tensor(0.0, device=trainer_logps.device)
        metrics["sampling/sampling_logp_difference/mean"].append(
            gather(delta.mean() if delta.numel() else zero).mean().item())
        metrics["sampling/sampling_logp_difference/max"].append(
            gather(delta.max() if delta.numel() else zero).max().item())
        flat = ratio.flatten() if sequence_level else ratio[mask.bool()]
        for name, local, across in (("min", torch.min, nanmin), ("mean", torch.mean, torch.nanmean),
                                    ("max", torch.max, nanmax)):
            value = gather(local(flat) if flat.numel() else zero)
            metrics[f"sampling/importance_sampling_ratio/{name}"].append(across(value).item())
        return ratio
