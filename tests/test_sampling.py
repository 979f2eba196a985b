"""grpo.inverse_cdf_sampling: torch.multinomial(probs, 1) replaced by an inverse-CDF draw of the same law."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from reasoning_rl.model.sampling import inverse_cdf_multinomial, inverse_cdf_sample

PROBS = torch.tensor([[0.1, 0.0, 0.5, 0.15, 0.25], [0.0, 0.0, 0.0, 0.3, 0.7]])


def test_inverse_cdf_draws_follow_the_probabilities():
    torch.manual_seed(0)
    draws = inverse_cdf_sample(PROBS[:1].expand(20_000, -1))
    counts = torch.bincount(draws.flatten(), minlength=5).double()
    expected = PROBS[0].double() * counts.sum()
    support = expected > 0
    assert chisquare(counts[support], expected[support]).pvalue > 1e-3


def test_inverse_cdf_never_draws_a_zero_probability_entry():
    draws = inverse_cdf_sample(PROBS.repeat(5000, 1))
    assert bool((PROBS.repeat(5000, 1).gather(-1, draws) > 0).all())


def test_inverse_cdf_refuses_a_row_without_mass():
    assert inverse_cdf_sample(torch.tensor([[0.0, 0.0], [0.5, 0.5]])) is None


def test_multinomial_is_swapped_only_inside_the_block():
    original = torch.multinomial
    with inverse_cdf_multinomial():
        assert torch.multinomial is not original
        assert torch.multinomial(PROBS, 1).shape == (2, 1)
    assert torch.multinomial is original


def test_calls_it_does_not_handle_go_to_torch():
    with inverse_cdf_multinomial():
        draws = torch.multinomial(PROBS[0], 3)  # 1-D input, several samples without replacement: torch's own
        with pytest.raises(RuntimeError):
            torch.multinomial(torch.tensor([[0.0, 0.0]]), 1)  # no mass: torch's own error
    assert sorted(draws.tolist()) == sorted(set(draws.tolist()))


def test_sampled_generation_uses_the_inverse_cdf(monkeypatch):
    """transformers' sampling loop reaches the swapped function (it looks torch.multinomial up per call)."""
    from tests.tiny_models import tiny_llama

    model = tiny_llama(seed=0)
    calls = []
    import reasoning_rl.model.sampling as sampling

    real = sampling.inverse_cdf_sample
    monkeypatch.setattr(sampling, "inverse_cdf_sample", lambda p, g=None: calls.append(p.shape) or real(p, g))
    with inverse_cdf_multinomial(), torch.no_grad():
        model.generate(torch.tensor([[5, 6, 7]]), do_sample=True, max_new_tokens=4, min_new_tokens=4, pad_token_id=0)
    assert len(calls) == 4
