"""Memory of one GRPO step vs one PPO step (learned critic) on SmolLM2-135M, full fine-tuning and LoRA.

Each (algorithm, setting) pair runs in a fresh subprocess so that one run's peak cannot hide in another's,
with glibc's mmap threshold pinned (MALLOC_MMAP_THRESHOLD_=65536) so that freed tensors leave RSS.
Inside it: imports, then the base model is loaded in fp32 (copied into private memory and run once, so its
weights are resident) and the fixed batch is built; that process state is the baseline. The peak-RSS
high-water mark is then reset (Linux `/proc/self/clear_refs` = 5) and one training step runs: reference/old
log-probs (and, for PPO, critic values and GAE), forward, backward, AdamW step.
Reported per run: trainable and frozen parameters (policy, reference copy, critic), the static memory
(weights + gradients + AdamW state, counted from the tensors), the baseline RSS, the peak RSS during the step
(the total) and the step delta (peak - baseline). With CUDA, torch.cuda.max_memory_allocated as well.

All runs see the same model and batch (one real GSM8K prompt x G completions of random tokens with varied
lengths, fixed rewards). Three algorithms:

* grpo_beta0: GRPO without the KL term, as params.yaml's grpo stage and TRL's default (beta = 0): no
  reference model at all;
* grpo: GRPO with DeepSeekMath's KL weight (beta = 0.04, §4.2), so it holds a reference like PPO;
* ppo: PPO with a learned critic (a second backbone + value head, its gradients, AdamW state and
  activations) and the InstructGPT KL penalty in the reward (beta = 0.04), which needs the reference.

`--gradient-checkpointing` recomputes activations in backward (TRL's GRPOConfig default; the project's
stages turn it off for speed); its results are stored under their own key, so running the script with and
without it fills both.

Results: printed, merged into metrics/memory.json (summary) and benchmarks/results/memory_grpo_vs_ppo.json (all
numbers), and logged to MLflow (experiment "reasoning-rl", run "grpo-vs-ppo-memory"; MLFLOW_TRACKING_URI,
default sqlite:///<project root>/mlflow.db).

Usage:
    python teaching/grpo_vs_ppo_memory.py [--gradient-checkpointing] [--completion-length 64]
                                         [--num-generations 4] [--no-mlflow]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEFAULT_DATA_DIR = ROOT.parent / "shared" / "data" / "gsm8k"
SETTINGS = ("full", "lora")
KL_BETA = 0.04  # DeepSeekMath §4.2 (GRPO's KL weight); PPO's KL penalty uses the same value
ALGOS = {"grpo_beta0": ("grpo", 0.0), "grpo": ("grpo", KL_BETA), "ppo": ("ppo", KL_BETA)}
GRPO_VARIANTS = ("grpo_beta0", "grpo")
REWARDS = (1.0, 0.0, 0.0, 2.0, 0.0, 1.0, 0.0, 2.0)  # any non-constant pattern: GRPO needs a signal to step
TARGET_FULL_RATIO = 0.55
MB = 1024**2


# ---- measurement inside the child process ------------------------------------------------------------------


def proc_status_kb(field: str) -> int:
    text = Path("/proc/self/status").read_text()
    match = re.search(rf"^{field}:\s+(\d+) kB", text, re.MULTILINE)
    if match is None:
        raise RuntimeError(f"{field} not in /proc/self/status")
    return int(match.group(1))


def reset_peak_rss() -> bool:
    """Make VmHWM (peak RSS) restart from the current RSS; False where the kernel does not allow it."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def fixed_batch(tokenizer, num_generations: int, completion_length: int, data_dir: Path):
    """One GSM8K prompt repeated G times and G random completions of varied length (ending in EOS or cut)."""
    import torch

    from reasoning_rl.task.gsm8k import build_prompt, load_split
    from teaching.mini_grpo import Rollout

    question = (
        load_split(data_dir, "train")[0].question
        if (data_dir / "train.jsonl").is_file()
        else "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
        "How many clips did Natalia sell altogether in April and May?"
    )
    text = tokenizer.apply_chat_template(build_prompt(question), tokenize=False, add_generation_prompt=True)
    prompt = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    prompt_ids = prompt["input_ids"].repeat(num_generations, 1)  # [G, P]
    prompt_mask = prompt["attention_mask"].repeat(num_generations, 1)  # [G, P]
    gen = torch.Generator().manual_seed(0)
    completion_ids = torch.randint(3, len(tokenizer), (num_generations, completion_length), generator=gen)
    completion_mask = torch.ones_like(completion_ids)
    for i in range(num_generations):
        # Half the rows stop early with EOS, half run to the limit, as a real batch does.
        if i % 2 == 0:
            end = completion_length // 2 + i * completion_length // (4 * num_generations)
            completion_ids[i, end] = tokenizer.eos_token_id
            completion_ids[i, end + 1 :] = tokenizer.pad_token_id
            completion_mask[i, end + 1 :] = 0
    return Rollout(prompt_ids, prompt_mask, completion_ids, completion_mask)


def distinct_parameters(*modules) -> tuple[int, int, int, int]:
    """(trainable, frozen, all bytes, trainable bytes) over the distinct parameters of `modules` (None skipped)."""
    seen: dict[int, object] = {}
    for module in modules:
        if module is not None:
            for p in module.parameters():
                seen[id(p)] = p
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    frozen = sum(p.numel() for p in seen.values() if not p.requires_grad)
    total_bytes = sum(p.numel() * p.element_size() for p in seen.values())
    trainable_bytes = sum(p.numel() * p.element_size() for p in seen.values() if p.requires_grad)
    return trainable, frozen, total_bytes, trainable_bytes


def optimizer_state_bytes(optimizer) -> int:
    import torch

    return sum(
        t.numel() * t.element_size()
        for state in optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t) and t.dim() > 0  # skip AdamW's scalar step counters
    )


def run_child(algo: str, setting: str, args: argparse.Namespace) -> dict:
    import gc

    import torch

    from teaching.mini_grpo import (
        LoraSettings,
        MiniGRPOConfig,
        MiniGRPOTrainer,
        group_advantages,
        load_policy,
        prepare_policy,
    )
    from teaching.mini_ppo import MiniPPOConfig, MiniPPOTrainer, build_value_model

    kind, beta = ALGOS[algo]
    torch.manual_seed(0)
    cuda = torch.cuda.is_available() and not args.cpu
    model, tokenizer, source = load_policy(adapter=None, dtype="float32")  # fp32 master weights, as AdamW wants
    rollout = fixed_batch(tokenizer, args.num_generations, args.completion_length, Path(args.data_dir))
    if cuda:
        model = model.cuda()
        for name in ("prompt_ids", "prompt_mask", "completion_ids", "completion_mask"):
            setattr(rollout, name, getattr(rollout, name).cuda())
    rewards = torch.tensor([REWARDS[i % len(REWARDS)] for i in range(args.num_generations)])
    # safetensors weights arrive memory-mapped and only become resident when first touched, which would bill
    # the weights to the step; a private copy plus one no-grad forward makes the baseline hold them (and the
    # one-off kernel/workspace set-up), so the step delta is what training adds.
    with torch.no_grad():
        for p in model.parameters():
            p.data = p.data.clone()
        model(input_ids=rollout.prompt_ids[:1, :8], use_cache=False)
    if args.gradient_checkpointing:
        # set before the critic is copied from the model, so both networks recompute their activations
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    gc.collect()
    baseline_kb = proc_status_kb("VmRSS")
    hwm_reset = reset_peak_rss()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        cuda_baseline = torch.cuda.memory_allocated()

    lora = LoraSettings() if setting == "lora" else None

    def no_reward(completions, **kwargs):  # never called: optimise() takes the fixed rewards directly
        return [0.0] * len(completions)

    start = time.perf_counter()
    critic = None
    if kind == "grpo":
        cfg = MiniGRPOConfig(
            num_generations=args.num_generations,
            max_completion_length=args.completion_length,
            beta=beta,
            lora=lora,
        )
        policy, reference = prepare_policy(model, lora, beta)
        trainer = MiniGRPOTrainer(policy, tokenizer, cfg, reference=reference, reward_funcs=[no_reward])
        advantages = group_advantages(rewards, args.num_generations).to(rollout.prompt_ids.device)
        loss, _, _ = trainer.optimise(rollout, advantages)
    else:
        cfg = MiniPPOConfig(
            num_generations=args.num_generations,
            max_completion_length=args.completion_length,
            beta=beta,
            lora=lora,
        )
        critic = build_value_model(model, lora)  # from the plain model, before LoRA wraps the policy
        policy, reference = prepare_policy(model, lora, beta)
        trainer = MiniPPOTrainer(policy, critic, tokenizer, cfg, reference=reference, reward_funcs=[no_reward])
        out = trainer.optimise(rollout, rewards.to(rollout.prompt_ids.device))
        loss = out["policy_loss"] + cfg.vf_coef * out["value_loss"]
    seconds = time.perf_counter() - start

    peak_kb = proc_status_kb("VmHWM")
    trainable, frozen, param_bytes, trainable_bytes = distinct_parameters(policy, reference, critic)
    optimizer_bytes = optimizer_state_bytes(trainer.optimizer)
    result = {
        "algo": algo,
        "kl_beta": beta,
        "setting": setting,
        "gradient_checkpointing": args.gradient_checkpointing,
        "model": source,
        "device": "cuda" if cuda else "cpu",
        "torch_threads": torch.get_num_threads(),
        "batch": {
            "completions": args.num_generations,
            "prompt_tokens": rollout.prompt_ids.size(1),
            "completion_tokens": rollout.completion_length,
            "real_completion_tokens": int(rollout.completion_mask.sum()),
        },
        "trainable_params": trainable,
        "frozen_params": frozen,
        "param_mb": param_bytes / MB,
        "grad_mb": trainable_bytes / MB,  # one gradient per trainable weight, same dtype
        "optimizer_state_mb": optimizer_bytes / MB,
        "static_mb": (param_bytes + trainable_bytes + optimizer_bytes) / MB,
        "baseline_rss_mb": baseline_kb / 1024,
        "peak_rss_mb": peak_kb / 1024,
        "step_delta_rss_mb": (peak_kb - baseline_kb) / 1024,
        "peak_rss_reset_at_baseline": hwm_reset,
        "step_seconds": seconds,
        "loss": float(loss),
    }
    if cuda:
        torch.cuda.synchronize()
        result["cuda_baseline_mb"] = cuda_baseline / MB
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / MB
        result["cuda_step_delta_mb"] = (torch.cuda.max_memory_allocated() - cuda_baseline) / MB
    return result


# ---- the parent: one fresh process per run, then the report -----------------------------------------------


def spawn(algo: str, setting: str, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--child",
        algo,
        setting,
        "--completion-length",
        str(args.completion_length),
        "--num-generations",
        str(args.num_generations),
        "--data-dir",
        str(args.data_dir),
    ]
    cmd += ["--cpu"] if args.cpu else []
    cmd += ["--gradient-checkpointing"] if args.gradient_checkpointing else []
    # glibc's mmap threshold adapts at run time, so freed tensor blocks sometimes stay in the heap and count in
    # RSS: peaks of the same step varied by 750 MB between runs. Pinned at 64 KiB, every tensor-sized block is
    # its own mapping, returned on free, and the same step peaked at the same RSS to within 1 MB.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"{algo}/{setting} child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


SUMMARY_KEYS = (
    "kl_beta",
    "trainable_params",
    "frozen_params",
    "static_mb",
    "optimizer_state_mb",
    "baseline_rss_mb",
    "peak_rss_mb",
    "step_delta_rss_mb",
    "step_seconds",
)


def summarise(runs: dict[str, dict[str, dict]]) -> dict:
    summary: dict[str, dict] = {}
    for setting in SETTINGS:
        entry: dict[str, dict] = {
            algo: {k: round(r[k], 1) if k.endswith(("_mb", "_seconds")) else r[k] for k in SUMMARY_KEYS}
            for algo, r in runs[setting].items()
        }
        ppo = runs[setting]["ppo"]
        for variant in GRPO_VARIANTS:
            grpo = runs[setting][variant]
            ratios = {
                "peak_rss": grpo["peak_rss_mb"] / ppo["peak_rss_mb"],
                "step_delta_rss": grpo["step_delta_rss_mb"] / ppo["step_delta_rss_mb"],
                "static": grpo["static_mb"] / ppo["static_mb"],
            }
            if "cuda_peak_mb" in grpo:
                ratios["cuda_peak"] = grpo["cuda_peak_mb"] / ppo["cuda_peak_mb"]
            entry[f"{variant}_over_ppo"] = {k: round(v, 3) for k, v in ratios.items()}
        summary[setting] = entry
    summary["target_full_peak_ratio_max"] = TARGET_FULL_RATIO
    for variant in GRPO_VARIANTS:
        ratios = summary["full"][f"{variant}_over_ppo"]
        summary[f"target_met_{variant}"] = {k: v <= TARGET_FULL_RATIO for k, v in ratios.items()}
    return summary


def print_table(runs: dict[str, dict[str, dict]], summary: dict, mode: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=150)
    table = Table(title=f"One training step, SmolLM2-135M fp32, fresh process per row ({mode})")
    columns = ("setting", "algo", "β", "trainable", "frozen", "w+g+AdamW", "AdamW", "baseline", "peak", "Δ step", "s")
    for col in columns:
        table.add_column(col, justify="left" if col in ("setting", "algo") else "right")
    for setting in SETTINGS:
        for algo in ALGOS:
            r = runs[setting][algo]
            table.add_row(
                setting,
                algo,
                f"{r['kl_beta']:g}",
                f"{r['trainable_params'] / 1e6:.2f} M",
                f"{r['frozen_params'] / 1e6:.2f} M",
                f"{r['static_mb']:.0f} MB",
                f"{r['optimizer_state_mb']:.0f} MB",
                f"{r['baseline_rss_mb']:.0f} MB",
                f"{r['peak_rss_mb']:.0f} MB",
                f"{r['step_delta_rss_mb']:.0f} MB",
                f"{r['step_seconds']:.0f}",
            )
    console.print(table)
    for setting in SETTINGS:
        for variant in GRPO_VARIANTS:
            ratios = summary[setting][f"{variant}_over_ppo"]
            console.print(f"{setting:4} {variant:10}/ppo: " + ", ".join(f"{k} {v:.3f}" for k, v in ratios.items()))
    for variant in GRPO_VARIANTS:
        met = summary[f"target_met_{variant}"]
        console.print(
            f"target full-FT ratio <= {TARGET_FULL_RATIO} ({variant}): "
            + ", ".join(f"{k} {'met' if ok else 'NOT met'}" for k, ok in met.items())
        )


def merge_json(path: Path, key: str, value: dict) -> None:
    """Write `value` under `key` in the JSON object at `path`, keeping the other keys (the other mode)."""
    data = json.loads(path.read_text()) if path.is_file() else {}
    data[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")


def log_to_mlflow(runs: dict, summary: dict, mode: str, files: list[Path]) -> str:
    import mlflow

    from reasoning_rl.ops.tracking import DEFAULT_TRACKING_URI, experiment_name, flatten, git_state

    uri = os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)
    if uri == DEFAULT_TRACKING_URI:  # the relative default means the project root's mlflow.db
        uri = f"sqlite:///{ROOT / 'mlflow.db'}"
    mlflow.set_tracking_uri(uri)
    mlflow.set_experiment(experiment_name())
    tags = {"role": "analysis", "activations": mode, **git_state()}
    with mlflow.start_run(run_name="grpo-vs-ppo-memory", tags=tags) as run:
        first = runs["full"]["grpo"]
        mlflow.log_params(
            {
                "model": first["model"],
                "dtype": "float32",
                "kl_beta": KL_BETA,
                "activations": mode,
                "device": first["device"],
                **flatten("batch", first["batch"]),
            }
        )
        metrics = {}
        for setting in SETTINGS:
            for algo in ALGOS:
                r = runs[setting][algo]
                for key in SUMMARY_KEYS[1:] + ("cuda_peak_mb",):
                    if key in r:
                        metrics[f"{setting}.{algo}.{key}"] = float(r[key])
            for variant in GRPO_VARIANTS:
                for key, value in summary[setting][f"{variant}_over_ppo"].items():
                    metrics[f"{setting}.{variant}_over_ppo.{key}"] = float(value)
        mlflow.log_metrics(metrics)
        for path in files:
            mlflow.log_artifact(str(path))
        return run.info.run_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # G=4 as params.yaml's grpo stage; 64 completion tokens keep the 6 fresh-process runs to minutes on a CPU
    parser.add_argument("--completion-length", type=int, default=64)
    parser.add_argument("--num-generations", type=int, default=4)
    parser.add_argument("--gradient-checkpointing", action="store_true")
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--cpu", action="store_true", help="measure on CPU even when CUDA is present")
    parser.add_argument("--no-mlflow", action="store_true")
    parser.add_argument("--child", nargs=2, metavar=("ALGO", "SETTING"), help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        algo, setting = args.child
        print(json.dumps(run_child(algo, setting, args)))
        return

    mode = "gradient_checkpointing" if args.gradient_checkpointing else "activations_stored"
    runs: dict[str, dict[str, dict]] = {s: {} for s in SETTINGS}
    for setting in SETTINGS:
        for algo in ALGOS:
            print(f"measuring {algo} / {setting} ({mode}) in a fresh process ...", flush=True)
            runs[setting][algo] = spawn(algo, setting, args)
    summary = summarise(runs)
    print_table(runs, summary, mode)

    command = ("python teaching/grpo_vs_ppo_memory.py " + " ".join(sys.argv[1:])).strip()
    metrics_path = ROOT / "metrics" / "memory.json"
    report_path = ROOT / "benchmarks" / "results" / "memory_grpo_vs_ppo.json"
    merge_json(metrics_path, mode, summary)
    merge_json(report_path, mode, {"command": command, "summary": summary, "runs": runs})
    print(f"wrote {mode} results into {metrics_path.relative_to(ROOT)} and {report_path.relative_to(ROOT)}")
    if not args.no_mlflow:
        run_id = log_to_mlflow(runs, summary, mode, [metrics_path, report_path])
        print(f"MLflow run {run_id} (experiment reasoning-rl, run name grpo-vs-ppo-memory)")


if __name__ == "__main__":
    main()
