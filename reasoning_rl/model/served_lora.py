"""The vLLM engine serving a LoRA adapter unmerged (vLLM's LoRA support), with a fast CPU path for one adapter.

Why unmerged: merging a LoRA into bf16 weights rounds away every delta smaller than half a bf16 step of its base
weight (80 % of the merged weights did not move over 10 GRPO steps), and the merged model samples measurably worse
than the adapter itself (format 61.9 % vs 68.8 %; both measured in docs/LOG.md).
Served as a LoRA, the engine adds the adapter's product to the activations (x A^T B^T), so nothing rounds away;
the same SFT adapter served this way wrote well-formed answers 67.8 % of the time (docs/engine.md).

Why a fast path: vLLM's CPU LoRA ops (`vllm.lora.ops.torch_ops`) gather each token's adapter weights
(`w[indices]`) before an einsum, one copy of the adapter per token: 135 tok/s instead of 583 on SmolLM2-135M.
Evaluation and GRPO serve one adapter at a time, so every token of a batch uses the same one, and the same
product is one matmul with that adapter's weights. `install_single_adapter_ops` takes that path whenever every
token of a model step uses one adapter, and leaves any other step to vLLM's own code.

The fast path replaces methods of vLLM's `PunicaWrapperCPU` and `LoRAModelManager` class-wide (pinned in
tests/test_private_api.py). No upstream vLLM issue found for the per-token gather's cost; vLLM PR #48421 (open)
fixes the CPU ops' reading of index -1 (no adapter) as the last slot, which this path already skips.
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


def _step_adapter(indices: torch.Tensor) -> int | None:
    """NO_ADAPTER when no token of the step uses an adapter, else `_one_adapter(indices)`."""
    return NO_ADAPTER if bool((indices == NO_ADAPTER).all()) else _one_adapter(indices)


def _one_adapter(indices: torch.Tensor) -> int | None:
    """The adapter slot every token uses, or None (no tokens, a token without adapter, or several adapters)."""
    if indices.numel() == 0:
        return None
    first = indices[0]
    if first < 0 or not bool((indices == first).all()):
        return None
    return int(first)


NO_ADAPTER = -1  # vLLM's index for a token that uses no adapter
VLLM_OPS: dict[str, Any] = {}  # vLLM's own methods, kept when replaced (the fallback, and the tests' reference)
_loaded = [0]  # how many times vLLM wrote adapter weights into its slots: the fused matrices' cache key


def _fused(a: tuple[torch.Tensor, ...], b: tuple[torch.Tensor, ...], sizes: tuple[int, ...],
           slot: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One slot's LoRA for all output slices of a layer: A^T of every slice side by side, [in, slices x rank], and
    B of every slice on a block diagonal, [sum of slice sizes, slices x rank]. x A^T then B^T is each slice's
    x A_i^T B_i^T in its own columns: two matmuls per layer instead of two per slice (q, k, v)."""
    a_t = torch.cat([t[slot].reshape(-1, t.shape[-1]) for t in a]).T.contiguous()
    blocks = [t[slot].reshape(-1, t.shape[-1])[:size] for t, size in zip(b, sizes, strict=True)]
    return a_t, blocks[0] if len(blocks) == 1 else torch.block_diag(*blocks)


def install_single_adapter_ops() -> None:
    """Give vLLM's CPU LoRA wrapper a one-adapter path: two matmuls per LoRA layer, whatever its slices.

    `update_metadata` (once per model step) finds the adapter slot every token of the step uses, or None.
    `add_lora_linear` (every LoRA layer) then computes y += (x A^T) B^T for all output slices of the layer at
    once (`_fused`: q, k, v of a fused projection side by side), with bf16 matmuls that accumulate in fp32 and
    the add fused into the second one (`addmm_`): no per-token gather, no fp32 copies, 2 calls per layer where
    vLLM makes 2 per slice. The fused matrices are built once per layer and adapter: the cache is keyed by
    the count of adapter loads (`activate_adapter`, the only place vLLM writes the slots). The LM head's LoRA
    (`add_lora_logits`, which vLLM runs for every sampled row even when the adapter has none: zero matrices)
    takes the same two matmuls when every sampled row uses one adapter; vLLM's own copies the vocabulary-sized
    B once per row (SmolLM2, 16 rows: 76.1 against 73.2 ms per decode step, docs/LOG.md). Any other step
    (several adapters, or the async path that asks for `add_inputs=False`) runs vLLM's own method; a step with
    no adapter adds nothing (vLLM's meaning of index -1). tests/test_served_lora.py checks the outputs against
    vLLM's: they differ by bf16 rounding (vLLM rounds x A^T B^T to bf16 before adding it to y).
    """
    if VLLM_OPS or torch.cuda.is_available():  # on a GPU vLLM runs its own Triton kernels
        return
    from vllm.lora.model_manager import LoRAModelManager
    from vllm.lora.punica_wrapper.punica_cpu import PunicaWrapperCPU

    VLLM_OPS.update(update_metadata=PunicaWrapperCPU.update_metadata, add_lora_linear=PunicaWrapperCPU.add_lora_linear,
                    add_lora_logits=PunicaWrapperCPU.add_lora_logits,
                    activate_adapter=LoRAModelManager.activate_adapter)
    update_original, linear_original = VLLM_OPS["update_metadata"], VLLM_OPS["add_lora_linear"]
    logits_original, activate_original = VLLM_OPS["add_lora_logits"], VLLM_OPS["activate_adapter"]

    def activate_adapter(self, *args, **kwargs):
        written = activate_original(self, *args, **kwargs)  # False: already in its slot (asked at every step)
        _loaded[0] += bool(written)
        return written

    def update_metadata(self, *args, **kwargs):
        update_original(self, *args, **kwargs)
        self.one_adapter = _step_adapter(self.token_lora_indices)
        self.one_sampler_adapter = _step_adapter(self.sampler_indices)  # one per sampled row: the LM head's

    def add_lora_linear(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs):
        slot = getattr(self, "one_adapter", None)
        if slot is None or not kwargs.get("add_inputs", True):
            return linear_original(self, y, x, lora_a_stacked, lora_b_stacked, scale, output_slices, **kwargs)
        if slot == NO_ADAPTER:
            return y
        cache = self.__dict__.setdefault("fused_lora", {})
        key = (id(lora_a_stacked[0]), slot)
        if key not in cache or cache[key][0] != _loaded[0]:
            cache[key] = (_loaded[0], *_fused(lora_a_stacked, lora_b_stacked, output_slices, slot))
        _, a_t, b = cache[key]
        x2, y2 = x.reshape(-1, x.shape[-1]), y.view(-1, y.shape[-1])
        h = torch.mm(x2, a_t.to(x2.dtype))  # [tokens, slices x rank]
        if scale != 1.0:  # vLLM folds the LoRA scaling into B and passes 1.0
            h = h * scale
        y2[:, : b.shape[0]].addmm_(h.to(y2.dtype), b.T.to(y2.dtype))
        return y

    def add_lora_logits(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs):
        slot = getattr(self, "one_sampler_adapter", None)
        if slot is None:
            return logits_original(self, y, x, lora_a_stacked, lora_b_stacked, scale, **kwargs)
        if slot == NO_ADAPTER:
            return y
        a, b = lora_a_stacked[slot, 0], lora_b_stacked[slot, 0]  # [rank, hidden], [vocab, rank]
        x2, y2 = x.reshape(-1, x.shape[-1]), y.view(-1, y.shape[-1])
        h = torch.mm(x2.float(), a.float().T) * scale  # fp32, as vLLM's buffer
        y2[:, : b.shape[0]].addmm_(h.to(y2.dtype), b.T.to(y2.dtype))
        return y

    PunicaWrapperCPU.update_metadata, PunicaWrapperCPU.add_lora_linear = update_metadata, add_lora_linear
    PunicaWrapperCPU.add_lora_logits = add_lora_logits
    LoRAModelManager.activate_adapter = activate_adapter


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
