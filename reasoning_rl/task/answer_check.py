"""Is a model's final answer equal to the GSM8K gold answer? Exact for plain numbers, math-verify for LaTeX.

Two paths, chosen by `needs_math_verify(answer)`:

* Exact path (plain text: no backslash, no `{,}`, no `a/b` fraction): the answer must state exactly one
  distinct number, read with an ASCII grammar into a `Decimal` and compared exactly with the gold. Rules:

  - thousands commas are dropped (`1,234` → 1234), as the GSM8K grader does (openai/grade-school-math,
    `grade_school_math/dataset.py`, `extract_answer`: `match_str.replace(",", "")`; paper arXiv 2110.14168);
    that grader then compares strings (`18.0` ≠ `18`), this module compares values, as math-verify does;
  - `$`, `%` and surrounding words are ignored (`$18`, `18%`, `18 dollars` → 18): GSM8K gold answers are bare
    numbers whose unit lives in the question (percentage questions have golds such as `25`, not `0.25`);
  - trailing zeros do not matter (`18.0`, `18.00` → 18) because `Decimal` compares by value;
  - a second, different number makes it a hedge or a calculation (`18 or 19`, `18-19`, `48+24=72`) → no value;
    repeating the same number (`18, i.e. 18.0`) is still one value;
  - Unicode minus and dash signs (U+2212, U+2010-2015, U+FE63, U+FF0D) are read as `-`: otherwise `−5` would
    read as `5` and be scored right against a gold of 5;
  - number words (`seventy-two`) and space-separated thousands (`1 234`) are not read.

* math-verify path (LaTeX or fractions: `\\frac{3}{4}`, `\\boxed{72}`, `3/4`, `\\$18`, `50\\%`):
  decorations are removed (`$`, `\\(`/`\\)`, `\\[`/`\\]`, `\\$`, `%`, `\\left`/`\\right`, spacing,
  `\\text{unit}`, `{,}`, thousands commas, leading and trailing words), the rest must match one of a few
  fixed shapes (a number, `a/b`, `\\frac{a}{b}`, `\\frac34`, any of those in parentheses or in one
  `\\boxed{}`, with an optional minus), and only then is it parsed by Hugging Face math-verify's LaTeX
  extractor and compared with `math_verify.verify` (README: https://github.com/huggingface/Math-Verify;
  `verify` rounds floats to 6 decimals). Mixed numbers (`2 1/2`, `2\\frac{1}{2}`) are refused: math-verify's
  default extractors read `3 1/2` as 1 and its LaTeX extractor reads it as 2, so the notation is ambiguous,
  and GSM8K golds are decimals anyway.

Non-ASCII numerals (full-width `７２`, Arabic-Indic `٧٢`, `½`, `²`, CJK `七十二`) are not read as digits,
and an answer that contains any of them has no value: GSM8K golds are ASCII, the system prompt asks for "the
final number", and reading some scripts but not others would be inconsistent (NFKC maps full-width digits to
ASCII but leaves Arabic-Indic ones alone). Invisible characters (zero-width, bidi marks, NUL) are ordinary
non-digit text: they neither join nor hide digits, so `7\\u200b2` is two numbers.

Bounded time and safety. Model text never reaches `eval`/`sympify`: the exact path is regexes and `Decimal`;
the math-verify path uses only `LatexExtractionConfig` (an ANTLR parser building SymPy objects), never
`ExprExtractionConfig` (which calls `sympy.parse_expr`, an `eval`). Answers longer than `MAX_ANSWER_CHARS`
have no value; the shape whitelist caps brace depth at 2 and forbids `^`, `!`, `\\sqrt`, products and sums,
because math-verify's LaTeX parse is exponential in brace depth (measured here: 16 nested braces took 7.5 s,
20 took 260 s) and exponentiation of integers can run for ever inside one C call. math-verify's own timeouts
use `signal.alarm`, which raises off the main thread (TRL may score rewards from worker threads), so they
are disabled (`parsing_timeout=None`, `timeout_seconds=None`) and `run_with_timeout` bounds the call with a
daemon thread instead; the whitelist makes that limit a backstop that should never fire.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable
from decimal import Decimal
from functools import lru_cache
from typing import TypeVar

import math_verify
import sympy

log = logging.getLogger(__name__)

MAX_ANSWER_CHARS = 200  # a final answer is a number; longer "answers" are essays and earn nothing
MAX_LATEX_CORE_CHARS = 100  # after decorations are removed; bounds digits handed to math-verify
MATH_VERIFY_TIMEOUT_S = 5.0  # backstop only: whitelisted shapes parse in milliseconds
_CACHE_SIZE = 4096  # GRPO scores many identical answers (same gold, many samples); parse each once

_T = TypeVar("_T")

# Sign-like characters that would otherwise be dropped, turning `−5` into `5`.
_MINUS_CHARS = str.maketrans({c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d"})

# One plain number: optional sign, digits with optional thousands commas or a bare `.5`, optional decimals.
# Not preceded by a digit, `.` or `,` and not followed by `[.,]digit` or a digit, so `72.5.3`, `1,2345`
# and `1,23` are not read as a shorter number hiding inside a malformed one.
_NUMBER_RE = re.compile(
    r"(?<![0-9.,])[-+]?(?:(?:[0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.[0-9]+)?|\.[0-9]+)(?![0-9]|[.,][0-9])"
)
_GOLD_RE = re.compile(r"[-+]?(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)")

# Route to math-verify: any LaTeX command, LaTeX's `{,}` thousands separator, or a fraction `a/b` between
# digits (`$5/hour` stays on the exact path).
_MATH_MARKUP_RE = re.compile(r"\\|\{,\}|[0-9)]\s*/\s*[-(.0-9]")

# Decorations removed before the shape check, in order. Each rule is (pattern, replacement).
_LATEX_DECORATIONS = [
    # `\text{ dollars}`: a unit inside a text group; digits inside are not allowed (`\text{72}` is refused).
    (re.compile(r"\\(?:text|textbf|textrm|textit|mathrm|mbox|operatorname)\s*\{[^{}\\0-9]*\}"), " "),
    (re.compile(r"\\(?:left|right)(?![A-Za-z])"), ""),
    (re.compile(r"\\(?:[,!;: ]|q?quad(?![A-Za-z]))"), " "),
    (re.compile(r"\\?%"), ""),
    (re.compile(r"\\\$"), ""),  # currency before the `$` delimiters below
    (re.compile(r"\\[()\[\]]|\$"), ""),
    (re.compile(r"\{,\}"), ""),  # LaTeX thousands separator `1{,}234`
    (re.compile(r"(?<=[0-9]),(?=[0-9]{3}(?![0-9]))"), ""),
]
_LEADING_WORDS_RE = re.compile(r"\A(?:[A-Za-z][A-Za-z']*[:,]?\s+)+")
_TRAILING_WORDS_RE = re.compile(r"(?:\s+[A-Za-z][A-Za-z'.]*)+\Z")

# The only shapes handed to math-verify (whitespace allowed between tokens).
_NUM = r"(?:[0-9]+(?:\.[0-9]+)?|\.[0-9]+)"
_SNUM = rf"-?\s*{_NUM}"
_FRAC = rf"\\[dt]?frac\s*(?:\{{\s*{_SNUM}\s*\}}\s*\{{\s*{_SNUM}\s*\}}|[0-9]\s*[0-9])"
_VALUE = rf"(?:{_FRAC}|{_SNUM}\s*/\s*{_SNUM}|{_NUM})"
_INNER = rf"-?\s*(?:{_VALUE}|\(\s*-?\s*{_VALUE}\s*\))"
_LATEX_SHAPE_RE = re.compile(rf"(?:\\boxed\s*\{{\s*{_INNER}\s*\}}|{_INNER})")

_LATEX_ONLY = [math_verify.LatexExtractionConfig()]


class _DropTimeoutDisabledWarning(logging.Filter):
    """Drops math-verify's one-off "timeout is disabled" warning: `run_with_timeout` replaces that timeout."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Timeout is disabled")


for _name in ("math_verify.parser", "math_verify.grader"):
    logging.getLogger(_name).addFilter(_DropTimeoutDisabledWarning())


def run_with_timeout(func: Callable[..., _T], *args: object, timeout_s: float, default: _T) -> _T:
    """`func(*args)` in a daemon thread, or `default` if it raises or has not finished after `timeout_s`.

    Works from any thread, unlike `signal.alarm`. A call that overruns keeps running in its daemon thread
    (Python threads cannot be killed) but no longer blocks the caller or interpreter exit.
    """
    result: list[_T] = []

    def target() -> None:
        try:
            result.append(func(*args))
        except Exception:  # noqa: BLE001 - a reward must never raise; the answer simply has no value
            log.debug("answer check raised", exc_info=True)

    worker = threading.Thread(target=target, name="answer-check", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        log.warning("answer check exceeded %.1fs; scored as incorrect", timeout_s)
        return default
    return result[0] if result else default


def gold_value(gold: object) -> Decimal | None:
    """The gold answer as a Decimal (`1,234` → 1234, as GSM8K's `dataset.py` strips commas), or None."""
    text = str(gold).strip().replace(",", "")
    return Decimal(text) if _GOLD_RE.fullmatch(text) else None


def to_number(text: str) -> Decimal | None:
    """Compatibility alias of `gold_value` (the first rewards module exposed this name)."""
    return gold_value(text)


def _clean(answer: str) -> str | None:
    """The answer with minus signs unified, or None when it is too long or contains a non-ASCII numeral."""
    if not isinstance(answer, str) or len(answer) > MAX_ANSWER_CHARS:
        return None
    if not answer.isascii():
        if any(ch.isnumeric() and not ch.isascii() for ch in answer):
            return None
        answer = answer.translate(_MINUS_CHARS)
    return answer.strip()


def needs_math_verify(answer: str) -> bool:
    """True when the answer holds LaTeX or an `a/b` fraction, i.e. `is_correct` takes the math-verify path."""
    return isinstance(answer, str) and _MATH_MARKUP_RE.search(answer) is not None


def answer_value(answer: str) -> Decimal | None:
    """Exact path: the single number stated in a plain-text answer, or None (none, several, or LaTeX)."""
    cleaned = _clean(answer)
    if cleaned is None or needs_math_verify(cleaned):
        return None
    values = {Decimal(m.group().replace(",", "")) for m in _NUMBER_RE.finditer(cleaned)}
    return values.pop() if len(values) == 1 else None


def latex_core(answer: str) -> str | None:
    """The math-verify path's input: the answer without decorations if it has a whitelisted shape, or None."""
    cleaned = _clean(answer)
    if cleaned is None:
        return None
    core = cleaned
    for pattern, replacement in _LATEX_DECORATIONS:
        core = pattern.sub(replacement, core)
    core = core.strip().removesuffix(".").strip()
    core = _TRAILING_WORDS_RE.sub("", _LEADING_WORDS_RE.sub("", core)).strip()
    if not core or len(core) > MAX_LATEX_CORE_CHARS or not _LATEX_SHAPE_RE.fullmatch(core):
        return None
    return core


def _math_verify_equal(core: str, gold: Decimal) -> bool:
    """Parse `core` with math-verify's LaTeX extractor and compare with the gold; signal timeouts disabled."""
    parsed = math_verify.parse(f"${core}$", extraction_config=_LATEX_ONLY, parsing_timeout=None)
    if not parsed:
        return False
    expr = parsed[0]
    # A set, tuple or equation is not one number; zoo/nan (`\frac{1}{0}`) are not finite.
    if not isinstance(expr, sympy.Expr) or expr.is_number is not True or expr.is_finite is not True:
        return False
    return bool(math_verify.verify(sympy.Rational(str(gold)), expr, timeout_seconds=None))


@lru_cache(maxsize=_CACHE_SIZE)
def _math_verify_equal_bounded(core: str, gold: Decimal) -> bool:
    # Cached, timeouts included, so a repeated input is answered the same way without another thread.
    return run_with_timeout(_math_verify_equal, core, gold, timeout_s=MATH_VERIFY_TIMEOUT_S, default=False)


def clear_cache() -> None:
    """Forget cached math-verify results (benchmarks use it to time cold parses)."""
    _math_verify_equal_bounded.cache_clear()


def is_correct(answer: str, gold: object) -> bool:
    """True when the answer part states exactly one value and it equals the gold number (rules above)."""
    gold_number = gold_value(gold)
    if gold_number is None or not isinstance(answer, str):
        return False
    if needs_math_verify(answer):
        core = latex_core(answer)
        return core is not None and _math_verify_equal_bounded(core, gold_number)
    value = answer_value(answer)
    return value is not None and value == gold_number


# lm-evaluation-harness's GSM8K "flexible-extract" filter (lm_eval/tasks/gsm8k/gsm8k.yaml): the last match of this
# regex anywhere in the completion (group_select: -1), then its exact_match normalisation (regexes_to_ignore
# ",", "\\$" and a trailing "."). It reads the maths apart from our answer format.
FLEXIBLE_EXTRACT = re.compile(r"(-?[$0-9.,]{2,})|(-?[0-9]+)")


def flexible_answer(completion: str) -> str | None:
    """The last number written anywhere in `completion`, normalised as the harness does; None if there is none.

    >>> flexible_answer("So 48 + 24 = 72 clips.")
    '72'
    """
    matches = FLEXIBLE_EXTRACT.findall(completion or "")
    if not matches:
        return None
    text = next(group for group in matches[-1] if group)
    return text.replace(",", "").replace("$", "").removesuffix(".") or None


def is_flexible_correct(completion: str, gold: object) -> bool:
    """True when the last number in the completion equals the gold number (compared as numbers, as `is_correct`
    does, where the harness compares strings: "72.0" counts here)."""
    answer = flexible_answer(completion)
    return answer is not None and is_correct(answer, gold)
