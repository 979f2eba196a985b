"""Does vLLM's sampling match the trainer's, and what do TRL's importance-sampling modes make of the gap?

On the SFT policy (its LoRA merged), 16 train prompts x 8 samples at T 0.9, <= 160 tokens:
- transformers sampling (TRL's GenerationConfig) vs vLLM sampling (TRL's SamplingParams): format rate, length;
- for the vLLM samples, the trainer's log-probs (bf16, logits / T) minus the engine's processed log-probs, per
  token and summed per sequence, and the share of sequences TRL's `sequence_mask` (ratio > 3) would drop.

    python -m benchmarks.bench_is_ratio [--model M --adapter DIR]   (idle CPU, ~10 min; reports/is_ratio.json)
"""

from __future__ import annotations

import json
import time

import torch

from reasoning_rl import paths
from reasoning_rl.files import write_json

MODEL, ADAPTER = "embedded:Qwen2.5-Coder-0.5B-Instruct", "models/sft/adapter"  # the default run's SFT policy
TEMPERATURE, SAMPLES, PROMPTS, MAX_TOKENS = 0.9, 8, 16, 160


def mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=MODEL)
    ap.add_argument("--adapter", default=ADAPTER, help="an SFT adapter trained on --model")
    args = ap.parse_args()
    model_name, adapter = args.model, args.adapter
    from transformers import GenerationConfig
    from vllm import SamplingParams

    from reasoning_rl.model import engine
    from reasoning_rl.model.loading import load_tokenizer, merged_model, resolve_model_path
    from reasoning_rl.task.gsm8k import build_prompt, read_records
    from reasoning_rl.task.rewards import format_reward

    torch.manual_seed(0)
    tok = load_tokenizer(model_name)
    model = merged_model(model_name, "auto", adapter).eval()
    ids = [tok.apply_chat_template(build_prompt(r["question"]), tokenize=True, add_generation_prompt=True,
                                   return_dict=False) for r in read_records(paths.TRAIN)[:PROMPTS]]

    # transformers sampling, as TRL configures it without vLLM
    gc = GenerationConfig(max_new_tokens=MAX_TOKENS, do_sample=True, temperature=TEMPERATURE, top_p=1.0, top_k=0,
                          pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, disable_compile=True)
    hf_texts, hf_lens = [], []
    t0 = time.perf_counter()
    for p in ids:
        x = torch.tensor([p] * SAMPLES)
        with torch.no_grad():
            out = model.generate(input_ids=x, attention_mask=torch.ones_like(x), generation_config=gc)
        for row in out[:, len(p):].tolist():
            n = row.index(tok.eos_token_id) + 1 if tok.eos_token_id in row else len(row)
            hf_lens.append(n)
            hf_texts.append(tok.decode(row[:n], skip_special_tokens=True))
    hf_seconds = time.perf_counter() - t0

    # vLLM sampling, as TRL configures it (untruncated, processed log-probs of the sampled tokens)
    llm = engine.start_vllm(resolve_model_path(model_name), torch.bfloat16, 0, max_model_len=1024)
    engine.reload_weights(llm, model.state_dict().items())
    params = SamplingParams(n=SAMPLES, temperature=TEMPERATURE, top_p=1.0, top_k=0, max_tokens=MAX_TOKENS,
                            logprobs=0)
    outputs = llm.generate([{"prompt_token_ids": p} for p in ids], params, use_tqdm=False)
    v_texts, v_lens, token_gaps, seq_gaps = [], [], [], []
    for p, o in zip(ids, outputs, strict=True):
        for c in o.outputs:
            v_texts.append(c.text)
            v_lens.append(len(c.token_ids))
            engine_lp = torch.tensor([d[t].logprob for t, d in zip(c.token_ids, c.logprobs, strict=True)])
            with torch.no_grad():
                logits = model(torch.tensor([p + list(c.token_ids)])).logits[0, len(p) - 1:-1].float()
            trainer_lp = torch.log_softmax(logits / TEMPERATURE, -1).gather(1, torch.tensor(c.token_ids)[:, None])[:, 0]
            gap = trainer_lp - engine_lp
            token_gaps += gap.tolist()
            seq_gaps.append(gap.sum().item())
    engine.close_vllm(llm)

    seq, tokens = torch.tensor(seq_gaps), torch.tensor(token_gaps)
    result = {
        "command": "python -m benchmarks.bench_is_ratio", "model": model_name, "adapter": adapter, "prompts": PROMPTS,
        "samples_per_prompt": SAMPLES, "max_tokens": MAX_TOKENS, "temperature": TEMPERATURE,
        "transformers": {"format_rate": mean(format_reward(hf_texts)), "mean_tokens": mean(hf_lens),
                         "eos_rate": mean(n < MAX_TOKENS for n in hf_lens), "seconds": round(hf_seconds, 1)},
        "vllm": {"format_rate": mean(format_reward(v_texts)), "mean_tokens": mean(v_lens),
                 "eos_rate": mean(n < MAX_TOKENS for n in v_lens)},
        "token_logp_gap_trainer_minus_engine": {"mean": tokens.mean().item(), "mean_abs": tokens.abs().mean().item()},
        "sequence_logp_gap": {"mean": seq.mean().item(), "std": seq.std().item()},
        "sequence_mask_drops": (seq.exp() > 3).float().mean().item(),
        "tokens_clipped_by_token_truncate": (tokens.exp() > 3).float().mean().item(),
    }
    write_json(paths.REPORTS / "is_ratio.json", result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
