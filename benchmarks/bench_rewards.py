"""Throughput of the default rewards (`format` + `correctness`) on realistic GSM8K completions.

Completions are built from GSM8K SFT targets (`Example.target()`), some kept, some perturbed (wrong number,
units, commas, hedges) or malformed (missing tags, text after the answer, empty think), the mix a GRPO batch
of a partly trained model shows. Two sets are timed separately:

* exact path: every answer is plain text, scored with regexes and `Decimal`;
* math-verify path: every answer is LaTeX or a fraction (`\\boxed{72}`, `\\frac{144}{2}`, `3/4 cups`), scored
  through math-verify in a bounded thread; timed cold (cache cleared before each completion, the cost of a
  never-seen answer) and warm (one cache for the whole run, as in training where a group repeats answers).

One completion scored = `format_reward` and `correctness_reward` both run on it, in batches of 64.

Usage:
    python benchmarks/bench_rewards.py [--n 10000] [--n-math-verify 10000] [--data-dir ../shared/data/gsm8k]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from decimal import Decimal
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reasoning_rl.task import answer_check  # noqa: E402 - after the path insert, so it runs from a checkout
from reasoning_rl.task.formatting import format_target, parse_completion  # noqa: E402
from reasoning_rl.task.gsm8k import Example, load_split  # noqa: E402
from reasoning_rl.task.rewards import correctness_reward, correctness_soft_reward, format_reward  # noqa: E402

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "gsm8k"
BATCH = 64


def load_examples(data_dir: Path) -> list[Example]:
    """GSM8K train rows, or a small synthetic set (so the benchmark and its test run without the data)."""
    if (Path(data_dir) / "train.jsonl").is_file():
        return load_split(Path(data_dir), "train")
    rng = random.Random(0)
    examples = []
    for i in range(500):
        a, b = rng.randint(2, 999), rng.randint(2, 999)
        reasoning = f"She has {a} apples.\nShe buys {b} more.\nSo she has {a} + {b} = {a + b} apples."
        examples.append(Example(id=f"synthetic:{i}", question="", reasoning=reasoning, answer=str(a + b)))
    return examples


def _exact_variant(ex: Example, rng: random.Random) -> str:
    gold = Decimal(ex.answer)
    r = rng.random()
    if r < 0.40:
        return ex.target()
    if r < 0.50:
        return format_target(ex.reasoning, str(gold + 1))
    if r < 0.58:
        return format_target(
            ex.reasoning, rng.choice([f"{ex.answer} units", f"${ex.answer}", f"{ex.answer}.0"])
        )
    if r < 0.63:
        return format_target(ex.reasoning, f"{gold:,}")
    if r < 0.68:
        return format_target(ex.reasoning, f"{ex.answer} or {gold + 1}")
    if r < 0.73:
        return ex.target().removesuffix("</answer>")
    if r < 0.78:
        return ex.target() + "\nI hope this helps!"
    if r < 0.83:
        return f"<think></think>\n<answer>{ex.answer}</answer>"
    if r < 0.88:
        return f"{ex.reasoning}\n#### {ex.answer}"
    # Long rambling reasoning: the regexes must stay linear in the completion length.
    return format_target("\n".join([ex.reasoning] * rng.randint(2, 6)), ex.answer)


def _math_verify_variant(ex: Example, rng: random.Random) -> str:
    gold = Decimal(ex.answer)
    k = rng.randint(2, 9)
    answer = rng.choice(
        [
            rf"\boxed{{{ex.answer}}}",
            rf"$\boxed{{{ex.answer}}}$",
            rf"\frac{{{gold * k}}}{{{k}}}",
            rf"\dfrac{{{gold * k}}}{{{k}}} dollars",
            f"{gold * k}/{k}",
            rf"\boxed{{{gold + 1}}}",
            rf"The answer is $\boxed{{\frac{{{gold * k}}}{{{k}}}}}$.",
            rf"\sqrt{{{ex.answer}}}",  # outside the whitelist: refused before math-verify
        ]
    )
    return format_target(ex.reasoning, answer)


def build_completions(
    examples: list[Example], n: int, seed: int, math_verify_path: bool
) -> tuple[list[str], list[str]]:
    """`n` completions and their gold answers, drawn with replacement from `examples`."""
    rng = random.Random(seed)
    variant = _math_verify_variant if math_verify_path else _exact_variant
    completions, golds = [], []
    for _ in range(n):
        ex = rng.choice(examples)
        completions.append(variant(ex, rng))
        golds.append(ex.answer)
    return completions, golds


def score_rate(completions: list[str], golds: list[str], cold: bool = False) -> float:
    """Completions per second for format + correctness; `cold` clears the math-verify cache per completion."""
    answer_check.clear_cache()
    batch = 1 if cold else BATCH
    start = time.perf_counter()
    for i in range(0, len(completions), batch):
        if cold:
            answer_check.clear_cache()
        chunk, chunk_golds = completions[i : i + batch], golds[i : i + batch]
        format_reward(chunk)
        correctness_reward(chunk, answer=chunk_golds)
    return len(completions) / (time.perf_counter() - start)


def adversarial_inputs() -> dict[str, str]:
    """The inputs docs/rewards.md promises to score in bounded time, each about 100 kB or deeper than sane."""
    garbage = ("lorem <thin ipsum 7 </answ $ \\frac{ 1,2 \u200f\x00\ud800 " * 3000)[:100_000]
    return {
        "100 kB garbage": garbage,
        "100 kB think, well-formed": format_target("x" * 100_000, "72"),
        "100 kB answer of LaTeX": "<think>x</think><answer>" + "\\frac{" * 16_000 + "</answer>",
        "10,000 nested <think>": "<think>" * 10_000 + "x" + "</think>" * 10_000 + "<answer>72</answer>",
        "100 kB zero-width think": "<think>" + "\u200b" * 100_000 + "</think><answer>72</answer>",
    }


def worst_case_seconds(text: str, repeat: int = 20) -> float:
    """Slowest of `repeat` runs of format + correctness + correctness_soft on `text` (cold cache)."""
    worst = 0.0
    for _ in range(repeat):
        answer_check.clear_cache()
        start = time.perf_counter()
        format_reward([text])
        correctness_reward([text], answer=["72"])
        correctness_soft_reward([text], answer=["72"])
        worst = max(worst, time.perf_counter() - start)
    return worst


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000, help="completions for the exact path")
    parser.add_argument("--n-math-verify", type=int, default=10_000, help="completions for math-verify")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    examples = load_examples(args.data_dir)
    exact, exact_golds = build_completions(examples, args.n, args.seed, math_verify_path=False)
    mv, mv_golds = build_completions(examples, args.n_math_verify, args.seed, math_verify_path=True)
    # Warm up the ANTLR parser once so its one-off start-up is not charged to the first timed completion.
    answer_check.is_correct(r"\frac{1}{2}", "0.5")

    rate = score_rate(exact, exact_golds)
    accuracy = sum(correctness_reward(exact, answer=exact_golds)) / len(exact)
    print(f"exact path:              {rate:>10,.0f} completions/s  (n={len(exact)}, correct={accuracy:.1%})")
    rate = score_rate(mv, mv_golds, cold=True)
    print(
        f"math-verify path, cold:  {rate:>10,.0f} completions/s  (n={len(mv)}, cache cleared per completion)"
    )
    rate = score_rate(mv, mv_golds)
    parsed = [parse_completion(c) for c in mv]
    distinct = len({(p.answer, g) for p, g in zip(parsed, mv_golds, strict=True) if p is not None})
    print(
        f"math-verify path, warm:  {rate:>10,.0f} completions/s  (n={len(mv)}, {distinct} distinct answers)"
    )
    for name, text in adversarial_inputs().items():
        print(f"worst of 20, all three rewards, {name}: {worst_case_seconds(text) * 1000:.1f} ms")


if __name__ == "__main__":
    main()
