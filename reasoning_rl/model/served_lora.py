"""The vLLM engine serving a LoRA adapter unmerged (vLLM's LoRA support), with a fast CPU path for one adapter.

Why unmerged: merging a LoRA into bf16 weights rounds away every delta smaller than half a bf16 step of its base
weight (80 % of the merged weights did not move over 10 GRPO steps, benchmarks/merge_rounding.py), and the merged
model samples measurably worse than the adapter itself (format 61.9 % vs 68.8 %, benchmarks/sample_agreement.py).
Served as a LoRA, the engine adds the adapter's product to the activations (x A^T B^T), so nothing rounds away;
the same SFT adapter served this way wrote well-formed answers 67.8 % of the time (docs/engine.md).

Why a fast path: vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`) gather each token's adapter weights
(`w[indices]`) before an einsum, one copy of the adapter per token: 135 tok/s instead of 583 on SmolLM2-135M.
Evaluation and GRPO serve one adapter at a time, so every token of a batch uses the same one, and the same
product is one matmul with that adapter's weights: 572 tok/s. `install_single_adapter_ops` takes that path
whenever every token of a call uses one adapter, and leaves any other batch to vLLM's own op.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from reasoning_rl.model.engine import EngineError

VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's allowed `max_lora_rank` values (vllm/config/lora.py)


def adapter_rank(adapter: Path) -> int:
    """The LoRA rank `r` of a PEFT adapter folder."""
    return int(json.loads((Path(adapter) / "adapter_config.json").read_text())["r"])


def engine_kwargs(rank: int) -> dict:
    """LLM(...) arguments for serving one adapter of rank <= `rank` at a time (installs the one-adapter ops)."""
    served = next((r for r in VLLM_RANKS if r >= rank), None)
    if served is None:
        raise ValueError(f"LoRA rank {rank} is above vLLM's largest servable rank {VLLM_RANKS[-1]}")
    install_single_adapter_ops()
    return {"enable_lora": True, "max_lora_rank": served, "max_loras": 1, "max_cpu_loras": 1}


def _one_adapter(indices: torch.Tensor) -> int | None:
    """The adapter slot every token uses, or None (no tokens, a token without adapter, or several adapters)."""
    if indices.numel() == 0:
        return None
    first = indices[0]
    if first < 0 or not bool((indices == first).all()):
        return None
    return int(first)


def _slot(weights: torch.Tensor, slot: int, dtype: torch.dtype) -> torch.Tensor:
    """One adapter's [out, in] matrix from vLLM's stacked [slots, (1,) out, in] buffer."""
    w = weights[slot]
    return (w.squeeze(0) if w.dim() == 3 else w).to(dtype)


VLLM_OPS: dict[str, Any] = {}  # vLLM's own ops, kept when replaced (the fallback, and the tests' reference)


def install_single_adapter_ops() -> None:
    """Replace vLLM's CPU LoRA ops by ones with a one-matmul path when every token uses the same adapter.

    Same arguments, same semantics as vLLM's `bgmv_shrink`/`bgmv_expand`/`bgmv_expand_slice` (the prefill ops
    `sgmv_*` expand their indices and call these); tests/test_served_lora.py checks the outputs against vLLM's.
    """
    if VLLM_OPS or torch.cuda.is_available():  # on a GPU vLLM runs its own Triton kernels
        return
    from vllm.lora.ops.torch_ops import lora_ops
    from vllm.lora.punica_wrapper import punica_cpu

    VLLM_OPS.update(bgmv_shrink=lora_ops.bgmv_shrink, bgmv_expand=lora_ops.bgmv_expand,
                    bgmv_expand_slice=lora_ops.bgmv_expand_slice)
    shrink, expand, expand_slice = lora_ops.bgmv_shrink, lora_ops.bgmv_expand, lora_ops.bgmv_expand_slice

    def bgmv_shrink(inputs, weights, out, indices, scaling=1.0):
        slot = _one_adapter(indices)
        if slot is None:
            return shrink(inputs, weights, out, indices, scaling)
        y = inputs.to(out.dtype) @ _slot(weights, slot, out.dtype).T
        out[:, : y.shape[1]] = scaling * y

    def bgmv_expand(inputs, weights, out, indices, add_inputs=True):
        slot = _one_adapter(indices)
        if slot is None or inputs.shape[0] != out.shape[0]:
            return expand(inputs, weights, out, indices, add_inputs)
        y = inputs.to(out.dtype) @ _slot(weights, slot, out.dtype).T
        n = min(y.shape[1], out.shape[1])  # adapter and model may pad differently
        if add_inputs:
            out[:, :n] += y[:, :n]
        else:
            out[:, :n] = y[:, :n]

    def bgmv_expand_slice(inputs, weights, out, indices, slice_offset, slice_size, add_inputs=True):
        slot = _one_adapter(indices)
        if slot is None:
            return expand_slice(inputs, weights, out, indices, slice_offset, slice_size, add_inputs)
        y = inputs.to(out.dtype) @ _slot(weights, slot, out.dtype).T
        if add_inputs:
            out[:, slice_offset: slice_offset + slice_size] += y
        else:
            out[:, slice_offset: slice_offset + slice_size] = y

    for module in (lora_ops, punica_cpu):  # punica_cpu imported the names; lora_ops' sgmv_* look them up there
        module.bgmv_shrink, module.bgmv_expand, module.bgmv_expand_slice = bgmv_shrink, bgmv_expand, bgmv_expand_slice


class ServedLLM:
    """A vLLM `LLM` whose `generate` runs with the adapter last given to `serve` (None: the base model).

    Every `serve` call is a new adapter id, so the engine loads it once and evicts the previous one
    (`max_cpu_loras` 1); vLLM's `load_inplace` would instead re-read the files at every scheduler step.
    Everything else is the wrapped engine's.
    """

    def __init__(self, llm: Any, rank: int) -> None:
        self.llm, self.rank = llm, rank
        self.request = None
        self._version = 0
        self._scratch: tempfile.TemporaryDirectory | None = None
        self._written: list[Path] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def serve(self, adapter: Path | None) -> None:
        """Generate with the PEFT adapter folder `adapter` from now on (None: the base weights)."""
        if adapter is None:
            self.request = None
            return
        rank = adapter_rank(adapter)
        if rank > self.rank:
            raise EngineError(f"vLLM engine: adapter {adapter} has LoRA rank {rank}, the engine serves <= {self.rank}")
        from vllm.lora.request import LoRARequest

        self._version += 1
        self.request = LoRARequest(f"adapter-{self._version}", self._version, str(adapter))

    def serve_policy(self, policy: Any) -> None:
        """Serve a PEFT model's current adapter: written to a scratch folder (a few MB) and served from there."""
        if self._scratch is None:
            self._scratch = tempfile.TemporaryDirectory(prefix="served-lora-")
        folder = Path(self._scratch.name) / f"v{self._version + 1}"
        policy.save_pretrained(str(folder))
        self.serve(folder)
        self._written.append(folder)
        while len(self._written) > 2:  # the served one and the one before it; older ones are evicted already
            shutil.rmtree(self._written.pop(0), ignore_errors=True)

    def generate(self, *args, **kwargs):
        return self.llm.generate(*args, lora_request=self.request, **kwargs)

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None
