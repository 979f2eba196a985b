"""Compare the evaluated models: the paired tests, the evaluation table and the self-contained HTML report.

Run: python -m stages.report   (reads params.yaml: base, evaluate; the evaluate stages' outputs)
Reads metrics/eval_<model>.json and reports/eval_<model>.jsonl for each model in evaluate.models, and writes
metrics/paired.json (per pair: greedy McNemar; sampled pass@1 sign-flip test and bootstrap interval),
metrics/eval_report.json (the report's numbers), reports/eval_table.md and reports/report.html. Seconds of work:
a crash here never costs a decode.
"""

from __future__ import annotations

import logging

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.eval.report import load_inputs, paired_summary, render_html
from reasoning_rl.files import write_json
from reasoning_rl.ops.tracking import file_sha256, git_state, log_artifacts, log_metrics, set_tags, stage_run
from reasoning_rl.task.gsm8k import question_set
from stages.common import run, setup_logging

log = logging.getLogger("stages.report")

TABLE_KEYS = ("accuracy", "flexible_accuracy", "format_rate", "pass1_strict", "pass1_flexible")


def markdown_table(metrics: dict[str, dict], caption: str) -> str:
    """One row per model: greedy strict and flexible accuracy with Wilson intervals, sampled pass@1 beside."""
    def pct(m: dict, key: str) -> str:
        return f"{m[key]:.1%}" if key in m else "—"

    lines = [caption, "",
             "| model | greedy strict | 95 % Wilson CI | greedy flexible | format rate | sampled pass@1 strict "
             "| sampled pass@1 flexible | mean tokens | questions |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, m in metrics.items():
        lines.append(f"| {name} | {pct(m, 'accuracy')} | [{m['accuracy_ci_low']:.1%}, {m['accuracy_ci_high']:.1%}] "
                     f"| {pct(m, 'flexible_accuracy')} | {pct(m, 'format_rate')} | {pct(m, 'pass1_strict')} "
                     f"| {pct(m, 'pass1_flexible')} | {m['mean_completion_tokens']:.0f} | {m['questions']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.evaluate
    adapters = {m: paths.adapter_dir(m) / "adapter_model.safetensors" for m in ("sft", "grpo")}
    shas = {m: file_sha256(f) for m, f in adapters.items() if m in cfg.models and f.is_file()}
    inputs = [paths.eval_samples(m) for m in cfg.models if paths.eval_samples(m).is_file()]
    with stage_run("report", {"base": base, "evaluate": cfg}, paths.params_file(), inputs=inputs):
        ####  the evaluate stages' outputs; GRPO curves from the GRPO stage's history (MLflow when it is missing)
        report_inputs = load_inputs(list(cfg.models), paths.eval_samples, paths.eval_metrics, paths.TEST,
                                    paths.train_history("grpo"), shas.get("grpo"))
        metrics, samples = report_inputs["metrics"], report_inputs["samples"]
        questions = question_set(next(iter(samples.values())))

        ####  paired tests and the report
        meta = {"base model": base.model, "question set": questions, "git": git_state()["git_commit"][:10]}
        page, summary = render_html(**report_inputs, meta=meta)
        paired = paired_summary(summary)
        caption = (f"Base model `{base.model}`, {summary['questions']} GSM8K test questions (set {questions}); "
                   f"greedy, and {cfg.samples_k} samples per question at T {cfg.temperature}, top-p {cfg.top_p} "
                   f"for the adapters; at most {cfg.max_new_tokens} new tokens.")

        ####  write and log: one row per model for the registry (scripts/compare_runs.py), the pairs' p-values
        paths.REPORT.parent.mkdir(parents=True, exist_ok=True)
        paths.REPORT.write_text(page, encoding="utf-8")
        paths.EVAL_TABLE.write_text(markdown_table(metrics, caption))
        write_json(paths.EVAL_REPORT_METRICS, summary)
        write_json(paths.PAIRED_METRICS, paired)
        set_tags({"eval_question_set": questions, **{f"adapter_sha256.{m}": s for m, s in shas.items()}})
        log_metrics({"questions": summary["questions"]}
                    | {f"{m}/{k}": v[k] for m, v in metrics.items() for k in TABLE_KEYS if k in v}
                    | {f"p_exact/{p['a']}_vs_{p['b']}": p["p_exact"] for p in summary["paired"].values()}
                    | {f"p_sampled/{p['a']}_vs_{p['b']}": p["strict"]["p"]
                       for p in summary["paired_sampled"].values()})
        log_artifacts(paths.REPORT)
        log_artifacts(paths.EVAL_TABLE)
        log.info("report: %s (GRPO curves from %s)", paths.REPORT, report_inputs["history_source"])
    print(paths.EVAL_TABLE.read_text())
    if "sft_vs_grpo" in paired:
        print("sft_vs_grpo:", paired["sft_vs_grpo"])


if __name__ == "__main__":
    run(main)
