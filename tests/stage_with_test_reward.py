"""Run a stage with one extra, test-only dense reward registered: `python stage_with_test_reward.py grpo`.

Tiny GRPO tests generate 12 tokens, too few for `format` or `correctness` to ever pay: every reward in a
group is 0, advantages are 0 and the adapter never moves, so "the resumed adapter equals the uninterrupted
one" would hold trivially. `test_length` (completion characters / 100) differs within a group, so steps do
update the adapter. The stage itself (`stages.<name>.main`) is the one `dvc repro` runs.
"""

from __future__ import annotations

import importlib
import sys

from reasoning_rl.task.rewards import completion_text, register
from stages.common import run


@register("test_length")
def length_reward(completions, **kwargs) -> list[float]:
    """Completion characters / 100: dense, so a group's completions get different rewards."""
    return [len(completion_text(c)) / 100 for c in completions]


if __name__ == "__main__":
    run(importlib.import_module(f"stages.{sys.argv[1]}").main)
