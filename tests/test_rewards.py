"""Reward functions: a case table by category, the registry, threads, bounded time, the soft variant."""

from __future__ import annotations

import importlib.util
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reasoning_rl.task import answer_check
from reasoning_rl.task.formatting import format_target, parse_completion
from reasoning_rl.task.rewards import (
    REWARD_FUNCS,
    SOFT_MALFORMED_CREDIT,
    completion_text,
    correctness_reward,
    correctness_soft_reward,
    format_reward,
    get_reward_funcs,
    register,
)

ROOT = Path(__file__).resolve().parents[1]
REASONING = "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether in April and May."


def wrap(answer: str, think: str = REASONING) -> str:
    """A well-formed completion around `answer` (the exact SFT target shape)."""
    return format_target(think, answer)


GARBAGE_100KB = ("lorem <thin ipsum 7 </answ $ \\frac{ 1,2 " * 2600)[:100_000]
NESTED_THINK = "<think>" * 10_000 + "x" + "</think>" * 10_000 + "<answer>72</answer>"

# (completion, gold, expected format, expected correctness); ids are "<category>-<case>".
CASES = [
    # well-formed
    pytest.param(wrap("72"), "72", 1.0, 1.0, id="well_formed-canonical"),
    pytest.param(wrap("73"), "72", 1.0, 0.0, id="well_formed-wrong_number"),
    pytest.param("<think>48+24=72</think><answer>72</answer>", "72", 1.0, 1.0, id="well_formed-no_newlines"),
    pytest.param(
        "  \n<think>x</think>\n\n<answer> 72 </answer>\n ", "72", 1.0, 1.0, id="well_formed-padding"
    ),
    pytest.param(
        [{"role": "assistant", "content": wrap("72")}], "72", 1.0, 1.0, id="well_formed-chat_message"
    ),
    pytest.param(wrap("-5"), "-5", 1.0, 1.0, id="well_formed-negative"),
    # multi-line
    pytest.param(wrap("72", "Step 1.\n\nStep 2.\n\n\nStep 3."), "72", 1.0, 1.0, id="multi_line-blank_lines"),
    pytest.param(
        "<think>\r\na\r\nb\r\n</think>\r\n<answer>72</answer>\r\n", "72", 1.0, 1.0, id="multi_line-crlf"
    ),
    pytest.param(
        "<think>\nx\n</think>\n<answer>\n72\n</answer>", "72", 1.0, 1.0, id="multi_line-answer_lines"
    ),
    pytest.param(wrap("72", "\n".join(["A step."] * 200)), "72", 1.0, 1.0, id="multi_line-200_lines"),
    # numeric normalisation
    pytest.param(wrap("1,234"), "1234", 1.0, 1.0, id="numeric-thousands_comma"),
    pytest.param(wrap("1234"), "1,234", 1.0, 1.0, id="numeric-gold_with_comma"),
    pytest.param(wrap("1,234,567"), "1234567", 1.0, 1.0, id="numeric-two_commas"),
    pytest.param(wrap("18.0"), "18", 1.0, 1.0, id="numeric-trailing_point_zero"),
    pytest.param(wrap("18.50"), "18.5", 1.0, 1.0, id="numeric-trailing_zero_decimal"),
    pytest.param(wrap(".5"), "0.5", 1.0, 1.0, id="numeric-bare_decimal"),
    pytest.param(wrap("0072"), "72", 1.0, 1.0, id="numeric-leading_zeros"),
    pytest.param(wrap("+72"), "72", 1.0, 1.0, id="numeric-plus_sign"),
    pytest.param(wrap("1,2345"), "12345", 1.0, 0.0, id="numeric-bad_grouping"),
    pytest.param(wrap("72.5.3"), "72.5", 1.0, 0.0, id="numeric-two_points"),
    pytest.param(wrap("72.4"), "72", 1.0, 0.0, id="numeric-close_not_equal"),
    # units and words
    pytest.param(wrap("$18"), "18", 1.0, 1.0, id="units-dollar"),
    pytest.param(wrap("18%"), "18", 1.0, 1.0, id="units-percent"),
    pytest.param(wrap("72 clips"), "72", 1.0, 1.0, id="units-trailing_word"),
    pytest.param(wrap("The answer is 72."), "72", 1.0, 1.0, id="units-sentence"),
    pytest.param(wrap("$1,234.00 dollars"), "1234", 1.0, 1.0, id="units-dollar_comma_words"),
    pytest.param(wrap("$5/hour"), "5", 1.0, 1.0, id="units-per_hour"),
    pytest.param(wrap("seventy-two"), "72", 1.0, 0.0, id="units-number_words"),
    pytest.param(wrap("72 clips in 2 days"), "72", 1.0, 0.0, id="units-second_number"),
    # LaTeX, fractions, boxed (math-verify path)
    pytest.param(wrap(r"\boxed{72}"), "72", 1.0, 1.0, id="latex-boxed"),
    pytest.param(wrap(r"The answer is $\boxed{72}$."), "72", 1.0, 1.0, id="latex-boxed_in_sentence"),
    pytest.param(wrap(r"\frac{3}{4}"), "0.75", 1.0, 1.0, id="latex-frac"),
    pytest.param(wrap(r"\dfrac{144}{2}"), "72", 1.0, 1.0, id="latex-dfrac"),
    pytest.param(wrap(r"\frac34"), "0.75", 1.0, 1.0, id="latex-frac_shorthand"),
    pytest.param(wrap("3/4"), "0.75", 1.0, 1.0, id="latex-plain_fraction"),
    pytest.param(wrap(r"\frac{3}{4} cups"), "0.75", 1.0, 1.0, id="latex-frac_with_unit"),
    pytest.param(wrap(r"\boxed{\frac{1}{2}}"), "0.5", 1.0, 1.0, id="latex-boxed_frac"),
    pytest.param(wrap(r"-\frac{1}{2}"), "-0.5", 1.0, 1.0, id="latex-negative_frac"),
    pytest.param(wrap(r"\$18"), "18", 1.0, 1.0, id="latex-escaped_dollar"),
    pytest.param(wrap(r"50\%"), "50", 1.0, 1.0, id="latex-escaped_percent"),
    pytest.param(wrap(r"1{,}234"), "1234", 1.0, 1.0, id="latex-brace_comma"),
    pytest.param(wrap(r"18 \text{ dollars}"), "18", 1.0, 1.0, id="latex-text_unit"),
    pytest.param(wrap(r"\frac{3}{4}"), "0.7", 1.0, 0.0, id="latex-frac_wrong"),
    pytest.param(wrap(r"\frac{1}{0}"), "0", 1.0, 0.0, id="latex-division_by_zero"),
    pytest.param(wrap(r"2\frac{1}{2}"), "2.5", 1.0, 0.0, id="latex-mixed_number_refused"),
    pytest.param(wrap(r"\sqrt{16}"), "4", 1.0, 0.0, id="latex-sqrt_refused"),
    pytest.param(wrap(r"2^{10}"), "1024", 1.0, 0.0, id="latex-power_refused"),
    # hedges and multiple answers
    pytest.param(wrap("18 or 19"), "18", 1.0, 0.0, id="hedge-or"),
    pytest.param(wrap("18-19"), "18", 1.0, 0.0, id="hedge-range"),
    pytest.param(wrap("18\u201319"), "18", 1.0, 0.0, id="hedge-en_dash_range"),
    pytest.param(wrap("between 18 and 19"), "18", 1.0, 0.0, id="hedge-between"),
    pytest.param(wrap("18, 19"), "18", 1.0, 0.0, id="hedge-list"),
    pytest.param(wrap(r"\boxed{18} or \boxed{19}"), "18", 1.0, 0.0, id="hedge-two_boxed"),
    pytest.param(wrap(r"\frac{1}{2}, \frac{1}{3}"), "0.5", 1.0, 0.0, id="hedge-two_fracs"),
    pytest.param(wrap("48+24=72"), "72", 1.0, 0.0, id="hedge-calculation"),
    pytest.param(wrap("72 (i.e. 72.0)"), "72", 1.0, 1.0, id="hedge-same_value_twice"),
    # empty think
    pytest.param("<think></think>\n<answer>72</answer>", "72", 0.0, 0.0, id="empty_think-nothing"),
    pytest.param("<think> \n\t </think>\n<answer>72</answer>", "72", 0.0, 0.0, id="empty_think-whitespace"),
    pytest.param(
        "<think>\u200b\u200f</think><answer>72</answer>", "72", 0.0, 0.0, id="empty_think-invisible"
    ),
    # empty answer
    pytest.param(wrap(""), "72", 0.0, 0.0, id="empty_answer-nothing"),
    pytest.param(wrap("   "), "72", 0.0, 0.0, id="empty_answer-whitespace"),
    pytest.param(wrap("\u200b"), "72", 0.0, 0.0, id="empty_answer-zero_width"),
    pytest.param(wrap("no idea"), "72", 1.0, 0.0, id="empty_answer-no_number"),
    # nested tags
    pytest.param(
        "<think><think>x</think></think><answer>72</answer>", "72", 0.0, 0.0, id="nested-think_in_think"
    ),
    pytest.param(
        "<think>x<answer>72</answer></think><answer>72</answer>", "72", 0.0, 0.0, id="nested-answer_in_think"
    ),
    pytest.param(NESTED_THINK, "72", 0.0, 0.0, id="nested-10000_think"),
    # repeated blocks
    pytest.param("<think>a</think><think>b</think><answer>72</answer>", "72", 0.0, 0.0, id="repeated-think"),
    pytest.param(wrap("72") + "<answer>72</answer>", "72", 0.0, 0.0, id="repeated-answer_same"),
    pytest.param(wrap("18") + "<answer>19</answer>", "18", 0.0, 0.0, id="repeated-answer_different"),
    # answer outside tags
    pytest.param("<think>x</think>\n72", "72", 0.0, 0.0, id="outside-after_think"),
    pytest.param("The answer is 72", "72", 0.0, 0.0, id="outside-no_tags"),
    pytest.param(f"{REASONING}\n#### 72", "72", 0.0, 0.0, id="outside-gsm8k_marker"),
    pytest.param("Sure!\n" + wrap("72"), "72", 0.0, 0.0, id="outside-text_before_think"),
    # text after the answer
    pytest.param(wrap("72") + "\nI hope this helps!", "72", 0.0, 0.0, id="after-sentence"),
    pytest.param(wrap("72") + " 73", "72", 0.0, 0.0, id="after-second_number"),
    pytest.param(wrap("72") + "\n\n \t", "72", 1.0, 1.0, id="after-whitespace_only"),
    # missing closing (or opening) tag
    pytest.param(wrap("72").removesuffix("</answer>"), "72", 0.0, 0.0, id="missing-answer_close"),
    pytest.param("<think>x\n<answer>72</answer>", "72", 0.0, 0.0, id="missing-think_close"),
    pytest.param("x</think>\n<answer>72</answer>", "72", 0.0, 0.0, id="missing-think_open"),
    pytest.param("<think>x</think>\n72</answer>", "72", 0.0, 0.0, id="missing-answer_open"),
    # huge input
    pytest.param(GARBAGE_100KB, "72", 0.0, 0.0, id="huge-100kb_garbage"),
    pytest.param(wrap("72", "x" * 100_000), "72", 1.0, 1.0, id="huge-100kb_think"),
    pytest.param(wrap("7" * 300), "7" * 300, 1.0, 0.0, id="huge-300_digit_answer"),
    pytest.param(wrap("{" * 5000 + "72" + "}" * 5000), "72", 1.0, 0.0, id="huge-nested_braces"),
    pytest.param(wrap(r"\boxed{" * 40 + "72" + "}" * 40), "72", 1.0, 0.0, id="huge-nested_boxed"),
    # unicode
    pytest.param(wrap("\uff17\uff12"), "72", 1.0, 0.0, id="unicode-full_width_digits"),
    pytest.param(wrap("\u0667\u0662"), "72", 1.0, 0.0, id="unicode-arabic_indic_digits"),
    pytest.param(wrap("72 \uff17\uff13"), "72", 1.0, 0.0, id="unicode-full_width_hedge"),
    pytest.param(wrap("\u00bd"), "0.5", 1.0, 0.0, id="unicode-vulgar_fraction"),
    pytest.param(wrap("\u4e03\u5341\u4e8c"), "72", 1.0, 0.0, id="unicode-cjk_numeral"),
    pytest.param(wrap("\u200f72\u200e"), "72", 1.0, 1.0, id="unicode-bidi_marks"),
    pytest.param(wrap("7\u200b2"), "72", 1.0, 0.0, id="unicode-zero_width_inside"),
    pytest.param(wrap("72\x00"), "72", 1.0, 1.0, id="unicode-nul_byte"),
    pytest.param(wrap("72", "x\ud800y"), "72", 1.0, 1.0, id="unicode-lone_surrogate_think"),
    pytest.param(wrap("\udfff72"), "72", 1.0, 1.0, id="unicode-lone_surrogate_answer"),
    pytest.param(wrap("\u22125"), "-5", 1.0, 1.0, id="unicode-minus_sign"),
    pytest.param(wrap("\u22125"), "5", 1.0, 0.0, id="unicode-minus_sign_not_positive"),
    pytest.param(
        wrap("72", "\u0646\u0635 \u4e2d\u6587 \U0001f600"), "72", 1.0, 1.0, id="unicode-non_latin_think"
    ),
]


def test_case_table_is_large_enough() -> None:
    assert len(CASES) >= 60


@pytest.mark.parametrize(("completion", "gold", "expected_format", "expected_correctness"), CASES)
def test_format_reward_case(completion, gold, expected_format, expected_correctness) -> None:
    assert format_reward([completion]) == [expected_format]


@pytest.mark.parametrize(("completion", "gold", "expected_format", "expected_correctness"), CASES)
def test_correctness_reward_case(completion, gold, expected_format, expected_correctness) -> None:
    assert correctness_reward([completion], answer=[gold]) == [expected_correctness]


# --- registry ----------------------------------------------------------------------------------------


def test_registry_names_equal_function_names() -> None:
    # TRL logs rewards/<__name__>/mean; a mismatch would log under a name params cannot select.
    assert {name: func.__name__ for name, func in REWARD_FUNCS.items()} == {n: n for n in REWARD_FUNCS}


def test_registry_default_list_resolves() -> None:
    assert get_reward_funcs(["format", "correctness"]) == [format_reward, correctness_reward]


def test_registry_soft_variant_registered() -> None:
    assert get_reward_funcs(["correctness_soft"]) == [correctness_soft_reward]


def test_registry_unknown_name_raises() -> None:
    with pytest.raises(ValueError, match="unknown reward"):
        get_reward_funcs(["format", "nope"])


def test_registry_duplicate_name_raises() -> None:
    with pytest.raises(ValueError, match="registered twice"):
        register("format")(lambda completions, **kwargs: [])


def test_registry_docstrings_are_one_line_summaries() -> None:
    assert all(func.__doc__ and func.__doc__.splitlines()[0].strip() for func in REWARD_FUNCS.values())


# --- completion shapes ------------------------------------------------------------------------------


def test_completion_text_chat_messages_last_content() -> None:
    messages = [{"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert completion_text(messages) == "b"


def test_completion_text_unknown_shape_is_empty() -> None:
    assert completion_text({"content": "x"}) == ""


def test_rewards_ignore_extra_trl_kwargs() -> None:
    assert correctness_reward([wrap("72")], answer=["72"], prompts=["q"], completion_ids=[[1]]) == [1.0]


# --- soft variant -------------------------------------------------------------------------------------


def test_correctness_soft_well_formed_right_full_credit() -> None:
    assert correctness_soft_reward([wrap("72")], answer=["72"]) == [1.0]


def test_correctness_soft_malformed_right_partial_credit() -> None:
    assert correctness_soft_reward(["72 is it <answer>72</answer>"], answer=["72"]) == [SOFT_MALFORMED_CREDIT]


def test_correctness_soft_malformed_wrong_zero() -> None:
    assert correctness_soft_reward(["<answer>73</answer> trailing"], answer=["72"]) == [0.0]


def test_correctness_soft_malformed_hedge_zero() -> None:
    assert correctness_soft_reward(["<answer>72 or 73</answer>"], answer=["72"]) == [0.0]


def test_correctness_soft_never_ranks_malformed_above_well_formed_wrong() -> None:
    malformed_right = (
        format_reward(["<answer>72</answer>"])[0]
        + correctness_soft_reward(["<answer>72</answer>"], answer=["72"])[0]
    )
    well_formed_wrong = (
        format_reward([wrap("73")])[0] + correctness_soft_reward([wrap("73")], answer=["72"])[0]
    )
    assert malformed_right < well_formed_wrong


# --- threads and bounded time ----------------------------------------------------------------------


def test_correctness_latex_from_thread_pool() -> None:
    # math-verify's signal.alarm timeout raises off the main thread; ours must not.
    completion = wrap(r"\boxed{\frac{144}{2}}")
    answer_check.clear_cache()
    with ThreadPoolExecutor(max_workers=2) as pool:
        result = pool.submit(correctness_reward, [completion], answer=["72"]).result(timeout=60)
    assert result == [1.0]


def test_correctness_latex_from_threading_thread() -> None:
    results: list[list[float]] = []
    answer_check.clear_cache()
    worker = threading.Thread(
        target=lambda: results.append(correctness_reward([wrap("3/4")], answer=["0.75"]))
    )
    worker.start()
    worker.join(timeout=60)
    assert results == [[1.0]]


def test_run_with_timeout_returns_default_when_overrunning() -> None:
    start = time.perf_counter()
    result = answer_check.run_with_timeout(time.sleep, 5, timeout_s=0.2, default="late")
    assert result == "late" and time.perf_counter() - start < 2


def test_run_with_timeout_returns_default_when_raising() -> None:
    assert answer_check.run_with_timeout(int, "x", timeout_s=5, default=-1) == -1


def test_math_verify_path_never_calls_parse_expr(monkeypatch) -> None:
    # sympy.parse_expr evaluates its input with eval(); model text must never reach it.
    import math_verify.parser

    calls: list[str] = []
    monkeypatch.setattr(math_verify.parser, "parse_expr_cached", lambda expr: calls.append(expr))
    answer_check.clear_cache()
    assert correctness_reward([wrap("144/2"), wrap(r"\frac{3}{4}")], answer=["72", "0.75"]) == [1.0, 1.0]
    assert calls == []


def test_latex_core_refuses_deep_nesting_before_math_verify() -> None:
    # math-verify's LaTeX parse is exponential in brace depth (20 levels: minutes), so depth is capped.
    assert answer_check.latex_core(r"\boxed{" * 20 + "72" + "}" * 20) is None


def test_correctness_100kb_garbage_bounded_time() -> None:
    start = time.perf_counter()
    correctness_reward([GARBAGE_100KB] * 10, answer=["72"] * 10)
    assert (time.perf_counter() - start) / 10 < 0.5


def test_correctness_soft_100kb_answer_bounded_time() -> None:
    completion = "<answer>" + "\\frac{" * 20_000 + "</answer>"
    start = time.perf_counter()
    assert correctness_soft_reward([completion], answer=["72"]) == [0.0]
    assert time.perf_counter() - start < 0.5


def test_is_correct_gold_not_a_number_is_false() -> None:
    assert not answer_check.is_correct("72", "seventy-two")


# --- benchmark floor ----------------------------------------------------------------------------------


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_rewards", ROOT / "benchmarks" / "bench_rewards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_exact_path_throughput_floor() -> None:
    # Loose floor (goal is >= 20,000/s): catches a regression to something pathological, not noise.
    bench = _load_bench()
    completions, golds = bench.build_completions(bench.load_examples(bench.DEFAULT_DATA_DIR), 2000, 0, False)
    answers = [parsed.answer for parsed in map(parse_completion, completions) if parsed is not None]
    assert not any(answer_check.needs_math_verify(a) for a in answers)
    assert bench.score_rate(completions, golds) >= 2000


def test_bench_math_verify_path_throughput_floor() -> None:
    bench = _load_bench()
    completions, golds = bench.build_completions(bench.load_examples(bench.DEFAULT_DATA_DIR), 100, 0, True)
    answer_check.is_correct(r"\frac{1}{2}", "0.5")  # one-off parser start-up is not what this guards
    assert bench.score_rate(completions, golds, cold=True) >= 20


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        ("She has 16 - 3 - 4 = 9 eggs, so 9 * 2 = $18.", "18", True),  # the last number, "$" and "." dropped
        ("<think>9 * 2 = 18</think><answer>18</answer>", "18", True),  # the format does not matter
        ("The total is 1,080 dollars", "1080", True),  # thousands separators dropped
        ("18 eggs, then 2 more: 20", "18", False),  # the last number, not any number
        ("print(eggs * price)", "18", False),  # no number at all
        ("", "18", False),
        ("-5 degrees", "-5", True),
    ],
)
def test_flexible_extract_reads_the_last_number(completion, gold, expected):
    from reasoning_rl.task.answer_check import is_flexible_correct

    assert is_flexible_correct(completion, gold) is expected
