"""Print the last pipeline run's per-stage wall times, the base / SFT / GRPO table under both protocols (greedy, and
sampled pass@1) and the paired tests, from metrics/ (markdown).

Run: python -m scripts.pipeline_summary   (after `dvc repro`; reads the files `dvc metrics show` reads)
"""

from __future__ import annotations

import json
from pathlib import Path

from reasoning_rl import paths


def load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def main() -> None:
    stages = {
        "prepare": load(paths.DATA_STATS),
        "sft": load(paths.train_metrics("sft")),
        "select": load(paths.train_metrics("select")),
        "grpo": load(paths.train_metrics("grpo")),
    }
    evals = {m: load(paths.eval_metrics(m)) for m in ("base", "sft", "grpo")}
    print("| stage | wall time | notes |\n|---|---|---|")
    total = 0.0
    for name, m in stages.items():
        note = f"{m['steps']} steps" if "steps" in m else (f"{m['kept']} of {m['candidates']} prompts kept"
                                                           if "kept" in m else "")
        total += m.get("wall_seconds", 0.0)
        print(f"| {name} | {m.get('wall_seconds', float('nan')) / 60:.1f} min | {note} |")
    for name, m in evals.items():
        if m:
            sampled = m.get("sampled_decode_seconds", 0.0)
            note = f"greedy decode {m['decode_seconds'] / 60:.1f} min" + (
                f", k = {m['samples_per_question']:.0f} sampled decode {sampled / 60:.1f} min" if sampled else "")
            total += m.get("wall_seconds", 0.0)
            print(f"| evaluate@{name} | {m.get('wall_seconds', float('nan')) / 60:.1f} min | {note} |")
    print(f"| **total** | **{total / 60:.1f} min** | the stages above, report excluded (seconds) |")
    print()
    print(
        "| model | greedy strict | 95 % Wilson CI | greedy flexible | 95 % Wilson CI | sampled pass@1 strict "
        "| sampled pass@1 flexible | format rate | mean tokens | truncated | questions |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for name, m in evals.items():
        if not m:
            continue
        print(
            f"| {name} | {m['accuracy']:.1%} | [{m['accuracy_ci_low']:.1%}, {m['accuracy_ci_high']:.1%}] "
            f"| {m['flexible_accuracy']:.1%} "
            f"| [{m['flexible_accuracy_ci_low']:.1%}, {m['flexible_accuracy_ci_high']:.1%}] "
            f"| {_pct(m.get('pass1_strict'))} | {_pct(m.get('pass1_flexible'))} "
            f"| {m['format_rate']:.1%} | {m['mean_completion_tokens']:.0f} | {m['truncated_rate']:.1%} "
            f"| {m['questions']} |"
        )
    paired = load(paths.PAIRED_METRICS)
    if paired:
        print()
        print("| pair | test | strict delta [95 % CI] | strict p | flexible delta [95 % CI] | flexible p |\n"
              "|---|---|---|---|---|---|")
        for pair, v in paired.items():
            greedy = f"{_delta(v.get('strict', {}))} | {_delta(v.get('flexible', {}))}"
            print(f"| {pair} | greedy, McNemar exact | {greedy} |")
            sampled = v.get("sampled", {})
            if sampled:
                k = sampled["strict"]["k"]
                print(f"| {pair} | sampled pass@1 (k = {k}), sign-flip | {_delta(sampled['strict'])} "
                      f"| {_delta(sampled['flexible'])} |")
    grpo = stages["grpo"]
    if grpo:
        print()
        print("| GRPO training (mean of first / last 5 steps) | first | last |\n|---|---|---|")
        for key in ("reward", "rewards_format_mean", "rewards_correctness_mean", "frac_reward_zero_std",
                    "completions_mean_length"):
            if f"{key}_first" in grpo:
                print(f"| {key} | {grpo[f'{key}_first']:.3f} | {grpo[f'{key}_last']:.3f} |")


def _pct(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _delta(test: dict) -> str:
    """`+2.0% [+0.5%, +3.5%] | 0.012`: the delta, its interval when the test has one, and p."""
    if "delta" not in test:
        return " | "
    ci = f" [{test['ci_low'] * 100:+.1f}, {test['ci_high'] * 100:+.1f}]" if "ci_low" in test else ""
    return f"{test['delta'] * 100:+.1f} pt{ci} | {test['p']:.2g}"


if __name__ == "__main__":
    main()
