"""GRPO's learning signal per step, runs side by side: the share of groups whose rewards all tie (TRL's
frac_reward_zero_std: zero advantages, nothing to learn) and the mean correctness reward.

    git show ce106dc:metrics/grpo_history.json > runs/grpo_history_ce106dc.json   # a committed past run
    python -m scripts.plot_signal runs/grpo_history_ce106dc.json=SmolLM2-135M \\
        metrics/grpo_history.json=Qwen2.5-Coder-0.5B --out docs/img/signal.png

Each argument is a GRPO history file (metrics/grpo_history.json of a run) with an optional `=label`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

SERIES = (("frac_reward_zero_std", "groups with no reward spread"), ("rewards/correctness/mean", "correctness reward"))


def steps_of(path: Path) -> list[dict]:
    if not path.is_file():
        raise SystemExit(f"{path}: no such history file (a GRPO run writes metrics/grpo_history.json)")
    return [h for h in json.loads(path.read_text()) if "reward" in h]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="history.json[=label]")
    ap.add_argument("--out", type=Path, default=Path("docs/img/signal.png"))
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SERIES), figsize=(10, 3.4))
    for spec in args.runs:
        path, _, label = spec.partition("=")
        steps = steps_of(Path(path))
        for ax, (key, title) in zip(axes, SERIES, strict=True):
            values = [h.get(key) for h in steps]
            mean = sum(v for v in values if v is not None) / max(1, sum(v is not None for v in values))
            ax.plot(range(1, len(values) + 1), values, marker=".", label=f"{label or path} (mean {mean:.2f})")
            ax.set_title(title)
            ax.set_xlabel("GRPO step")
            ax.set_ylim(-0.02, 1.02)
    for ax in axes:
        ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
