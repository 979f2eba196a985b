"""GRPO's learning curve on the validation split (never the test split): greedy accuracy of each checkpoint.

The grpo stage keeps only its two newest checkpoints and deletes them when it finishes, so the curve is made in
two steps. While `dvc repro grpo` runs, `watch` copies each checkpoint's adapter out as soon as it is complete:

    python -m benchmarks.grpo_curve watch &            # copies models/grpo/checkpoints/checkpoint-N to runs/curve/
    dvc repro grpo

(`watch` refuses a --dest that already holds checkpoints: they would be another run's.)

Then `evaluate` scores the SFT adapter, every copied checkpoint and the stage's final adapter (its last step,
which the stage deletes as it ends) on the first 200 validation questions with the evaluate stage's generation
settings, and writes per step strict and flexible accuracy (Wilson 95 %), format rate, mean tokens and McNemar
exact p against SFT (and against `--compare-step`), plus a plot:

    python -m benchmarks.grpo_curve evaluate --out benchmarks/results/grpo_curve_val.json --plot docs/img/grpo_curve.png

Scores are cached beside each adapter (as benchmarks/ablate_recipe.py does). Keep the CPU otherwise idle.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import time
from pathlib import Path

from benchmarks import RESULTS
from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json

CURVE = Path("runs/curve")
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "trainer_state.json")


def step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


def copy_complete(source: Path, dest: Path) -> list[Path]:
    """Copy each complete `checkpoint-N` in `source` (trainer_state.json, written last, present) not yet in `dest`."""
    copied = []
    for ckpt in sorted(source.glob("checkpoint-*"), key=step_of):
        target = dest / ckpt.name
        if target.exists() or not (ckpt / "trainer_state.json").exists():
            continue
        tmp = dest / f".{ckpt.name}.partial"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        for name in ADAPTER_FILES:
            shutil.copy2(ckpt / name, tmp / name)
        tmp.rename(target)
        copied.append(target)
    return copied


def add_final(adapter: Path, stats: Path, dest: Path) -> None:
    """The stage's own adapter as `checkpoint-<last step>` (`stats`: its metrics/grpo.json): the stage deletes
    its last checkpoint as it ends, usually before `watch` looks again."""
    if not (adapter / "adapter_model.safetensors").exists() or not stats.exists():
        return
    target = dest / f"checkpoint-{json.loads(stats.read_text())['steps']}"
    if not target.exists():
        target.mkdir(parents=True)
        for name in ADAPTER_FILES[:2]:
            shutil.copy2(adapter / name, target / name)
        print(f"added the stage's adapter {adapter} as {target}")


def watch(source: Path, dest: Path, interval: float) -> None:
    if any(dest.glob("checkpoint-*")):  # a second run's checkpoint-N would be skipped as copied: runs mixed
        raise SystemExit(f"{dest} already holds checkpoints, from an earlier run; move or delete it, or give --dest")
    print(f"copying complete checkpoints from {source} to {dest} every {interval:g} s (Ctrl-C to stop)", flush=True)
    while True:
        try:
            for target in copy_complete(source, dest):
                print(f"{time.strftime('%H:%M:%S')} copied {target}", flush=True)
        except FileNotFoundError:  # rotation removed a checkpoint while it was copied: the next pass retries
            pass
        time.sleep(interval)


def evaluate_curve(args: argparse.Namespace) -> None:
    from benchmarks.ablate_recipe import evaluate, paired, val_generator
    from reasoning_rl.task.gsm8k import read_records

    params = load_params(Path(args.params))
    add_final(Path(args.final), paths.train_metrics("grpo"), Path(args.checkpoints))
    checkpoints = sorted(Path(args.checkpoints).glob("checkpoint-*"), key=step_of)
    if not checkpoints:
        raise SystemExit(f"no checkpoint-N folders in {args.checkpoints}; run `python -m benchmarks.grpo_curve watch` "
                         "beside `dvc repro grpo` first")
    val = read_records(paths.VAL)[: args.val_questions]
    golds = [r["answer"] for r in val]
    gen, tag, base_cache = val_generator(params, val)
    base = evaluate(gen, None, golds, "base", base_cache)
    sft_path = Path(args.sft)
    weights = hashlib.sha256((sft_path / "adapter_model.safetensors").read_bytes()).hexdigest()[:10]
    sft = evaluate(gen, sft_path, golds, "sft", CURVE / f"sft-{weights}" / tag)
    scores = {step_of(c): evaluate(gen, c, golds, c.name, c / tag) for c in checkpoints}
    gen.close()

    def row(step: int, s: dict) -> dict:
        keep = ("accuracy", "accuracy_ci_low", "accuracy_ci_high", "flexible_accuracy", "flexible_accuracy_ci_low",
                "flexible_accuracy_ci_high", "format_rate", "truncated_rate", "mean_completion_tokens")
        out = {"step": step} | {k: s[k] for k in keep}
        if step:
            out["vs_sft"] = paired(sft, s)
            if args.compare_step in scores and step != args.compare_step:
                out[f"vs_step_{args.compare_step}"] = paired(scores[args.compare_step], s)
        return out

    result = {
        "command": f"python -m benchmarks.grpo_curve evaluate --checkpoints {args.checkpoints} --sft {args.sft} "
                   f"--val-questions {args.val_questions} --compare-step {args.compare_step}",
        "split": f"validation (first {len(val)} of data/prepared/val.jsonl)",
        "model": params.base.model,
        "base": row(0, base) | {"step": None},
        "curve": [row(0, sft)] + [row(step, s) for step, s in scores.items()],
    }
    write_json(Path(args.out), result)
    print(table(result))
    if args.plot:
        plot(result, Path(args.plot))


def table(result: dict) -> str:
    lines = ["| GRPO step | strict | 95 % CI | flexible | format | tokens | vs SFT strict p |",
             "|---|---|---|---|---|---|---|"]
    for r in result["curve"]:
        p = f"{r['vs_sft']['strict']['p']:.2g}" if "vs_sft" in r else ""
        lines.append(f"| {r['step'] or '0 (SFT)'} | {r['accuracy']:.1%} | [{r['accuracy_ci_low']:.1%}, "
                     f"{r['accuracy_ci_high']:.1%}] | {r['flexible_accuracy']:.1%} | {r['format_rate']:.1%} "
                     f"| {r['mean_completion_tokens']:.0f} | {p} |")
    return "\n".join(lines)


def plot(result: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = result["curve"]
    steps = [r["step"] for r in curve]
    fig, ax = plt.subplots(figsize=(7, 4))
    for key, label in (("accuracy", "strict"), ("flexible_accuracy", "flexible")):
        ax.plot(steps, [r[key] for r in curve], marker="o", label=label)
        ax.fill_between(steps, [r[f"{key}_ci_low"] for r in curve], [r[f"{key}_ci_high"] for r in curve], alpha=0.15)
    ax.axhline(result["base"]["flexible_accuracy"], color="grey", ls="--", lw=1, label="base model, flexible")
    ax.set_xlabel("GRPO step (0 = the SFT adapter)")
    ax.set_ylabel("greedy accuracy")
    ax.set_title(f"GRPO learning curve, {result['split']}")
    ax.legend()
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", required=True)
    w = sub.add_parser("watch", help="copy each complete GRPO checkpoint out before the stage removes it")
    w.add_argument("--source", default=str(paths.checkpoints_dir("grpo")))
    w.add_argument("--dest", default=str(CURVE))
    w.add_argument("--interval", type=float, default=15.0, help="seconds between looks")
    e = sub.add_parser("evaluate", help="score the SFT adapter and every copied checkpoint on validation")
    e.add_argument("--params", default=str(paths.params_file()))
    e.add_argument("--checkpoints", default=str(CURVE))
    e.add_argument("--sft", default=str(paths.adapter_dir("sft")))
    e.add_argument("--final", default=str(paths.adapter_dir("grpo")),
                   help="the grpo stage's adapter, scored as its last step (metrics/grpo.json's steps)")
    e.add_argument("--val-questions", type=int, default=200, help="first N validation questions")
    e.add_argument("--compare-step", type=int, default=40, help="also McNemar each checkpoint against this one")
    e.add_argument("--out", default=str(RESULTS / "grpo_curve_val.json"))
    e.add_argument("--plot", help="write the curve as a PNG here")
    args = ap.parse_args()
    if args.command == "watch":
        watch(Path(args.source), Path(args.dest), args.interval)
    else:
        evaluate_curve(args)


if __name__ == "__main__":
    main()
