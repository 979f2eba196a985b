"""Write the self-contained evaluation report (reports/report.html) from the evaluate stage's outputs.

Run: python -m scripts.report [--models base sft grpo champion] [--out reports/report.html]
The evaluate stage writes the same report at its end; this re-renders it without re-evaluating (for example
after a report change). Nothing is fetched at view time: CSS is inline and the figures are base64 PNGs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from reasoning_rl import paths
from reasoning_rl.eval.report import load_inputs, render_html
from reasoning_rl.ops.tracking import file_sha256, git_state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["base", "sft", "grpo", "champion"])
    parser.add_argument("--out", type=Path, default=paths.REPORT)
    parser.add_argument("--traces", type=int, default=6, help="questions shown side by side")
    args = parser.parse_args(argv)
    adapter = paths.adapter_dir("grpo") / "adapter_model.safetensors"
    inputs = load_inputs(args.models, paths.eval_samples, paths.eval_metrics, paths.TEST, paths.train_history("grpo"),
                         file_sha256(adapter) if adapter.is_file() else None)
    page, summary = render_html(**inputs, num_traces=args.traces, meta={"git": git_state()["git_commit"][:10]})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page, encoding="utf-8")
    paths.EVAL_REPORT_METRICS.write_text(json.dumps(summary, indent=2) + "\n")
    print(f"wrote {args.out} ({len(page) / 1024:.0f} KiB); GRPO curves from {inputs['history_source']}")
    for p in summary["paired"].values():
        print(f"  {p['pair']:<16} A only {p['only_a']:>3}  B only {p['only_b']:>3}  exact p {p['p_exact']:.3g}")


if __name__ == "__main__":
    main()
