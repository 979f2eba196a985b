"""Print the last pipeline run's per-stage wall time and the base / SFT / GRPO table from metrics/ (markdown).

Run: python scripts/pipeline_summary.py   (after `dvc repro`; reads the files `dvc metrics show` reads)
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
        "grpo": load(paths.train_metrics("grpo")),
    }
    evals = {m: load(paths.eval_metrics(m)) for m in ("base", "sft", "grpo")}
    print("| stage | wall time | notes |\n|---|---|---|")
    for name, m in stages.items():
        note = f"{m.get('steps', '')} steps" if "steps" in m else ""
        print(f"| {name} | {m.get('wall_seconds', float('nan')) / 60:.1f} min | {note} |")
    for name, m in evals.items():
        if m:
            sampled = m.get("sampled_decode_seconds", 0.0)
            note = f"greedy decode {m['decode_seconds'] / 60:.1f} min" + (
                f", k = {m['samples_per_question']:.0f} sampled decode {sampled / 60:.1f} min" if sampled else "")
            print(f"| evaluate@{name} | {m.get('wall_seconds', float('nan')) / 60:.1f} min | {note} |")
    print()
    print(
        "| model | strict accuracy | 95 % Wilson CI | flexible accuracy | 95 % Wilson CI | format rate | mean tokens "
        "| truncated | questions |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, m in evals.items():
        if not m:
            continue
        print(
            f"| {name} | {m['accuracy']:.1%} | [{m['accuracy_ci_low']:.1%}, {m['accuracy_ci_high']:.1%}] "
            f"| {m['flexible_accuracy']:.1%} "
            f"| [{m['flexible_accuracy_ci_low']:.1%}, {m['flexible_accuracy_ci_high']:.1%}] "
            f"| {m['format_rate']:.1%} | {m['mean_completion_tokens']:.0f} | {m['truncated_rate']:.1%} "
            f"| {m['questions']} |"
        )
    paired = load(paths.PAIRED_METRICS)
    if paired:
        print()
        print("| pair (McNemar exact) | strict delta | strict p | flexible delta | flexible p |\n|---|---|---|---|---|")
        for pair, v in paired.items():
            s, f = v.get("strict", {}), v.get("flexible", {})
            print(f"| {pair} | {s.get('delta', float('nan')):+.1%} | {s.get('p', float('nan')):.2g} "
                  f"| {f.get('delta', float('nan')):+.1%} | {f.get('p', float('nan')):.2g} |")
    grpo = stages["grpo"]
    if grpo:
        print()
        print("| GRPO training (mean of first / last 5 steps) | first | last |\n|---|---|---|")
        for key in ("reward", "rewards_format_mean", "rewards_correctness_mean", "frac_reward_zero_std",
                    "completions_mean_length"):
            if f"{key}_first" in grpo:
                print(f"| {key} | {grpo[f'{key}_first']:.3f} | {grpo[f'{key}_last']:.3f} |")


if __name__ == "__main__":
    main()
