"""One table of the GRPO variants from several `benchmarks.ablate_recipe` reports, each paired with a reference.

`ablate_recipe` tests each GRPO adapter against its own SFT start. Variants from different invocations are
compared here against one reference variant (the default recipe) on the same validation questions: McNemar's
exact p on strict and flexible accuracy, per question.

    python -m benchmarks.compare_ablations benchmarks/results/ablation_val_served_g8.json \\
        benchmarks/results/ablation_val_kl.json \\
        --against served_masked_20steps
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reasoning_rl.eval.metrics import mcnemar


def load_variants(files: list[Path]) -> dict[str, dict]:
    """Every variant of the report files by name; the reports must cover the same validation questions."""
    variants: dict[str, dict] = {}
    split = None
    for file in files:
        report = json.loads(Path(file).read_text())
        if split is not None and report["split"] != split:
            raise SystemExit(f"{file}: split {report['split']!r} differs from the first report's {split!r}")
        split = report["split"]
        for row in report["variants"]:
            if row["variant"] in variants:
                raise SystemExit(f"{file}: variant {row['variant']!r} appears in two reports")
            variants[row["variant"]] = row
    return variants


def against(row: dict, reference: dict) -> dict:
    """Variant minus reference GRPO accuracy and McNemar's exact p, strict and flexible."""
    out = {}
    for kind, key in (("strict", "correct"), ("flexible", "correct_flexible")):
        a, b = reference["val"]["grpo"][key], row["val"]["grpo"][key]
        test = mcnemar(a, b)
        out[kind] = {"delta": (sum(b) - sum(a)) / len(a), "p": test.p_exact,
                     "only_reference": test.only_a, "only_variant": test.only_b}
    return out


def table(variants: dict[str, dict], reference: str) -> str:
    if reference not in variants:
        raise SystemExit(f"--against {reference!r}: not among the variants {sorted(variants)}")
    ref = variants[reference]
    lines = ["| variant | SFT strict | GRPO strict | GRPO flexible | GRPO format | GRPO tokens | tied groups (train) "
             f"| vs {reference}: strict delta, p | flexible delta, p | s/step |", "|" + "---|" * 10]
    for name, row in variants.items():
        s, g = row["val"]["sft"], row["val"]["grpo"]
        tied = "" if row["grpo_no_signal_mean"] is None else f"{row['grpo_no_signal_mean']:.0%}"
        if name == reference:
            vs_strict = vs_flex = "(reference)"
        else:
            cmp = against(row, ref)
            vs_strict = f"{cmp['strict']['delta'] * 100:+.1f} pt, {cmp['strict']['p']:.2g}"
            vs_flex = f"{cmp['flexible']['delta'] * 100:+.1f} pt, {cmp['flexible']['p']:.2g}"
        lines.append(f"| {name} | {s['accuracy']:.1%} | {g['accuracy']:.1%} | {g['flexible_accuracy']:.1%} "
                     f"| {g['format_rate']:.1%} | {g['mean_completion_tokens']:.0f} | {tied} | {vs_strict} "
                     f"| {vs_flex} | {row['grpo_seconds_per_step']} |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", type=Path, help="JSON files written by benchmarks.ablate_recipe")
    ap.add_argument("--against", required=True, help="the reference variant's name")
    args = ap.parse_args()
    print(table(load_variants(args.reports), args.against))


if __name__ == "__main__":
    main()
