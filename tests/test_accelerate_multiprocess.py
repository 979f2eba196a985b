"""The GRPO training function under `accelerate launch` with 2 CPU processes (gloo): both ranks train, in
step, and one adapter is saved. The same code path as multi-GPU DDP (configs/accelerate/ddp.yaml).

accelerate 1.15 launches several `--cpu` processes only through mpirun (it needs an MPI hostfile), so the test
uses the torchrun launcher (`--multi_gpu`) with CUDA hidden: each process then runs on the CPU with gloo.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file
from tiny_models import tiny_llama, tiny_tokenizer

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def launched(tmp_path_factory) -> tuple[Path, Path, subprocess.CompletedProcess]:
    from peft import get_peft_model

    from reasoning_rl.train.lora import lora_config

    work = tmp_path_factory.mktemp("accelerate")
    model_dir, adapter_dir, out = work / "model", work / "sft_adapter", work / "out"
    # Built here, once, so the two ranks load identical weights instead of racing to write them.
    model = tiny_llama(seed=0)
    model.save_pretrained(model_dir, safe_serialization=True)
    tiny_tokenizer().save_pretrained(model_dir)
    get_peft_model(model, lora_config(r=4, alpha=8, dropout=0.0)).save_pretrained(adapter_dir)  # r=4: tiny
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",  # two processes on the same cores
        "CUDA_VISIBLE_DEVICES": "",  # CPU processes and gloo even where a GPU exists
    }
    accelerate = Path(sys.executable).parent / "accelerate"
    cmd = [
        str(accelerate), "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
        "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
        str(ROOT / "tests" / "grpo_multiprocess_entry.py"),
        "--model-dir", str(model_dir), "--adapter", str(adapter_dir), "--out", str(out),
    ]  # fmt: skip
    result = subprocess.run(cmd, env=env, cwd=work, capture_output=True, text=True, timeout=300)
    return adapter_dir, out, result


@pytest.mark.slow
def test_accelerate_launch_two_ranks_both_train(launched):
    _, out, result = launched
    assert result.returncode == 0, result.stderr[-4000:]
    markers = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [m["rank"] for m in markers] == [0, 1]
    assert all(m["world_size"] == 2 for m in markers)
    assert all(m["global_step"] == 2 for m in markers)
    assert all(m["wrapped"] == "DistributedDataParallel" and m["backend"] == "gloo" for m in markers)
    # Each rank sampled and scored its own share of the prompts (2 per step here, groups not split).
    assert all(m["prompts_seen"] for m in markers), "a rank scored no completions"
    assert not set(markers[0]["prompts_seen"]) & set(markers[1]["prompts_seen"])
    assert all(m["attention_after"] == "sdpa" for m in markers)
    # DDP all-reduces the gradients: after two steps both ranks hold bit-identical LoRA weights.
    assert markers[0]["lora_sha256"] == markers[1]["lora_sha256"]


@pytest.mark.slow
def test_accelerate_launch_saves_one_trained_adapter(launched):
    adapter_dir, out, result = launched
    assert result.returncode == 0, result.stderr[-4000:]
    saved = sorted(out.rglob("adapter_model.safetensors"))
    assert saved == [out / "adapter" / "adapter_model.safetensors"]
    assert [m for m in (0, 1) if json.loads((out / f"rank{m}.json").read_text())["saved_adapter"]] == [0]
    before = load_file(adapter_dir / "adapter_model.safetensors")
    after = load_file(saved[0])
    assert before.keys() == after.keys()
    assert any(not before[k].equal(after[k]) for k in before), "GRPO did not change the LoRA weights"
