"""Inverse-CDF draws for `torch.multinomial(probs, 1)`, the call transformers' sampling makes every decode step.

On CPU, torch.multinomial draws one exponential variate per vocabulary entry (16 rows x 49,152 entries: 15 ms
per decode step on this machine, 2.4 s of a 160-token GRPO sampling round). Inverse-CDF sampling draws one
uniform per row and binary-searches the cumulative sum (0.4 ms): the same categorical distribution, a
different random stream. `inverse_cdf_multinomial()` swaps it in for the calls it handles (2-D float
probabilities, one sample, no `out=`) and leaves any other call, and any row it cannot take, to torch.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch


def inverse_cdf_sample(probs: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor | None:
    """One index per row of `probs` (rows: non-negative weights), shape (rows, 1); None if a row has no mass."""
    cdf = probs.cumsum(-1)
    total = cdf[:, -1:]
    if not bool(torch.isfinite(total).all() and (total > 0).all()):
        return None
    u = torch.rand(total.shape, dtype=cdf.dtype, device=cdf.device, generator=generator) * total
    index = torch.searchsorted(cdf, u, right=True).clamp_max_(probs.size(-1) - 1)  # first entry with cdf > u
    if bool((probs.gather(-1, index) <= 0).any()):  # u rounded up to the total: leave this draw to torch
        return None
    return index


@contextmanager
def inverse_cdf_multinomial() -> Iterator[None]:
    """Within the block, `torch.multinomial(probs, 1)` on 2-D float probabilities draws by inverse CDF."""
    original = torch.multinomial

    def multinomial(input, num_samples, replacement=False, *, generator=None, out=None):  # noqa: A002 (torch's names)
        if num_samples == 1 and out is None and input.dim() == 2 and input.dtype in (torch.float32, torch.float64):
            index = inverse_cdf_sample(input, generator)
            if index is not None:
                return index
        return original(input, num_samples, replacement, generator=generator, out=out)

    torch.multinomial = multinomial
    try:
        yield
    finally:
        torch.multinomial = original
