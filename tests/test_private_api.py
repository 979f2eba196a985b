"""Every private TRL and vLLM symbol the library relies on, pinned: an upgrade that moves one fails here, by name.

Overrides and patches live in modules named for what they work around (train/vllm_cpu_colocate.py,
train/is_ratio_from_loss.py, train/shared_prefix.py, model/served_lora.py) plus a few reads (train/callbacks.py,
model/engine.py). Each case names the symbol, what relies on it, and checks what is relied on: a method's leading
parameter names, an attribute TRL or vLLM assigns, a line of their code an override depends on.
"""

from __future__ import annotations

import importlib
import inspect
import re
import typing

import pytest

from reasoning_rl.model import engine, served_lora

GRPO = "trl.trainer.grpo_trainer.GRPOTrainer"
GENERATION = "trl.generation.vllm_generation.VLLMGeneration"
PUNICA = "vllm.lora.punica_wrapper.punica_cpu.PunicaWrapperCPU"
MANAGER = "vllm.lora.model_manager.LoRAModelManager"
COLOCATE, IS_RATIO, PREFIX = "train/vllm_cpu_colocate.py", "train/is_ratio_from_loss.py", "train/shared_prefix.py"
SERVED = "model/served_lora.py"

# (symbol, leading parameter names after self, who relies on them)
SIGNATURES = [
    (f"{GRPO}._generate_single_turn", ("prompt_ids", "images", "multimodal_fields", "has_tool_images"), COLOCATE),
    (f"{GRPO}._generate_and_score_completions", ("inputs",), IS_RATIO),
    (f"{GRPO}._compute_loss", ("model", "inputs"), IS_RATIO),
    (f"{GRPO}._get_per_token_logps_and_entropies", ("model", "input_ids", "attention_mask", "logits_to_keep",
                                                      "batch_size", "compute_entropy", "compute_aux_loss"), PREFIX),
    (f"{GENERATION}.sync_weights", (), COLOCATE),
    ("trl.trainer.utils.nanmax", ("tensor",), IS_RATIO),
    ("trl.trainer.utils.nanmin", ("tensor",), IS_RATIO),
    ("trl.trainer.utils.entropy_from_logits", ("logits",), PREFIX),
    ("trl.trainer.utils.selective_log_softmax", ("logits", "index"), PREFIX),
    (f"{PUNICA}.update_metadata", ("mapping", "lora_index_to_id", "max_loras", "vocab_size"), SERVED),
    (f"{PUNICA}.add_lora_linear", ("y", "x", "lora_a_stacked", "lora_b_stacked", "scale", "output_slices"), SERVED),
    (f"{PUNICA}.add_lora_logits", ("y", "x", "lora_a_stacked", "lora_b_stacked", "scale"), SERVED),
    (f"{MANAGER}.activate_adapter", ("lora_id",), SERVED),
    ("vllm.v1.engine.core_client.EngineCoreClient.shutdown", (), "model/engine.py close_vllm"),
]

# (class, method, attribute it assigns to self, who reads or replaces it)
ASSIGNED = [
    *[(GRPO, "__init__", name, IS_RATIO) for name in (
        "use_vllm", "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
        "vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max", "use_liger_kernel",
        "num_iterations", "_metrics")],
    (GRPO, "__init__", "temperature", PREFIX),
    (GRPO, "__init__", "_entropy_bonus_enabled", PREFIX),
    (GRPO, "__init__", "vllm_generation", COLOCATE),
    (GRPO, "__init__", "_logs", "train/callbacks.py (completions logged to MLflow)"),
    (GENERATION, "__init__", "model", COLOCATE),
    (GENERATION, "__init__", "accelerator", COLOCATE),
    (GENERATION, "_init_vllm", "llm", COLOCATE),
    ("vllm.entrypoints.llm.LLM", "__init__", "llm_engine", "model/engine.py close_vllm"),
    ("vllm.v1.engine.llm_engine.LLMEngine", "__init__", "engine_core", "model/engine.py close_vllm"),
]

# (function, text its source must hold, what relies on it)
SOURCES = [
    (f"{GRPO}._generate_single_turn", "self.vllm_generation.sync_weights()",
     f"{COLOCATE}: TRL's weight sync is the instance attribute replaced with the served-LoRA sync"),
    (f"{GENERATION}._init_vllm", "self.llm = LLM(",
     f"{COLOCATE}: the engine is built by the module's `LLM`, swapped while TRL builds it"),
    (f"{GENERATION}._init_vllm", "seed=", f"{COLOCATE}: the seed keyword replaced with the run's seed"),
    (f"{GRPO}._generate_and_score_completions", "self.use_vllm and self.vllm_importance_sampling_correction",
     f"{IS_RATIO}: the switch turned off for a call to skip TRL's scoring forward"),
    (f"{GRPO}._generate_and_score_completions", 'output["sampling_per_token_logps"]',
     f"{IS_RATIO}: the engine's log-probs, kept in the batch with the correction off"),
    (f"{GRPO}._generate_and_score_completions", "per_token_logps_diff.sum(dim=-1, keepdim=True)",
     f"{IS_RATIO}: `_vllm_is_ratio` copies TRL's sequence ratio (a product of token ratios, TRL #5814)"),
    (f"{GRPO}._generate_and_score_completions", "min=self.vllm_importance_sampling_clip_min",
     f"{IS_RATIO}: `_vllm_is_ratio` copies TRL's two-sided truncation"),
    (f"{GRPO}._compute_loss", "self._get_per_token_logps_and_entropies(",
     f"{IS_RATIO}: the ratio is formed right after this forward"),
    (f"{GRPO}._compute_loss", 'inputs["importance_sampling_ratio"]', f"{IS_RATIO}: the ratio the loss is weighted by"),
    ("vllm.lora.model_manager.LRUCacheLoRAModelManager.activate_adapter", "super().activate_adapter(",
     f"{SERVED}: adapter loads are counted in the base class's method"),
]


def resolve(path: str):
    """The object at a dotted path: the longest importable module, then attributes."""
    parts = path.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            obj = getattr(obj, name)
        return obj
    raise ImportError(path)


def original(path: str):
    """A vLLM method as vLLM defines it, even after served_lora replaced it class-wide in this process."""
    owner, name = path.rsplit(".", 1)
    if owner in (PUNICA, MANAGER) and name in served_lora.VLLM_OPS:
        return served_lora.VLLM_OPS[name]
    return resolve(path)


def library(path: str) -> str:
    return "vLLM" if path.startswith("vllm") else "TRL"


def needs(path: str):
    if path.startswith("vllm") and not engine.vllm_installed():
        pytest.skip("vLLM is not installed (make setup installs it)")


def found(path: str):
    try:
        return original(path)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{path} is gone ({library(path)} upgrade?): {err}")


@pytest.mark.parametrize(("path", "params", "user"), SIGNATURES, ids=[s[0] for s in SIGNATURES])
def test_private_signature(path, params, user):
    needs(path)
    names = [p for p in inspect.signature(found(path)).parameters if p != "self"]
    assert names[: len(params)] == list(params), (
        f"{path} now takes {names}; {user} relies on {list(params)} ({library(path)} upgrade?)")


@pytest.mark.parametrize(("owner", "method", "attribute", "user"), ASSIGNED,
                         ids=[f"{a[0]}.{a[2]}" for a in ASSIGNED])
def test_private_attribute_assigned(owner, method, attribute, user):
    needs(owner)
    source = inspect.getsource(found(f"{owner}.{method}"))
    assert re.search(rf"self\.{re.escape(attribute)}\s*(:[^=]*)?=", source), (
        f"{owner}.{method} no longer sets self.{attribute}; {user} reads it ({library(owner)} upgrade?)")


@pytest.mark.parametrize(("path", "text", "user"), SOURCES, ids=[f"{s[0]}: {s[1]}" for s in SOURCES])
def test_private_code_relied_on(path, text, user):
    needs(path)
    assert text in inspect.getsource(found(path)), (
        f"{path} no longer has `{text}`; {user} ({library(path)} upgrade?)")


def test_trl_vllm_generation_module_llm_is_vllms():
    """trl.generation.vllm_generation.LLM: the module attribute train/vllm_cpu_colocate.py replaces for a call."""
    needs("vllm")
    import vllm
    from trl.generation import vllm_generation

    assert getattr(vllm_generation, "LLM", None) is vllm.LLM, "trl.generation.vllm_generation.LLM moved (TRL upgrade?)"


def test_trl_grpo_logs_buffers_have_the_keys_callbacks_read():
    """GRPOTrainer._logs's `completion`, `advantages` and `rewards` buffers (train/callbacks.py logs a sample)."""
    source = inspect.getsource(resolve(f"{GRPO}.__init__"))
    block = source[source.index("self._logs = {"):]
    block = block[: block.index("}")]
    missing = [key for key in ("completion", "advantages", "rewards") if f'"{key}"' not in block]
    assert not missing, f"{GRPO}._logs lacks {missing} (TRL upgrade?)"


@pytest.mark.parametrize("name", ["token_lora_indices", "sampler_indices"])
def test_vllm_punica_index_properties(name):
    """PunicaWrapperCPU's per-token and per-sampled-row adapter slots, read by served_lora's update_metadata."""
    needs("vllm")
    assert isinstance(inspect.getattr_static(resolve(PUNICA), name, None), property), (
        f"{PUNICA}.{name} is not a property any more (vLLM upgrade?)")


def test_vllm_lora_ranks_are_served_loras():
    """served_lora.VLLM_RANKS copies vllm.config.lora.MaxLoRARanks (the ranks `max_lora_rank` accepts)."""
    needs("vllm")
    assert typing.get_args(resolve("vllm.config.lora.MaxLoRARanks")) == served_lora.VLLM_RANKS
