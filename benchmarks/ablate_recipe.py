"""Recipe ablations on the validation split (never the test split): SFT -> GRPO -> greedy evaluation per variant.

Each variant is params.yaml (or --params) with a few `section.key=value` overrides. `select.samples=0` trains GRPO
on every train prompt; `select.samples=4` only on those the SFT adapter solves sometimes, as the select stage does
(reasoning_rl/train/prompts.py; the selection is cached per SFT adapter). SFT adapters are shared by
the variants whose SFT settings agree; the base model and each adapter are evaluated once, and their scores are
cached beside the adapter under runs/ablation/. Per variant the row holds validation strict and flexible accuracy
(Wilson 95 %), format rate, the GRPO run's mean reward, its share of groups with no reward spread (TRL's
frac_reward_zero_std, per step) and seconds per step.

    python -m benchmarks.ablate_recipe --model embedded:Qwen2.5-Coder-0.5B-Instruct \\
        --variant "default:" --variant "lr1e-5:grpo.learning_rate=1e-5" --out benchmarks/results/ablation_val.json

Runs are written under runs/ablation/ (git-ignored). Keep the CPU otherwise idle: the seconds are reported.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import random
import time
from pathlib import Path

import yaml

from benchmarks import RESULTS
from reasoning_rl import paths
from reasoning_rl.config import SECTIONS, Params, load_params, params_from_dict
from reasoning_rl.files import write_json
from reasoning_rl.train.prompts import grpo_order, keep_mixed

ROOT = Path("runs/ablation")


def parse_variant(text: str) -> tuple[str, dict[str, dict]]:
    """`name:sec.key=value,sec.key=value` -> (name, {section: {key: value}}); values are YAML scalars."""
    name, _, rest = text.partition(":")
    if not name:
        raise SystemExit(f"--variant {text!r}: give it a name, e.g. 'lr1e-5:grpo.learning_rate=1e-5'")
    overrides: dict[str, dict] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        section, dot, field = key.partition(".")
        if not (eq and dot):
            raise SystemExit(f"--variant {text!r}: {item!r} is not section.key=value")
        parsed = yaml.safe_load(value)
        try:  # YAML 1.1 reads 1e-4 as text
            parsed = float(parsed) if isinstance(parsed, str) else parsed
        except ValueError:
            pass
        overrides.setdefault(section, {})[field] = parsed
    return name, overrides


def apply(params: Params, overrides: dict[str, dict]) -> Params:
    """`params` with the overrides, checked as params.yaml is (a bad key or value names itself)."""
    data = {name: dataclasses.asdict(getattr(params, name)) for name in SECTIONS}
    for section, values in overrides.items():
        if section not in data:
            raise SystemExit(f"unknown section {section!r} in a --variant; allowed: {sorted(SECTIONS)}")
        data[section] |= values
    data = {name: {k: list(v) if isinstance(v, tuple) else v for k, v in section.items()}
            for name, section in data.items()}
    return params_from_dict(data)


def digest(*objs) -> str:
    return hashlib.sha256(json.dumps([dataclasses.asdict(o) for o in objs], sort_keys=True,
                                     default=str).encode()).hexdigest()[:10]


def val_tag(params: Params, val: list[dict], k: int, temperature: float) -> str:
    """The file name validation scores are cached under beside each adapter: they depend on these, not on the
    variant."""
    return f"val{len(val)}-{params.evaluate.max_new_tokens}tok-k{k}-t{temperature}.json"


def val_generator(params: Params, val: list[dict]):
    """The generator for the validation questions `val` (base.model, evaluate.max_new_tokens)."""
    from reasoning_rl.eval.generation import ModelGenerator
    from reasoning_rl.model.engine import resolve_engine
    from reasoning_rl.task.gsm8k import build_prompt

    return ModelGenerator(params.base.model, params.base.dtype, params.base.seed, resolve_engine(params.base.engine),
                          [build_prompt(r["question"]) for r in val], max_new_tokens=params.evaluate.max_new_tokens)


def evaluate(gen, adapter: Path | None, val: list[dict], params: Params, desc: str, cache: Path, k: int,
             temperature: float) -> None:
    """Validation scores of `adapter` (None = the base model), written to `cache` for later invocations: the test
    protocol (reasoning_rl/eval/protocol.py) with k samples at `temperature`, plus the per-question verdicts and
    shares that the paired comparisons need."""
    from reasoning_rl.eval.protocol import evaluate_model

    cfg = dataclasses.replace(params.evaluate, samples_k=k, temperature=temperature, batch_size=64)
    metrics, records = evaluate_model(gen, adapter, val, cfg, desc)
    result = metrics | {key: [r[key] for r in records] for key in ("correct", "correct_flexible")}
    if "pass1_strict" in metrics:
        result |= {"k": k, "temperature": temperature, "sampled_strict": [r["sampled_strict"] for r in records],
                   "sampled_flexible": [r["sampled_flexible"] for r in records]}
    write_json(cache, result)


def mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


# The pre-registered rule (docs/evaluation.md, "Choosing the recipe on validation"): a variant is kept when its
# GRPO's sampled pass@1 is >= 2.0 points above the baseline GRPO's (strict) and no more than 1.0 point below (flexible).
KEEP_STRICT, KEEP_FLEXIBLE = 0.02, -0.01


def keep(vs_baseline: dict) -> bool:
    """The pre-registered verdict on a variant, from its paired comparison with the baseline (b = the variant)."""
    return (vs_baseline["sampled_strict"]["delta"] >= KEEP_STRICT - 1e-12
            and vs_baseline["sampled_flexible"]["delta"] >= KEEP_FLEXIBLE - 1e-12)


def paired(a: dict, b: dict) -> dict:
    """b − a on the same questions: greedy (McNemar exact p) and sampled pass@1 (sign-flip p, bootstrap CI)."""
    from reasoning_rl.eval.metrics import mcnemar
    from reasoning_rl.eval.paired import paired_delta

    out = {}
    for kind, key in (("strict", "correct"), ("flexible", "correct_flexible")):
        test = mcnemar(a[key], b[key])
        out[kind] = {"delta": (sum(b[key]) - sum(a[key])) / len(a[key]), "p": test.p_exact}
        if f"sampled_{kind}" in a and f"sampled_{kind}" in b:
            out[f"sampled_{kind}"] = paired_delta(a[f"sampled_{kind}"], b[f"sampled_{kind}"], k=b["k"]).as_dict()
    return out


def in_child(target, *args) -> None:
    """Run `target(*args)` in a fresh process: each training's model and vLLM engine go with it. In one process
    they stayed resident after the variant was done, and the second GRPO variant ran in 23 of 24 GiB."""
    import multiprocessing

    child = multiprocessing.get_context("spawn").Process(target=target, args=args)
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"{target.__name__} failed in its process (exit code {child.exitcode}); see the log above")


def sft_adapter(params: Params, rows: list[dict]) -> tuple[Path, float]:
    out = ROOT / f"sft-{digest(params.base, params.sft)}"
    if not (out / "adapter" / "adapter_config.json").exists():
        in_child(train_sft_adapter, params, rows, out)
    return out / "adapter", json.loads((out / "seconds.json").read_text())["seconds"]


def train_sft_adapter(params: Params, rows: list[dict], out: Path) -> None:
    from reasoning_rl.train.sft import train_sft

    subset = list(rows)
    random.Random(params.base.seed).shuffle(subset)
    t0 = time.perf_counter()
    trainer, _ = train_sft(params.sft, params.base.model, params.base.dtype, params.base.seed,
                           subset[: params.sft.num_examples], out / "checkpoints")
    seconds = time.perf_counter() - t0
    trainer.model.save_pretrained(out / "adapter", safe_serialization=True)
    write_json(out / "seconds.json", {"seconds": seconds})


def ordered_prompts(params: Params, rows: list[dict]) -> list[dict]:
    """The train prompts in GRPO's order, cut to grpo.num_prompts: what the select stage starts from."""
    return grpo_order(rows, params.grpo.prompt_seed, params.grpo.num_prompts)


def mixed_prompts(params: Params, rows: list[dict], sft: Path) -> tuple[list[dict], dict]:
    """Of the first select.candidates prompts in GRPO's order, those the SFT adapter solves sometimes (the select
    stage's rule; the pass rates are cached per SFT adapter and sampling setting)."""
    select = params.select
    key = digest(params.base, params.sft) + f"-{params.grpo.prompt_seed}-{params.grpo.temperature}-" \
        f"{params.grpo.max_completion_length}-{select.samples}x{select.candidates}"
    out = ROOT / f"select-{key}"
    if not (out / "rates.json").exists():
        in_child(sample_pass_rates, params, ordered_prompts(params, rows)[: select.candidates], sft, out)
    rates = json.loads((out / "rates.json").read_text())
    selection = keep_mixed(ordered_prompts(params, rows)[: len(rates["rates"])], rates["rates"])
    return selection.kept, selection.stats() | {"sampling_seconds": rates["seconds"]}


def sample_pass_rates(params: Params, candidates: list[dict], sft: Path, out: Path) -> None:
    """The candidates' SFT pass rates as the select stage computes them, written to `out`/rates.json."""
    from reasoning_rl.model.engine import resolve_engine
    from reasoning_rl.train.prompts import sft_pass_rates

    b, g = params.base, params.grpo
    rates, seconds = sft_pass_rates(candidates, b.model, b.dtype, b.seed, resolve_engine(b.engine), sft,
                                    params.select.samples, g.temperature, g.max_completion_length,
                                    params.select.batch_size)
    write_json(out / "rates.json", {"rates": rates, "seconds": seconds, "ids": [r["id"] for r in candidates]})


def grpo_adapter(params: Params, rows: list[dict], sft: Path) -> tuple[Path, dict]:
    """GRPO from `sft` on the train prompts in GRPO's order, or on the mixed prompts when select.samples > 0."""
    stats = None
    prompts = ordered_prompts(params, rows)
    select = params.select
    if select.samples:
        prompts, stats = mixed_prompts(params, rows, sft)
    suffix = f"-select{select.samples}x{select.candidates}" if select.samples else ""
    out = ROOT / f"grpo-{digest(params.base, params.sft, params.grpo)}{suffix}"
    if not (out / "adapter" / "adapter_config.json").exists():
        in_child(train_grpo_adapter, params, prompts, sft, out)
    return out / "adapter", json.loads((out / "run.json").read_text()) | {"selection": stats}


def train_grpo_adapter(params: Params, prompts: list[dict], sft: Path, out: Path) -> None:
    from reasoning_rl.train.callbacks import seconds_per_step
    from reasoning_rl.train.grpo import train_grpo

    trainer, history = train_grpo(params.grpo, params.base.model, params.base.dtype, params.base.seed, prompts,
                                  sft, out / "checkpoints", backend=params.base.backend,
                                  generation_engine=params.base.engine)
    trainer.model.save_pretrained(out / "adapter", safe_serialization=True)
    steps = [h for h in history.history if "reward" in h]
    run = {
        "seconds_per_step": seconds_per_step(history.history),  # TRL's step times
        "reward_per_step": [h["reward"] for h in steps],
        "no_signal_per_step": [h.get("frac_reward_zero_std") for h in steps],
        "correctness_per_step": [h.get("rewards/correctness/mean") for h in steps],
        "history": history.history,
    }
    write_json(out / "run.json", run)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(paths.params_file()))
    ap.add_argument("--model", help="base.model for every variant (default: the params file's)")
    ap.add_argument("--variant", action="append", required=True, help="name:section.key=value,... (repeatable)")
    ap.add_argument("--val-questions", type=int, default=200, help="first N validation questions")
    ap.add_argument("--k", type=int, help="samples per validation question (default: evaluate.samples_k)")
    ap.add_argument("--temperature", type=float, help="their temperature (default: evaluate.temperature)")
    ap.add_argument("--baseline", default="baseline", help="the variant the others are judged against")
    ap.add_argument("--out", default=str(RESULTS / "ablation_val.json"))
    args = ap.parse_args()

    from reasoning_rl.task.gsm8k import read_records

    params = load_params(Path(args.params))
    if args.model:
        params = apply(params, {"base": {"model": args.model}})
    variants = [parse_variant(v) for v in args.variant]
    # every override checked before training
    planned = [(name, apply(params, ov), ov) for name, ov in variants]

    train = read_records(paths.TRAIN)
    val = read_records(paths.VAL)[: args.val_questions]
    k = params.evaluate.samples_k if args.k is None else args.k
    temperature = params.evaluate.temperature if args.temperature is None else args.temperature
    command = ("python -m benchmarks.ablate_recipe " + " ".join(f"--variant '{v}'" for v in args.variant)
               + (f" --model {args.model}" if args.model else "") + f" --val-questions {args.val_questions}"
               + f" --k {k} --temperature {temperature}")
    tag = val_tag(params, val, k, temperature)
    base_cache = ROOT / f"base-{hashlib.sha256(params.base.model.encode()).hexdigest()[:10]}" / tag
    in_child(evaluate_all, params, val, [(None, "base", base_cache)], k, temperature)
    base = json.loads(base_cache.read_text())

    # One variant at a time, evaluated as soon as it is trained, the results file rewritten after each: an
    # interrupted search keeps its finished variants, and a rerun resumes an unfinished GRPO from its checkpoints.
    rows = []
    for name, p, ov in planned:
        sft, sft_seconds = sft_adapter(p, train)
        grpo, run = grpo_adapter(p, train, sft)
        adapters = {"sft": sft, "grpo": grpo}
        in_child(evaluate_all, params, val, [(a, f"{name} {kind}", a.parent / tag) for kind, a in adapters.items()],
                 k, temperature)
        scores = {kind: json.loads((a.parent / tag).read_text()) for kind, a in adapters.items()}
        rows.append(variant_row(name, ov, sft_seconds, run, scores, base))
        judge(rows, args.baseline)
        out = {"command": command, "split": f"validation (first {len(val)} of data/prepared/val.jsonl)",
               "model": params.base.model, "base": base, "variants": rows}
        write_json(Path(args.out), out)
        print(table(out), flush=True)


def evaluate_all(params: Params, val: list[dict], jobs: list[tuple[Path | None, str, Path]], k: int,
                 temperature: float) -> None:
    """Validation scores of each (adapter, description, cache file) not yet cached, in one process and engine."""
    todo = [job for job in jobs if not job[2].exists()]
    if not todo:
        return
    gen = val_generator(params, val)
    for adapter, desc, cache in todo:
        evaluate(gen, adapter, val, params, desc, cache, k, temperature)
    gen.close()


def variant_row(name: str, ov: dict, sft_seconds: float, run: dict, scores: dict, base: dict) -> dict:
    no_signal = [x for x in run["no_signal_per_step"] if x is not None]
    return {
        "variant": name, "overrides": ov, "sft_seconds": round(sft_seconds, 1),
        "grpo_seconds_per_step": round(run["seconds_per_step"], 1),
        "grpo_mean_reward": sum(run["reward_per_step"]) / max(1, len(run["reward_per_step"])),
        "grpo_no_signal_mean": sum(no_signal) / len(no_signal) if no_signal else None,
        "no_signal_per_step": run["no_signal_per_step"], "reward_per_step": run["reward_per_step"],
        "val": scores, "val_sft_vs_grpo": paired(scores["sft"], scores["grpo"]), "selection": run.get("selection"),
        "no_signal_first10": mean(no_signal[:10]), "no_signal_last10": mean(no_signal[-10:]),
        "val_base_vs_sft_flexible_p": paired(base, scores["sft"])["flexible"]["p"],
    }


def judge(rows: list[dict], baseline_name: str) -> None:
    """Each variant's pre-registered verdict against the baseline variant (once the baseline has run)."""
    baseline = next((r for r in rows if r["variant"] == baseline_name), None)
    for r in rows:
        if baseline is not None and r is not baseline and "sampled_strict" in r["val"]["grpo"]:
            r["vs_baseline"] = paired(baseline["val"]["grpo"], r["val"]["grpo"])
            r["keep"] = keep(r["vs_baseline"])


def table(result: dict) -> str:
    """The validation table: sampled pass@1 (strict, flexible) of SFT and GRPO, the paired delta, greedy beside."""
    b = result["base"]
    lines = ["| variant | SFT pass@1 strict | GRPO pass@1 strict | SFT->GRPO strict [95 % CI] | p | SFT->GRPO flexible "
             "| GRPO greedy strict | GRPO format | tied groups, first/last 10 steps | s/step | vs baseline strict "
             "[95 % CI], flexible | kept |", "|---" * 12 + "|",
             f"| base (greedy only) | | | | | | {b['accuracy']:.1%} | {b['format_rate']:.1%} | | | | |"]
    for r in result["variants"]:
        s, g, pair = r["val"]["sft"], r["val"]["grpo"], r["val_sft_vs_grpo"]
        first, last = r.get("no_signal_first10"), r.get("no_signal_last10")
        ns = "" if first is None else f"{first:.0%} / {last:.0%}"
        vs, kept = "", ""
        if "vs_baseline" in r:
            st, fl = r["vs_baseline"]["sampled_strict"], r["vs_baseline"]["sampled_flexible"]
            vs = f"{st['delta']:+.1%} [{st['ci_low']:+.1%}, {st['ci_high']:+.1%}], {fl['delta']:+.1%}"
            kept = "yes" if r["keep"] else "no"
        if "sampled_strict" in pair:
            st, fl = pair["sampled_strict"], pair["sampled_flexible"]
            sampled = (f"{s['pass1_strict']:.1%} | {g['pass1_strict']:.1%} | {st['delta']:+.1%} "
                       f"[{st['ci_low']:+.1%}, {st['ci_high']:+.1%}] | {st['p']:.2g} | {fl['delta']:+.1%}")
        else:
            sampled = " | | | | "
        lines.append(f"| {r['variant']} | {sampled} | {g['accuracy']:.1%} | {g['format_rate']:.1%} | {ns} "
                     f"| {r['grpo_seconds_per_step']} | {vs} | {kept} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
