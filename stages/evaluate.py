"""Evaluate base, SFT and GRPO on the same GSM8K test questions with the same prompt and answer parser.

Run: python -m stages.evaluate   (reads params.yaml: base, evaluate)
Writes metrics/eval_<model>.json (dvc metrics), reports/eval_samples_<model>.jsonl, reports/eval_table.md, and
the HTML report (reports/report.html, with its numbers in metrics/eval_report.json; see reasoning_rl/eval/report.py).
With evaluate.samples_k > 0 each model also samples k completions per question for pass@k and maj@k.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.eval.generation import ModelGenerator
from reasoning_rl.eval.metrics import summarize_sampled, trace_diagnostics
from reasoning_rl.eval.report import load_inputs, paired_summary, render_html
from reasoning_rl.eval.scoring import score, summarize
from reasoning_rl.files import write_json
from reasoning_rl.model.engine import resolve_engine
from reasoning_rl.ops.registry import DEFAULT_ALIAS, download_adapter
from reasoning_rl.ops.tracking import file_sha256, git_state, log_artifacts, log_metrics, set_tags, stage_run
from reasoning_rl.task.gsm8k import read_records
from stages.common import run, setup_logging

log = logging.getLogger("stages.evaluate")


def markdown_table(results: dict[str, dict], caption: str) -> str:
    lines = [
        caption,
        "",
        "| model | strict accuracy | 95 % Wilson CI | flexible accuracy | 95 % Wilson CI | format rate | mean tokens "
        "| questions | tokens/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, m in results.items():
        lines.append(
            f"| {name} | {m['accuracy']:.1%} | [{m['accuracy_ci_low']:.1%}, {m['accuracy_ci_high']:.1%}] "
            f"| {m['flexible_accuracy']:.1%} "
            f"| [{m['flexible_accuracy_ci_low']:.1%}, {m['flexible_accuracy_ci_high']:.1%}] "
            f"| {m['format_rate']:.1%} | {m['mean_completion_tokens']:.0f} | {m['questions']} "
            f"| {m['tokens_per_second']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def adapter_for(name: str, scratch: Path) -> Path | None:
    """Where model `name`'s adapter lives: none for base, the stage's folder, or the registry's champion."""
    if name == "base":
        return None
    if name == "champion":
        return download_adapter(scratch / name, alias=DEFAULT_ALIAS)
    return paths.adapter_dir(name)


DVC_OUTPUT_MODELS = ("base", "sft", "grpo")  # dvc.yaml declares metrics and samples for these three


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.evaluate
    if os.environ.get("DVC_STAGE") and (missing := [m for m in DVC_OUTPUT_MODELS if m not in cfg.models]):
        raise SystemExit(  # else DVC fails after the whole evaluation, on the outputs it expected
            f"evaluate.models ({list(cfg.models)}) leaves out {missing}: under dvc repro the stage must write the "
            "outputs dvc.yaml declares for base, sft and grpo (add champion on top, or run the stage outside DVC)"
        )
    rows = read_records(paths.TEST)[: cfg.num_questions]
    prompts = [r["prompt"] for r in rows]
    golds = [r["answer"] for r in rows]
    results: dict[str, dict] = {}
    question_set = hashlib.sha256(json.dumps([r["id"] for r in rows]).encode()).hexdigest()[:16]
    scratch = tempfile.TemporaryDirectory()
    inputs = [paths.TEST] + [paths.adapter_dir(m) for m in cfg.models if m in ("sft", "grpo")]
    with stage_run("evaluate", {"base": base, "evaluate": cfg}, paths.params_file(), inputs=inputs), scratch:
        ####  find every adapter first (a missing champion fails here, before any model loads)
        adapters = {name: adapter_for(name, Path(scratch.name)) for name in cfg.models}
        # Which weights were evaluated, traceable to the run that trained them; accuracies are comparable
        # only on the same questions, so the registry ranks runs within one question set.
        run_tags = {"eval_question_set": question_set}
        for name, adapter in adapters.items():
            if adapter is not None:
                run_tags[f"adapter_sha256.{name}"] = file_sha256(adapter / "adapter_model.safetensors")
        log_metrics({"questions": len(rows)})
        ####  one engine for every model: vLLM serves each adapter as a LoRA, transformers loads each model merged
        generator = ModelGenerator(base.model, base.dtype, base.seed, resolve_engine(base.engine), prompts,
                                   cfg.max_new_tokens)
        run_tags |= {"engine": generator.engine, "base_model": base.model}
        log.info("evaluating %s with base model %s on %d questions, engine %s", list(cfg.models), base.model,
                 len(rows), generator.engine)
        for name, adapter in adapters.items():
            generator.load(adapter)

            ####  generate greedily and score with the reward parser
            gens, seconds = generator.greedy(cfg.batch_size, name)
            verdicts = score(gens, golds)
            metrics = summarize(verdicts, seconds) | trace_diagnostics([g.text for g in gens])

            ####  sample k completions per question for pass@k and maj@k (off when samples_k is 0)
            sampled: list[list[str]] = [[] for _ in rows]
            if cfg.samples_k:
                per_question, _ = generator.sampled(cfg.samples_k, cfg.temperature, cfg.batch_size,
                                                    f"{name} x{cfg.samples_k}")
                sampled = [[g.text for g in gens_q] for gens_q in per_question]
                metrics |= summarize_sampled(sampled, golds)
            results[name] = metrics

            ####  write metrics and per-question samples
            write_json(paths.eval_metrics(name), metrics)
            samples = paths.eval_samples(name)
            samples.parent.mkdir(parents=True, exist_ok=True)
            with open(samples, "w", encoding="utf-8") as fh:
                for row, gen, verdict, extra in zip(rows, gens, verdicts, sampled, strict=True):
                    record = {"id": row["id"], "question": row["question"], "gold": row["answer"],
                              "completion": gen.text, **verdict, **({"samples": extra} if extra else {})}
                    fh.write(json.dumps(record, ensure_ascii=False) + "\n")
            log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
            log_artifacts(samples, "samples")
            log.info("%s: %s", name, metrics)
        generator.close()
        set_tags(run_tags)
        caption = (f"Base model `{base.model}`, engine {generator.engine}, {len(rows)} GSM8K test questions "
                   f"(set {question_set}), greedy, at most {cfg.max_new_tokens} new tokens.")
        paths.EVAL_TABLE.write_text(markdown_table(results, caption))
        log_artifacts(paths.EVAL_TABLE)

        ####  the HTML report (GRPO curves from the GRPO stage's history file, a DVC dependency of this stage)
        report_inputs = load_inputs(list(cfg.models), paths.eval_samples, paths.eval_metrics, paths.TEST,
                                    paths.train_history("grpo"))
        meta = {"base model": base.model, "engine": generator.engine, "question set": question_set,
                "git": git_state()["git_commit"][:10]}
        page, summary = render_html(**report_inputs, meta=meta)
        paths.REPORT.write_text(page, encoding="utf-8")
        write_json(paths.EVAL_REPORT_METRICS, summary)
        write_json(paths.PAIRED_METRICS, paired_summary(summary))
        log_metrics({f"p_exact/{p['a']}_vs_{p['b']}": p["p_exact"] for p in summary["paired"].values()})
        log_artifacts(paths.REPORT)
        log.info("report: %s (GRPO curves from %s)", paths.REPORT, report_inputs["history_source"])
    print(paths.EVAL_TABLE.read_text())


if __name__ == "__main__":
    run(main)
