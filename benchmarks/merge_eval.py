"""Does merging the LoRA into bf16 weights change validation accuracy? Merged (the engine's way) vs unmerged PEFT.

The evaluate stage and `grpo_curve`/`ablate_recipe` merge each adapter into the bf16 base weights before
generating (either engine). Deltas smaller than half a bf16 step round away (benchmarks/merge_rounding.py), so
the merged model can differ from the adapter as trained. This scores the unmerged PEFT model (bf16 base, fp32
LoRA, transformers' greedy generate) on the same validation questions and compares it, question by question
(McNemar), with the merged score already cached beside the adapter.

Run: python -m benchmarks.merge_eval models/sft/adapter=runs/curve/sft-48f9a58b8a/val200-224tok.json \
         runs/curve/checkpoint-100=runs/curve/checkpoint-100/val200-224tok.json --out reports/merge_eval_val.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from benchmarks.ablate_recipe import evaluate, paired
from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.files import write_json

CACHE = Path("runs/merge_eval")  # git-ignored, like runs/ablation


class UnmergedGenerator:
    """`ModelGenerator`'s load/greedy interface on the unmerged PEFT model (transformers' generate)."""

    def __init__(self, model: str, dtype: str, prompts: list, max_new_tokens: int) -> None:
        self.model, self.dtype, self.prompts, self.max_new_tokens = model, dtype, prompts, max_new_tokens
        self.lm = None

    def load(self, adapter: Path | None) -> None:
        from reasoning_rl.model.loading import DECODE_ATTENTION, load_model

        self.lm = load_model(self.model, self.dtype, adapter=adapter, attn_implementation=DECODE_ATTENTION)

    def greedy(self, batch_size: int, desc: str):
        from reasoning_rl.eval.generation import generate_greedy

        return generate_greedy(self.lm.model.eval(), self.lm.tokenizer, self.prompts, batch_size,
                               self.max_new_tokens, desc)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pairs", nargs="+", help="adapter=its merged validation score file")
    parser.add_argument("--val-questions", type=int, default=200)
    parser.add_argument("--out", default=str(paths.REPORTS / "merge_eval_val.json"))
    args = parser.parse_args()
    from reasoning_rl.task.gsm8k import build_prompt, read_records

    params = load_params(paths.params_file())
    val = read_records(paths.VAL)[: args.val_questions]
    golds = [r["answer"] for r in val]
    gen = UnmergedGenerator(params.base.model, params.base.dtype, [build_prompt(r["question"]) for r in val],
                            params.evaluate.max_new_tokens)
    tag = f"val{len(val)}-{params.evaluate.max_new_tokens}tok"
    result = {"command": "python -m benchmarks.merge_eval " + " ".join(args.pairs), "model": params.base.model,
              "split": f"validation (first {len(val)} of data/prepared/val.jsonl)", "adapters": {}}
    for pair in args.pairs:
        adapter, _, merged_file = pair.partition("=")
        merged = json.loads(Path(merged_file).read_text())
        cache = CACHE / adapter.strip("/").replace("/", "_") / f"unmerged-{tag}.json"  # not in a DVC output
        unmerged = evaluate(gen, Path(adapter), golds, f"{adapter} unmerged", cache)
        keep = ("accuracy", "flexible_accuracy", "format_rate", "mean_completion_tokens", "truncated_rate")
        result["adapters"][adapter] = {"merged": {k: merged[k] for k in keep},
                                       "unmerged": {k: unmerged[k] for k in keep},
                                       "unmerged_vs_merged": paired(merged, unmerged)}
        print(adapter, result["adapters"][adapter], flush=True)
        write_json(Path(args.out), result)


if __name__ == "__main__":
    main()
