"""Property tests: any text scores a float in the documented range, deterministically, without raising."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reasoning_rl.task.answer_check import is_correct
from reasoning_rl.task.formatting import ANSWER_CLOSE, ANSWER_OPEN, THINK_CLOSE, THINK_OPEN, format_target
from reasoning_rl.task.rewards import correctness_reward, correctness_soft_reward, format_reward

# Fragments that steer random text into the parser's interesting branches: tags, LaTeX, numbers, and the
# unicode the docs promise to survive (bidi and zero-width marks, NUL, lone surrogates, non-ASCII digits).
# fmt: off
FRAGMENTS = [
    THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE, "\n", " ", "72", "-5", "1,234", "0.5", ".", ",", "/",
    "$", "%", "\\", "{", "}", "(", ")", r"\frac", r"\boxed{", r"\dfrac{1}{2}", r"\$", r"\%", r"\text{ kg}",
    "^", "or", "\u200b", "\u200f", "\x00", "\ud800", "\udfff", "\uff17", "\u0667", "\u2212", "\u00bd",
]
# fmt: on
texts = st.lists(st.one_of(st.characters(), st.sampled_from(FRAGMENTS)), max_size=80).map("".join)
answers = st.lists(st.sampled_from(FRAGMENTS[4:] + ["7", "2", " or ", "a"]), max_size=12).map("".join)
# Completions in (or near) the format: tag positions right, contents random.
shaped = st.builds(lambda think, answer: format_target(think, answer), texts, answers)
golds = st.one_of(
    st.integers(-(10**6), 10**9).map(str), st.sampled_from(["72", "0.5", "1234", "-5", "x", ""]), texts
)
anything = st.one_of(texts, shaped)
SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(anything)
def test_format_reward_in_zero_one(completion: str) -> None:
    assert format_reward([completion])[0] in (0.0, 1.0)


@SETTINGS
@given(anything, golds)
def test_correctness_reward_in_zero_one(completion: str, gold: str) -> None:
    assert correctness_reward([completion], answer=[gold])[0] in (0.0, 1.0)


@SETTINGS
@given(anything, golds)
def test_correctness_soft_reward_in_documented_values(completion: str, gold: str) -> None:
    assert correctness_soft_reward([completion], answer=[gold])[0] in (0.0, 0.5, 1.0)


@SETTINGS
@given(anything, golds)
def test_rewards_deterministic(completion: str, gold: str) -> None:
    def score() -> tuple[float, ...]:
        return (
            *format_reward([completion]),
            *correctness_reward([completion], answer=[gold]),
            *correctness_soft_reward([completion], answer=[gold]),
        )

    assert score() == score()


@SETTINGS
@given(anything, golds)
def test_rewards_return_python_floats(completion: str, gold: str) -> None:
    scores = [*format_reward([completion]), *correctness_reward([completion], answer=[gold])]
    assert all(type(s) is float for s in scores)


@SETTINGS
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=2, allow_nan=False))
def test_sft_target_scores_full(value: Decimal) -> None:
    completion = format_target("Some reasoning.", str(value))
    assert (format_reward([completion]), correctness_reward([completion], answer=[str(value)])) == (
        [1.0],
        [1.0],
    )


@SETTINGS
@given(st.integers(-(10**12), 10**12))
def test_is_correct_thousands_commas(value: int) -> None:
    assert is_correct(f"{value:,}", str(value))


@SETTINGS
@given(st.decimals(min_value=-(10**9), max_value=10**9, places=3, allow_nan=False))
def test_is_correct_off_by_one_is_wrong(value: Decimal) -> None:
    assert not is_correct(str(value), str(value + 1))
