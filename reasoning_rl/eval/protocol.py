"""One model's evaluation under the pre-registered protocol (docs/evaluation.md): greedy for every model, and for
an adapter DeepSeek-R1's sampled pass@1 (k seeded samples per question). The evaluate stage and the second-seed
benchmark both call `evaluate_model`, so they measure the same way."""

from __future__ import annotations

from pathlib import Path

from reasoning_rl.config import EvaluateConfig
from reasoning_rl.eval.generation import ModelGenerator
from reasoning_rl.eval.metrics import summarize_sampled, trace_diagnostics
from reasoning_rl.eval.paired import sampled_shares
from reasoning_rl.eval.scoring import score, summarize


def evaluate_model(generator: ModelGenerator, adapter: Path | None, rows: list[dict], cfg: EvaluateConfig,
                   desc: str) -> tuple[dict[str, float], list[dict]]:
    """Metrics and per-question records (greedy completion and verdicts; the k samples and their right shares)
    of the base weights plus `adapter` (None = the base model alone, greedy only) on `rows`."""
    golds = [r["answer"] for r in rows]
    generator.load(adapter)

    ####  greedy, scored with the reward's parser
    gens, seconds = generator.greedy(cfg.batch_size, desc)
    verdicts = score(gens, golds)
    metrics = summarize(verdicts, seconds) | trace_diagnostics([g.text for g in gens])

    ####  adapters: k samples per question, R1's pass@1 (each question's share of right samples)
    samples: list[list[str]] = [[] for _ in rows]
    shares: dict[str, list[float]] = {}
    if adapter is not None and cfg.samples_k:
        per_question, seconds = generator.sampled(cfg.samples_k, cfg.temperature, cfg.batch_size,
                                                  f"{desc} x{cfg.samples_k}", top_p=cfg.top_p)
        samples = [[g.text for g in q] for q in per_question]
        shares = sampled_shares(samples, golds)
        tokens = sum(g.num_tokens for q in per_question for g in q)
        metrics |= summarize_sampled(samples, golds) | {
            "pass1_strict": sum(shares["strict"]) / len(rows),
            "pass1_flexible": sum(shares["flexible"]) / len(rows),
            "sampled_mean_tokens": tokens / (len(rows) * cfg.samples_k),
            "sampled_tokens_per_second": tokens / seconds if seconds > 0 else 0.0,
            "sampled_decode_seconds": seconds,
        }

    records = []
    for i, (row, gen, verdict) in enumerate(zip(rows, gens, verdicts, strict=True)):
        record = {"id": row["id"], "question": row["question"], "gold": row["answer"],
                  "completion": gen.text, **verdict}
        if shares:
            record |= {"samples": samples[i], "sampled_strict": shares["strict"][i],
                       "sampled_flexible": shares["flexible"][i]}
        records.append(record)
    return metrics, records
