"""Ask a model a question and watch it think: the `<think>` trace streams token by token, then the answer.

Run:
    python -m scripts.demo --model grpo --question "Natalia sold 48 clips in April and half as many in May. \
How many clips did she sell in total?" --gold 72
    python -m scripts.demo --model champion --interactive     # several questions; an empty line quits
    python -m scripts.demo --model base --adapter path/to/adapter --base-model Qwen/Qwen2.5-0.5B-Instruct

`--model` picks the weights: `base` (no adapter), `sft` or `grpo` (the pipeline's adapters under models/), or
`champion` (the adapter registered in MLflow as reasoning-rl-grpo@champion). With `--gold`, the completion is
scored by every registered reward function, exactly as GRPO would have paid it.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from reasoning_rl import paths
from reasoning_rl.config import load_params
from reasoning_rl.model.loading import DECODE_ATTENTION, EMBEDDED_MODEL, load_model
from reasoning_rl.task.formatting import extract_answer_lenient, parse_completion
from reasoning_rl.task.gsm8k import build_prompt
from reasoning_rl.task.rewards import REWARD_FUNCS

MODELS = ("base", "sft", "grpo", "champion")


def adapter_path(model: str, scratch: Path, explicit: Path | None = None) -> Path | None:
    """The adapter folder for `--model` (or the explicit `--adapter`); None for the base model."""
    if explicit is not None:
        return explicit
    if model == "base":
        return None
    if model == "champion":
        from reasoning_rl.ops.registry import DEFAULT_ALIAS, download_adapter

        return download_adapter(scratch / "champion", alias=DEFAULT_ALIAS)
    folder = paths.adapter_dir(model)
    if not (folder / "adapter_config.json").is_file():
        raise SystemExit(f"{folder} has no adapter: run the {model} stage first (dvc repro {model})")
    return folder


def rewards_for(completion: str, gold: str | None) -> dict[str, float]:
    """What each registered reward pays this completion; rewards needing the gold are left out without one."""
    out = {"format": REWARD_FUNCS["format"]([completion])[0]}
    if gold is not None:
        out |= {name: func([completion], answer=[gold])[0] for name, func in REWARD_FUNCS.items() if name != "format"}
    return out


def answer(model, tokenizer, question: str, max_new_tokens: int, temperature: float, stream=None) -> str:
    """Generate one completion for `question`, streaming it to `stream` (stdout) as it is decoded; return it."""
    from transformers import TextStreamer

    stream = stream or sys.stdout  # looked up per call: sys.stdout may have been replaced since import

    class _Streamer(TextStreamer):  # TextStreamer prints to stdout; write where we are told instead
        def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
            stream.write(text + ("\n" if stream_end else ""))
            stream.flush()

    text = tokenizer.apply_chat_template(build_prompt(question), tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False).to(model.device)
    sampling = {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0} if temperature > 0 else {
        "do_sample": False, "temperature": None, "top_p": None, "top_k": None}
    with torch.inference_mode():
        out = model.generate(
            **enc, **sampling, max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
            streamer=_Streamer(tokenizer, skip_prompt=True, skip_special_tokens=True),
        )
    return tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)


def report(completion: str, gold: str | None, stream=None) -> dict[str, float]:
    """Print the parsed answer and the rewards (to stdout unless `stream`); return the rewards."""
    stream = stream or sys.stdout
    parsed = parse_completion(completion)
    final = parsed.answer if parsed is not None else extract_answer_lenient(completion)
    stream.write(f"\n-- answer: {final if final is not None else '(none)'}"
                 f"{'' if parsed is not None else '  (not well-formed: format reward 0)'}\n")
    rewards = rewards_for(completion, gold)
    gold_note = f" (gold {gold})" if gold is not None else " (give --gold to score correctness)"
    stream.write("-- rewards" + gold_note + ": " + ", ".join(f"{k} {v:g}" for k, v in rewards.items()) + "\n")
    return rewards


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=MODELS, default="grpo")
    parser.add_argument("--adapter", type=Path, help="a LoRA adapter folder (overrides --model's)")
    parser.add_argument("--base-model", help="hub id, local folder or embedded:<name>; default: base.model of the "
                        "params file the adapters were trained with ($REASONING_RL_PARAMS or params.yaml)")
    parser.add_argument("--dtype", default="auto", choices=("auto", "bfloat16", "float32"))
    parser.add_argument("--question", help="the question (or use --interactive)")
    parser.add_argument("--gold", help="the gold answer, to show the rewards the completion earns")
    parser.add_argument("--interactive", action="store_true", help="ask several questions; an empty line quits")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (the evaluation's decoding)")
    args = parser.parse_args(argv)
    if not args.question and not args.interactive:
        parser.error("give --question or --interactive")

    if args.base_model is None:
        params = paths.params_file()
        args.base_model = load_params(params).base.model if params.exists() else EMBEDDED_MODEL
    with tempfile.TemporaryDirectory() as scratch:
        adapter = adapter_path(args.model, Path(scratch), args.adapter)
        lm = load_model(args.base_model, args.dtype, adapter=adapter, attn_implementation=DECODE_ATTENTION)
        model = lm.model.merge_and_unload() if adapter is not None else lm.model
        print(f"-- {args.model} ({lm.path}{f' + {adapter}' if adapter else ''})", flush=True)
        if args.question:
            completion = answer(model, lm.tokenizer, args.question, args.max_new_tokens, args.temperature)
            report(completion, args.gold)
        while args.interactive:
            try:
                question = input("\nquestion> ").strip()
                if not question:
                    break
                gold = input("gold answer (Enter to skip)> ").strip() or None
            except EOFError:
                break
            completion = answer(model, lm.tokenizer, question, args.max_new_tokens, args.temperature)
            report(completion, gold)


if __name__ == "__main__":
    main()
