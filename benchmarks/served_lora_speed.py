"""Where served-LoRA decoding loses its speed: the same fixed-length greedy workload on three vLLM engines.

    python -m benchmarks.served_lora_speed --adapter models/sft/adapter --questions 64 --tokens 128

Arms, each a fresh in-process engine (bf16, eager, as the evaluate stage starts it):
- `no_lora`: an engine without LoRA support, base weights (how the base model is evaluated);
- `lora_engine_no_adapter`: the engine with LoRA on (`served_lora.engine_kwargs`), no adapter requested;
- `served`: the same engine serving `--adapter` (how the evaluate stage scores adapters and GRPO samples).

Every completion is exactly `--tokens` long (`ignore_eos`), so every arm decodes the same number of tokens
from the same prompts and tok/s compares per-token cost only (no length or prefill confound).
`--py-spy SECONDS` then samples a second, untimed pass of the `served` arm with py-spy (if installed; raw
stacks in runs/served_lora_profile.txt) and stores the share of samples under vLLM's LoRA layers, under the
LoRA ops and in each line of them.
Writes reports/served_lora_speed.json.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import torch

from reasoning_rl import paths
from reasoning_rl.files import write_json

ARMS = ("no_lora", "lora_engine_no_adapter", "served")
PROFILE = Path("runs/served_lora_profile.txt")
# stack frames whose share of the served arm's samples the result reports
FRAMES = {"model forward": "execute_model", "linear layers with LoRA (base + LoRA)": "BaseLinearLayerWithLoRA.apply",
          "LoRA part of those layers": "_apply_lora_to_output", "LoRA products (add_lora_linear)": "add_lora_linear",
          "building the fused LoRA matrices (served_lora._fused)": "_fused", "logits": "LogitsProcessor",
          "sampler": "Sampler.forward"}


def profile_shares(raw: Path, top: int = 8) -> dict:
    """Shares of py-spy's samples (its `raw` format: `frame;frame;... count` per line) under each of FRAMES, and
    the `top` innermost lines."""
    total, under, leaves = 0, dict.fromkeys(FRAMES, 0), Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n, frames = int(count), stack.split(";")
        names = [f.split(" (")[0] for f in frames]
        total += n
        for label, frame in FRAMES.items():
            if any(frame in name for name in names):
                under[label] += n
        leaves[frames[-1]] += n
    if not total:
        raise SystemExit(f"{raw}: py-spy recorded no samples")
    return {"samples": total, "share_under": {k: round(v / total, 3) for k, v in under.items()},
            "innermost_lines": {k: round(v / total, 3) for k, v in leaves.most_common(top)}}


def py_spy_binary() -> str:
    """py-spy from the running venv's bin (not always on PATH), else from PATH."""
    here = Path(sys.executable).parent / "py-spy"
    found = str(here) if here.is_file() else shutil.which("py-spy")
    if found is None:
        raise SystemExit("--py-spy: py-spy is not installed (pip install py-spy)")
    return found


def run_arm(arm: str, model: str, adapter: Path, prompts: list[list[int]], tokens: int, seed: int,
            py_spy: int) -> dict:
    from vllm import SamplingParams

    from reasoning_rl.model import engine, served_lora
    from reasoning_rl.model.loading import pick_dtype, resolve_model_path

    rank = served_lora.adapter_rank(adapter)
    options = {} if arm == "no_lora" else served_lora.engine_kwargs(rank)
    t0 = time.perf_counter()
    llm = engine.start_vllm(resolve_model_path(model), pick_dtype("auto"), seed,
                            max_model_len=max(map(len, prompts)) + tokens, **options)
    llm = served_lora.ServedLLM(llm, options.get("max_lora_rank", 0))
    start_s = time.perf_counter() - t0
    llm.serve(adapter if arm == "served" else None)
    params = SamplingParams(temperature=0.0, max_tokens=tokens, ignore_eos=True)
    batch = [{"prompt_token_ids": p} for p in prompts]
    llm.generate(batch[:4], SamplingParams(temperature=0.0, max_tokens=8, ignore_eos=True), use_tqdm=False)  # warm-up
    t0 = time.perf_counter()
    outputs = llm.generate(batch, params, use_tqdm=False)
    seconds = time.perf_counter() - t0
    if py_spy and arm == "served":  # a second, untimed pass under py-spy: its sampling slows what it samples
        PROFILE.parent.mkdir(parents=True, exist_ok=True)
        spy = subprocess.Popen([py_spy_binary(), "record", "--pid", str(os.getpid()), "--duration", str(py_spy),
                                "--format", "raw", "--rate", "50", "--output", str(PROFILE)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1.0)
        llm.generate(batch, params, use_tqdm=False)
        spy.wait()
    generated = sum(len(o.outputs[0].token_ids) for o in outputs)
    llm.close()
    engine.close_vllm(llm.llm)
    row = {"arm": arm, "tokens": generated, "seconds": round(seconds, 2), "tok_s": round(generated / seconds, 1),
           "start_s": round(start_s, 1)}
    print(row, flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:Qwen2.5-Coder-0.5B-Instruct")
    ap.add_argument("--adapter", type=Path, default=paths.adapter_dir("sft"))
    ap.add_argument("--questions", type=int, default=64, help="first N GSM8K test prompts (the prompts only)")
    ap.add_argument("--tokens", type=int, default=128, help="generated tokens per prompt, exactly")
    ap.add_argument("--arms", default=",".join(ARMS))
    ap.add_argument("--py-spy", type=int, default=0, help="seconds of py-spy sampling in the served arm (0 = off)")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--note", default="", help="stored with the result (e.g. whether the CPU was idle)")
    ap.add_argument("--out", type=Path, default=paths.REPORTS / "served_lora_speed.json")
    args = ap.parse_args()
    arms = args.arms.split(",")
    if bad := sorted(set(arms) - set(ARMS)):
        raise SystemExit(f"--arms: unknown {bad}; choose from {list(ARMS)}")
    if not (args.adapter / "adapter_config.json").is_file():
        raise SystemExit(f"--adapter {args.adapter}: no adapter_config.json there (run the sft stage first)")
    if args.py_spy and "served" in arms:
        py_spy_binary()  # fail before the timed arms, not after them

    from reasoning_rl.config import load_params
    from reasoning_rl.model.loading import load_tokenizer
    from reasoning_rl.task.gsm8k import load_gsm8k

    tok = load_tokenizer(args.model)
    prompts = [tok.apply_chat_template(e.prompt(), tokenize=True, add_generation_prompt=True, return_dict=False)
               for e in load_gsm8k(load_params(paths.params_file()).prepare.data_dir, "test")[: args.questions]]
    rows = [run_arm(a, args.model, args.adapter, prompts, args.tokens, args.seed, args.py_spy) for a in arms]
    profile = profile_shares(PROFILE) if args.py_spy and "served" in arms else None
    result = {"command": "python -m benchmarks.served_lora_speed " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k not in ("out", "note")),
              "model": args.model, "adapter": str(args.adapter), "questions": len(prompts), "tokens": args.tokens,
              "arms": rows, **({"served_profile": profile} if profile else {}),
              "machine": {"cpu_count": os.cpu_count(), "torch": torch.__version__,
                          "python": platform.python_version(), "note": args.note}}
    write_json(args.out, result)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
