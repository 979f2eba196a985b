"""Reward functions for GRPO, in TRL's signature and registered by name so params pick them.

Each reward is pure: `(completions, answer=None, **kwargs) -> list[float]`, one float per completion,
deterministic, never raising, in bounded time whatever the model wrote. `completions` is what TRL passes:
plain strings, or (conversational datasets) lists of messages whose last `content` is the completion text.
`func.__name__` equals the registry name because TRL logs `rewards/<__name__>/mean` per step.

| name               | values          | earned by                                                          |
|--------------------|-----------------|--------------------------------------------------------------------|
| `format`           | {0, 1}          | exactly one non-empty think block, then one non-empty answer block |
| `correctness`      | {0, 1}          | a well-formed completion whose answer equals the gold number       |
| `correctness_soft` | {0, 0.5, 1}     | as `correctness`; 0.5 for the right answer in a malformed one      |

The format is `reasoning_rl.task.formatting`; answer equality is `reasoning_rl.task.answer_check` (rules and their
sources are documented there and in docs/rewards.md).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from reasoning_rl.task.answer_check import answer_value, is_correct, needs_math_verify, to_number
from reasoning_rl.task.formatting import extract_answer_lenient, parse_completion

__all__ = [
    "REWARD_FUNCS",
    "RewardFunc",
    "SOFT_MALFORMED_CREDIT",
    "answer_value",
    "completion_text",
    "correctness_reward",
    "correctness_soft_reward",
    "format_reward",
    "get_reward_funcs",
    "is_correct",
    "needs_math_verify",
    "register",
    "to_number",
]

RewardFunc = Callable[..., list[float]]
REWARD_FUNCS: dict[str, RewardFunc] = {}

# Half of full credit: enough to separate right from wrong inside a group of malformed samples, small enough
# that `format` + `correctness_soft` still ranks a well-formed wrong answer (1 + 0) above a malformed right
# one (0 + 0.5), so the format is never traded away for correctness.
SOFT_MALFORMED_CREDIT = 0.5


def register(name: str) -> Callable[[RewardFunc], RewardFunc]:
    """Decorator: add a reward to `REWARD_FUNCS` under `name` and make `__name__` match it for TRL's logs."""

    def deco(func: RewardFunc) -> RewardFunc:
        if name in REWARD_FUNCS:
            raise ValueError(f"reward {name!r} registered twice")
        REWARD_FUNCS[name] = func
        func.__name__ = name  # TRL logs rewards/<__name__>/mean per step
        return func

    return deco


def get_reward_funcs(names: Sequence[str]) -> list[RewardFunc]:
    """The registered rewards for `names`, in order; an unknown name fails listing the known ones."""
    unknown = [n for n in names if n not in REWARD_FUNCS]
    if unknown:
        raise ValueError(f"unknown reward function(s) {unknown}; known: {sorted(REWARD_FUNCS)}")
    return [REWARD_FUNCS[n] for n in names]


def completion_text(completion: object) -> str:
    """The text of one completion as TRL passes it (a string, or a list of chat messages)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and completion and isinstance(completion[-1], dict):
        content = completion[-1].get("content", "")
        return content if isinstance(content, str) else ""
    return ""


@register("format")
def format_reward(completions: Sequence[object], **kwargs) -> list[float]:
    """1.0 for exactly one non-empty <think> block followed by one non-empty <answer> block, else 0.0."""
    return [1.0 if parse_completion(completion_text(c)) is not None else 0.0 for c in completions]


@register("correctness")
def correctness_reward(completions: Sequence[object], answer: Sequence[str], **kwargs) -> list[float]:
    """1.0 when the well-formed completion's answer block states one value equal to the gold, else 0.0."""
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        parsed = parse_completion(completion_text(completion))
        rewards.append(1.0 if parsed is not None and is_correct(parsed.answer, gold) else 0.0)
    return rewards


@register("correctness_soft")
def correctness_soft_reward(completions: Sequence[object], answer: Sequence[str], **kwargs) -> list[float]:
    """1.0 as `correctness`; 0.5 when only the last <answer> block of a malformed completion is right; else 0.

    Off by default. Early in GRPO, when most samples of a group are malformed, strict correctness is 0 for
    all of them, the group's advantages are all zero and the step teaches nothing about the answer; the
    half credit keeps that signal while `format` teaches the format (see SOFT_MALFORMED_CREDIT).
    """
    rewards = []
    for completion, gold in zip(completions, answer, strict=True):
        text = completion_text(completion)
        parsed = parse_completion(text)
        if parsed is not None:
            rewards.append(1.0 if is_correct(parsed.answer, gold) else 0.0)
            continue
        lenient = extract_answer_lenient(text)
        rewards.append(SOFT_MALFORMED_CREDIT if lenient is not None and is_correct(lenient, gold) else 0.0)
    return rewards
