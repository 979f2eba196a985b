"""reasoning_rl.train.lora.save_adapter: a stage's adapter files are the same bytes for the same inputs.

Each save runs in its own interpreter with its own PYTHONHASHSEED (set order) and loads the base model from its
own folder (PEFT records that folder), as two runs of a stage on two machines would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASE = "tiny/llama"  # the base model as a user names it
SAVE = """
import sys, torch
from peft import get_peft_model
from transformers import AutoModelForCausalLM
from reasoning_rl.train.lora import lora_config, save_adapter
base, out, how = sys.argv[1:]
torch.manual_seed(0)
policy = get_peft_model(AutoModelForCausalLM.from_pretrained(base), lora_config(4, 8, 0.0))
for name, param in policy.named_parameters():
    if "lora_B" in name:
        torch.nn.init.normal_(param, std=0.1)
if how == "peft":
    policy.save_pretrained(out, safe_serialization=True)
else:
    save_adapter(policy, out, "tiny/llama")
"""


@pytest.fixture(scope="module")
def bases(tmp_path_factory):
    from tiny_models import tiny_llama

    root = tmp_path_factory.mktemp("bases")
    tiny_llama(0).save_pretrained(root / "a")
    shutil.copytree(root / "a", root / "b")  # the same weights in another folder (another user's cache)
    return root / "a", root / "b"


def save(base: Path, out: Path, hash_seed: str, how: str = "ours") -> dict[str, bytes]:
    env = {**os.environ, "PYTHONHASHSEED": hash_seed, "PYTHONPATH": str(ROOT)}
    subprocess.run([sys.executable, "-c", SAVE, str(base), str(out), how], env=env, check=True, capture_output=True)
    return {p.name: p.read_bytes() for p in sorted(out.iterdir())}


def test_save_adapter_same_bytes_across_hash_seeds_and_base_folders(bases, tmp_path):
    first = save(bases[0], tmp_path / "one", "1")
    second = save(bases[1], tmp_path / "two", "2")
    assert "adapter_config.json" in first and "adapter_model.safetensors" in first
    assert first == second
    config = json.loads(first["adapter_config.json"])
    assert config["base_model_name_or_path"] == BASE
    assert config["target_modules"] == sorted(config["target_modules"])


def test_peft_alone_writes_the_folder_and_set_order(bases, tmp_path):  # the control: what save_adapter removes
    first = json.loads(save(bases[0], tmp_path / "one", "1", "peft")["adapter_config.json"])
    second = json.loads(save(bases[1], tmp_path / "two", "2", "peft")["adapter_config.json"])
    assert first["base_model_name_or_path"] == str(bases[0]) != second["base_model_name_or_path"]
    assert first["target_modules"] != second["target_modules"]  # same modules, another order


def test_a_saved_adapter_loads_onto_its_base_from_anywhere(bases, tmp_path):
    """The loaders take the base from base.model, not from the config's base_model_name_or_path."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    save(bases[0], tmp_path / "adapter", "1")
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(bases[1]), tmp_path / "adapter")
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and all(p.abs().sum() > 0 for p in lora_b)  # the saved B (a fresh one is zero) came back
