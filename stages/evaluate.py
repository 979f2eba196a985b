"""Evaluate base, SFT and GRPO on the same GSM8K test questions with the same prompt and answer parser.

Run: python -m stages.evaluate   (reads params.yaml: base, evaluate)
Writes metrics/eval_<model>.json (dvc metrics), reports/eval_samples_<model>.jsonl and reports/eval_table.md.
"""

from __future__ import annotations

import json
import logging

from reasoning_rl import paths
from reasoning_rl.data import read_records
from reasoning_rl.evaluation import generate_greedy, score, summarize
from reasoning_rl.modeling import load_model
from reasoning_rl.tracking import log_artifacts, log_metrics, stage_run
from reasoning_rl.training import write_json
from stages.common import load_params, params_path, run, setup_logging

log = logging.getLogger("stages.evaluate")


def markdown_table(results: dict[str, dict]) -> str:
    lines = [
        "| model | accuracy | 95 % Wilson CI | format rate | mean tokens | questions | tokens/s |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['accuracy']:.1%} | [{m['accuracy_ci_low']:.1%}, {m['accuracy_ci_high']:.1%}] "
            f"| {m['format_rate']:.1%} | {m['mean_completion_tokens']:.0f} | {m['questions']} "
            f"| {m['tokens_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    params = load_params()
    base, cfg = params.base, params.evaluate
    rows = read_records(paths.TEST)[: cfg.num_questions]
    prompts = [r["prompt"] for r in rows]
    golds = [r["answer"] for r in rows]
    results: dict[str, dict] = {}
    inputs = [paths.TEST] + [paths.adapter_dir(m) for m in cfg.models if m != "base"]
    with stage_run("evaluate", {"base": base, "evaluate": cfg}, params_path(), inputs=inputs):
        for name in cfg.models:
            ####  load: the base weights, plus the stage's adapter for sft/grpo
            adapter = None if name == "base" else paths.adapter_dir(name)
            lm = load_model(base.model, base.dtype, adapter=adapter, attn_implementation="eager")
            model = lm.model.merge_and_unload() if adapter is not None else lm.model  # unmerged LoRA decodes ~2x slower

            ####  generate greedily and score with the reward parser
            gens, seconds = generate_greedy(model, lm.tokenizer, prompts, cfg.batch_size, cfg.max_new_tokens, name)
            verdicts = score(gens, golds)
            metrics = summarize(verdicts, seconds)
            results[name] = metrics

            ####  write metrics and per-question samples
            write_json(paths.eval_metrics(name), metrics)
            samples = paths.eval_samples(name)
            samples.parent.mkdir(parents=True, exist_ok=True)
            with open(samples, "w", encoding="utf-8") as fh:
                for row, gen, verdict in zip(rows, gens, verdicts, strict=True):
                    record = {"id": row["id"], "question": row["question"], "gold": row["answer"],
                              "completion": gen.text, **verdict}
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
            log_artifacts(samples, "samples")
            log.info("%s: %s", name, metrics)
            del lm, model
        paths.EVAL_TABLE.write_text(markdown_table(results))
        log_artifacts(paths.EVAL_TABLE)
    print(paths.EVAL_TABLE.read_text())


if __name__ == "__main__":
    run(main)
