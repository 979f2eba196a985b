"""Periodic checkpoints and resume: every trainer saves into its stage's checkpoints folder and a rerun
resumes from the newest complete checkpoint there (the stage's tracking run removes ones made with other params).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def last_checkpoint(output_dir: Path) -> Path | None:
    """The newest complete `checkpoint-N` in `output_dir` (its trainer_state.json, written last, parses)."""
    found = []
    for path in Path(output_dir).glob("checkpoint-*"):
        try:
            json.loads((path / "trainer_state.json").read_text())
            found.append((int(path.name.split("-")[1]), path))
        except (OSError, ValueError, IndexError):
            continue  # killed while writing it: an older checkpoint is still whole
    return max(found)[1] if found else None


def checkpointing_args(save_steps: int) -> dict[str, Any]:
    """TrainingArguments for periodic checkpoints (adapter, optimizer, scheduler, RNG and trainer state)."""
    # Two kept: the newest may be half-written when the process is killed; last_checkpoint skips it.
    return {"save_strategy": "steps", "save_steps": save_steps, "save_total_limit": 2, "save_only_model": False}


def train_resuming(trainer: Any, output_dir: Path) -> None:
    from reasoning_rl.ops.tracking import set_tags

    checkpoint = last_checkpoint(output_dir)
    if checkpoint is not None:
        step = checkpoint.name.split("-")[1]
        log.info("resuming from %s (step %s)", checkpoint, step)
        set_tags({"resumed_from_step": step})
    trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
