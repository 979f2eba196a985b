"""Evaluate one model on the GSM8K test questions: greedy for every model, R1's sampled pass@1 for adapters.

Run: python -m stages.evaluate <base|sft|grpo|champion>   (reads params.yaml: base, evaluate)
Under DVC each model is its own stage (evaluate@base, evaluate@sft, evaluate@grpo), so the base model's decode
does not re-run when an adapter changes. Writes metrics/eval_<model>.json (dvc metrics) and the per-question
results reports/eval_<model>.jsonl (greedy completion and verdicts; the k samples and their right shares).
The report stage compares the models (stages/report.py). The protocol is pre-registered in docs/evaluation.md.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
from pathlib import Path

from reasoning_rl import paths
from reasoning_rl.config import EVAL_MODELS, load_params
from reasoning_rl.eval.generation import ModelGenerator
from reasoning_rl.eval.protocol import evaluate_model
from reasoning_rl.files import write_json
from reasoning_rl.model.engine import resolve_engine
from reasoning_rl.ops.registry import DEFAULT_ALIAS, download_adapter
from reasoning_rl.ops.tracking import file_sha256, log_artifacts, log_metrics, set_tags, stage_run
from reasoning_rl.task.gsm8k import question_set, read_records, write_jsonl
from stages.common import run, setup_logging

log = logging.getLogger("stages.evaluate")


def adapter_for(name: str, scratch: Path) -> Path | None:
    """Where model `name`'s adapter lives: none for base, the stage's folder, or the registry's champion."""
    if name == "base":
        return None
    if name == "champion":
        return download_adapter(scratch / name, alias=DEFAULT_ALIAS)
    return paths.adapter_dir(name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=EVAL_MODELS)
    name = parser.parse_args(argv).model
    start = time.perf_counter()
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.evaluate
    rows = read_records(paths.TEST)[: cfg.num_questions]
    inputs = [paths.TEST] + ([paths.adapter_dir(name)] if name in ("sft", "grpo") else [])
    with stage_run(f"evaluate@{name}", {"base": base, "evaluate": cfg}, paths.params_file(), inputs=inputs), \
            tempfile.TemporaryDirectory() as scratch:
        ####  the model: base weights, plus its adapter (a missing champion fails here, before the model loads)
        adapter = adapter_for(name, Path(scratch))
        sha = file_sha256(adapter / "adapter_model.safetensors") if adapter is not None else None
        generator = ModelGenerator(base.model, base.dtype, base.seed, resolve_engine(base.engine),
                                   [r["prompt"] for r in rows], cfg.max_new_tokens)
        # which weights, on which questions: accuracies compare only on the same question set
        tags = {"model": name, "engine": generator.engine, "base_model": base.model,
                "eval_question_set": question_set(rows), **({"adapter_sha256": sha} if sha else {})}
        log.info("evaluating %s (base model %s) on %d questions, engine %s", name, base.model, len(rows),
                 generator.engine)
        metrics, records = evaluate_model(generator, adapter, rows, cfg, name)
        generator.close()

        ####  write the metrics and the per-question results
        metrics["wall_seconds"] = round(time.perf_counter() - start, 1)  # engine start and scoring included
        write_json(paths.eval_metrics(name), metrics)
        write_jsonl(paths.eval_samples(name), records)
        set_tags(tags)
        log_metrics({f"{name}/{k}": v for k, v in metrics.items()})
        log_artifacts(paths.eval_samples(name), "samples")
        log.info("%s: %s", name, {k: round(v, 4) for k, v in metrics.items()})


if __name__ == "__main__":
    run(main)
