"""Run the real stage modules in scratch folders with tiny settings (resume and tracking-fault tests)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from reasoning_rl.task.gsm8k import load_split, to_record, write_jsonl

ROOT = Path(__file__).resolve().parents[1]

TINY = {
    "base": {"seed": 7, "model": "embedded:SmolLM2-135M-Instruct", "dtype": "auto"},
    # 4 steps, a checkpoint every 2: one checkpoint to resume from, and steps after it to redo.
    "sft": {"num_examples": 16, "max_steps": 4, "save_steps": 2, "logging_steps": 1,
            "per_device_train_batch_size": 2, "max_length": 192, "lora_r": 4, "lora_alpha": 8},
    # 2 prompts x 2 generations of at most 12 tokens per step: seconds per step, rewards still computed.
    "grpo": {"max_steps": 4, "save_steps": 2, "logging_steps": 1, "num_generations": 2,
             "per_device_train_batch_size": 4, "gradient_accumulation_steps": 1, "max_completion_length": 12,
             "num_prompts": 8,
             # 12 tokens cut almost every completion: masking them would leave no loss to resume
             "mask_truncated_completions": False,
             # 12 tokens never earn `format`; the dense test reward makes steps update (stage_with_test_reward)
             "reward_funcs": ["format", "test_length"]},
}


def make_workdir(path: Path, gsm8k_dir: Path) -> Path:
    path.mkdir(parents=True)
    rows = load_split(gsm8k_dir, "test")[:32]  # 32 rows: more than num_examples and num_prompts need
    write_jsonl(path / "data/prepared/train.jsonl", [to_record(e) for e in rows])
    (path / "params.yaml").write_text(yaml.safe_dump(TINY))
    return path


def stage_env(work: Path) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{work / 'mlflow.db'}",
           "REASONING_RL_PARAMS": str(work / "params.yaml"), "REASONING_RL_PIPELINE_ID": "resume-test"}
    env.pop("MLFLOW_RUN_ID", None)
    return env


def stage_cmd(stage: str) -> list[str]:
    """The stage's own main(), with the test-only dense reward registered (see stage_with_test_reward.py)."""
    return [sys.executable, str(ROOT / "tests" / "stage_with_test_reward.py"), stage]


def run_stage(stage: str, work: Path, check: bool = True, **env: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(stage_cmd(stage), cwd=work, env=stage_env(work) | env,
                          capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc
