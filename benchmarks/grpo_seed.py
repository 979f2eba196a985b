"""Another GRPO seed from the pipeline's own SFT adapter, scored on the test set by the pipeline's protocol.

A benchmark, not a stage: the verdict comes from the default run, and this run says whether its SFT -> GRPO
delta repeats with another seed, so that nobody mistakes one lucky seed for the method.

    python -m benchmarks.grpo_seed --seed 7 --out benchmarks/results/grpo_second_seed.json

Needs a finished `dvc repro` (models/sft/adapter, data/select/prompts.jsonl, reports/eval_sft.jsonl,
metrics/paired.json). GRPO trains as the grpo stage does with base.seed replaced by --seed (the seed drives the
sampling and TRL's data order; the LoRA weights start from the SFT adapter either way). Evaluation keeps
base.seed, so its sampled draws are the protocol's (reasoning_rl/eval/protocol.py). The adapter, its checkpoints
and its per-question results go under runs/grpo_seed<seed>/; a rerun resumes the training or reuses them.
Keep the CPU otherwise idle.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks import RESULTS
from benchmarks.ablate_recipe import in_child
from reasoning_rl import paths
from reasoning_rl.config import Params, load_params
from reasoning_rl.files import write_json
from reasoning_rl.task.gsm8k import read_records, write_jsonl


def train(params: Params, seed: int, out: Path) -> None:
    from reasoning_rl.train.callbacks import seconds_per_step
    from reasoning_rl.train.grpo import train_grpo
    from reasoning_rl.train.lora import save_adapter

    b = params.base
    trainer, history = train_grpo(params.grpo, b.model, b.dtype, seed, read_records(paths.GRPO_PROMPTS),
                                  paths.adapter_dir("sft"), out / "checkpoints", backend=b.backend,
                                  generation_engine=b.engine)
    save_adapter(trainer.model, out / "adapter", b.model)
    write_json(out / "train.json", {"seed": seed, "steps": trainer.state.global_step,
                                    "seconds_per_step": seconds_per_step(history.history),
                                    "history": history.history})


def evaluate(params: Params, adapter: Path, out: Path) -> None:
    from reasoning_rl.eval.generation import ModelGenerator
    from reasoning_rl.eval.protocol import evaluate_model
    from reasoning_rl.model.engine import resolve_engine

    b, cfg = params.base, params.evaluate
    rows = read_records(paths.TEST)[: cfg.num_questions]
    gen = ModelGenerator(b.model, b.dtype, b.seed, resolve_engine(b.engine), [r["prompt"] for r in rows],
                         cfg.max_new_tokens)
    metrics, records = evaluate_model(gen, adapter, rows, cfg, adapter.parent.name)
    gen.close()
    write_jsonl(out / "eval.jsonl", records)
    write_json(out / "eval.json", metrics)


def compare(sft: list[dict], other: list[dict]) -> dict:
    """SFT -> this seed's GRPO on the same questions: greedy McNemar and the sampled sign-flip test, as the report
    stage computes them for the pipeline's own pair."""
    from reasoning_rl.eval.report import aligned_verdicts, paired_tests, sampled_pairs

    samples = {"sft": sft, "grpo": other}
    out = {"sampled": {}}
    for kind, key in (("strict", "correct"), ("flexible", "correct_flexible")):
        (test,) = paired_tests(aligned_verdicts(samples, key)[1])
        out[kind] = {"p": test["p_exact"], "delta": test["delta"], "only_a": test["only_a"], "only_b": test["only_b"]}
    (pair,) = sampled_pairs(samples)
    out["sampled"] = {kind: pair[kind] for kind in ("strict", "flexible")}
    return out


def training_windows(history: list[dict], size: int = 20) -> list[dict]:
    """Means over each `size` steps of GRPO's log: correctness reward, tied groups, completion tokens (the table
    docs/results.md shows for the pipeline's own GRPO)."""
    keys = {"correctness": "rewards/correctness/mean", "tied": "frac_reward_zero_std",
            "tokens": "completions/mean_length"}
    rows = [h for h in history if "frac_reward_zero_std" in h]
    out = []
    for start in range(0, len(rows), size):
        window = rows[start:start + size]
        out.append({"steps": f"{window[0]['step']}-{window[-1]['step']}"}
                   | {name: round(sum(h[key] for h in window) / len(window), 3) for name, key in keys.items()})
    return out


def require(*needed: Path) -> None:
    for path in needed:
        if not path.exists():
            raise SystemExit(f"{path} is missing: run `dvc repro` first")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, required=True, help="GRPO's seed (the pipeline's is base.seed)")
    ap.add_argument("--out", default=str(RESULTS / "grpo_second_seed.json"))
    args = ap.parse_args()
    params = load_params(paths.params_file())
    if args.seed == params.base.seed:
        raise SystemExit(f"--seed {args.seed} is the pipeline's own base.seed: pick another")
    out = Path(f"runs/grpo_seed{args.seed}")
    if not (out / "adapter" / "adapter_config.json").exists():
        require(paths.adapter_dir("sft"), paths.GRPO_PROMPTS)  # the pipeline's SFT adapter and GRPO prompts
        in_child(train, params, args.seed, out)
    if not (out / "eval.json").exists():
        in_child(evaluate, params, out / "adapter", out)
    require(paths.eval_samples("sft"), paths.PAIRED_METRICS)  # the pipeline's own SFT -> GRPO comparison
    pipeline = json.loads(paths.PAIRED_METRICS.read_text())["sft_vs_grpo"]
    trained = json.loads((out / "train.json").read_text())
    result = {
        "command": f"python -m benchmarks.grpo_seed --seed {args.seed}",
        "seeds": {str(params.base.seed): pipeline,
                  str(args.seed): compare(read_records(paths.eval_samples("sft")), read_records(out / "eval.jsonl"))},
        "grpo_seconds_per_step": trained["seconds_per_step"],
        "grpo_training": training_windows(trained["history"]),
        "metrics": json.loads((out / "eval.json").read_text()),
    }
    write_json(Path(args.out), result)
    for seed, r in result["seeds"].items():
        s = r["sampled"]["strict"]
        print(f"seed {seed}: SFT -> GRPO sampled pass@1 strict {s['delta']:+.1%} [{s['ci_low']:+.1%}, "
              f"{s['ci_high']:+.1%}], p = {s['p']:.2g}; greedy strict {r['strict']['delta']:+.1%}, "
              f"p = {r['strict']['p']:.2g}")


if __name__ == "__main__":
    main()
