"""The output format, defined once: `<think>reasoning</think>` then `<answer>final answer</answer>`.

Everything that writes the format (the system prompt, the SFT targets) and everything that reads it (the
reward parser, the evaluator) imports these names, so the two sides cannot drift apart.

A well-formed completion is exactly::

    <think>
    Natalia sold 48/2 = 24 clips in May.
    Natalia sold 48+24 = 72 clips altogether in April and May.
    </think>
    <answer>72</answer>

i.e. optional leading whitespace, one non-empty think block, optional whitespace, one non-empty answer
block, optional trailing whitespace, and nothing else.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"
TAGS = (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)

SYSTEM_PROMPT = (
    "You are a careful math tutor. Solve the problem step by step. "
    f"Write your reasoning between {THINK_OPEN} and {THINK_CLOSE}, then write only the final number "
    f"between {ANSWER_OPEN} and {ANSWER_CLOSE}.\n"
    f"Format:\n{THINK_OPEN}\nstep-by-step reasoning\n{THINK_CLOSE}\n{ANSWER_OPEN}42{ANSWER_CLOSE}"
)

# DOTALL so that multi-line reasoning matches (Unsloth's GSM8K notebook regex lacked it and never fired).
# Lazy groups plus the tag-count check in `parse_completion` rule out nested or repeated blocks.
_COMPLETION_RE = re.compile(
    rf"\A\s*{re.escape(THINK_OPEN)}(?P<think>.*?){re.escape(THINK_CLOSE)}"
    rf"\s*{re.escape(ANSWER_OPEN)}(?P<answer>.*?){re.escape(ANSWER_CLOSE)}\s*\Z",
    re.DOTALL,
)


@dataclass(frozen=True)
class ParsedCompletion:
    """The two parts of a well-formed completion, stripped of surrounding whitespace."""

    think: str
    answer: str


def format_target(reasoning: str, answer: str) -> str:
    """The SFT target for one example: the exact string a perfect model would write."""
    return f"{THINK_OPEN}\n{reasoning.strip()}\n{THINK_CLOSE}\n{ANSWER_OPEN}{answer.strip()}{ANSWER_CLOSE}"


def parse_completion(text: str) -> ParsedCompletion | None:
    """Split a completion into think/answer, or None unless it is exactly one well-formed pair.

    Rejected: any tag appearing more than once (nested or repeated blocks collect reward in open-r1's
    experience), an empty think or answer (whitespace, zero-width or other invisible characters only),
    text before the think block or after the answer block.
    Runs in linear time: four `str.count` scans, then one anchored regex with no nested quantifiers.
    """
    if not isinstance(text, str):
        return None
    if any(text.count(tag) != 1 for tag in TAGS):
        return None
    match = _COMPLETION_RE.match(text)
    if match is None:
        return None
    think, answer = match["think"].strip(), match["answer"].strip()
    if not _has_visible_text(think) or not _has_visible_text(answer):
        return None
    return ParsedCompletion(think=think, answer=answer)


# `str.strip` keeps zero-width spaces, bidi marks and BOMs (category Cf), control characters (Cc) and lone
# surrogates (Cs); a block made only of those looks empty to a reader and must not earn the format reward.
_INVISIBLE_CATEGORIES = frozenset({"Cf", "Cc", "Cs", "Zs", "Zl", "Zp"})


def _has_visible_text(text: str) -> bool:
    # Stops at the first visible character, so a long reasoning block costs one lookup.
    return any(unicodedata.category(ch) not in _INVISIBLE_CATEGORIES for ch in text)


def extract_answer_lenient(text: str) -> str | None:
    """The content of the last `<answer>…</answer>` pair, even if the rest is malformed.

    Used for diagnostics (how often a model answers without the full format) and by the opt-in
    `correctness_soft` reward's partial credit; `format` and `correctness` use `parse_completion`.
    """
    if not isinstance(text, str):
        return None
    start = text.rfind(ANSWER_OPEN)
    if start < 0:
        return None
    end = text.find(ANSWER_CLOSE, start)
    if end < 0:
        return None
    return text[start + len(ANSWER_OPEN) : end].strip() or None
