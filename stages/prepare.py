"""Prepare GSM8K: prompts with the format-stating system prompt, SFT targets, a seeded train/val split.

Run: python -m stages.prepare   (reads params.yaml: base, prepare)
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import numpy as np

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json
from reasoning_rl.model.loading import load_tokenizer
from reasoning_rl.ops.tracking import flatten, log_artifacts, log_metrics, stage_run
from reasoning_rl.task.gsm8k import load_gsm8k, split_train_val, to_record, write_jsonl
from stages.common import run, setup_logging, timed

log = logging.getLogger("stages.prepare")


def token_percentiles(tokenizer, texts: list[str]) -> dict[str, float]:
    lengths = np.array([len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]])
    return {f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 99)} | {"max": float(lengths.max())}


def main() -> None:
    setup_logging()
    params = load_params(paths.params_file())
    base, cfg = params.base, params.prepare
    stats: dict = {}
    inputs = [Path(cfg.data_dir)] if cfg.data_dir else []
    with stage_run("prepare", {"base": base, "prepare": cfg}, paths.params_file(), inputs=inputs):
        with timed(stats):
            ####  load and parse (the first malformed row stops the stage naming file:line, unless skip_bad_rows)
            skipped: Counter[str] = Counter()
            train_all = load_gsm8k(cfg.data_dir, "train", cfg.skip_bad_rows, skipped)
            test = load_gsm8k(cfg.data_dir, "test", cfg.skip_bad_rows, skipped)
            train, val = split_train_val(train_all, cfg.val_size, base.seed)

            ####  write prompt-completion records
            for path, rows in ((paths.TRAIN, train), (paths.VAL, val), (paths.TEST, test)):
                write_jsonl(path, [to_record(e) for e in rows])

            ####  stats: rows and token lengths (they size max_length / max_completion_length)
            tokenizer = load_tokenizer(base.model)
            prompts = [
                tokenizer.apply_chat_template(e.prompt(), tokenize=False, add_generation_prompt=True) for e in train
            ]
            stats |= {
                "rows": {"train": len(train), "val": len(val), "test": len(test)},
                "skipped": {"total": sum(skipped.values()), **dict(sorted(skipped.items()))},
                "prompt_tokens": token_percentiles(tokenizer, prompts),
                "target_tokens": token_percentiles(tokenizer, [e.target() for e in train]),
            }
        write_json(paths.DATA_STATS, stats)
        log_metrics(flatten("", stats))
        log_artifacts(paths.DATA_STATS)
    log.info("prepared %s, skipped %s", stats["rows"], stats["skipped"])


if __name__ == "__main__":
    run(main)
