"""The evaluation report: one self-contained HTML file (inline CSS, PNGs as base64, no network at view time).

Sections: the model table with strict and flexible accuracy (greedy, with Wilson intervals) and sampled pass@1,
the paired tests for each pair of models (McNemar on greedy verdicts; on sampled pass@1, the pre-registered
sign-flip test and bootstrap interval of reasoning_rl/eval/paired.py), accuracy by difficulty (reference-solution steps,
`reasoning_rl.eval.metrics.reasoning_steps`), the GRPO reward and KL curves per step, and side-by-side traces.
Inputs are plain data (the evaluate stages' per-question results and metrics, the GRPO history); `load_inputs`
reads the files, the rest only computes and renders.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence
from dataclasses import asdict
from itertools import combinations
from typing import Any

from reasoning_rl.eval.metrics import difficulty_bucket, mcnemar, trace_diagnostics
from reasoning_rl.eval.paired import paired_delta
from reasoning_rl.eval.scoring import wilson_interval

# GRPO history keys drawn, in this order, when present (TRL's names; `kl` only exists when beta > 0).
CURVES = (
    ("reward", "total reward"),
    ("rewards/format/mean", "format reward"),
    ("rewards/correctness/mean", "correctness reward"),
    # Share of groups whose G rewards all tie: their advantages are 0, so they teach nothing (no signal).
    ("frac_reward_zero_std", "groups with no reward spread"),
    ("kl", "KL to the reference"),
)
COLOURS = {"base": "#7f7f7f", "sft": "#1f77b4", "grpo": "#d62728", "champion": "#2ca02c"}


# ----------------------------------------------------------------------------------------------------------
# Numbers
# ----------------------------------------------------------------------------------------------------------


def aligned_verdicts(samples: dict[str, list[dict]], key: str = "correct") -> tuple[list[str], dict[str, list[bool]]]:
    """Question ids shared by every model (in the first model's order) and each model's verdicts on them
    (`key`: "correct" = strict, "correct_flexible" = the last number; older samples lack the latter: False)."""
    models = list(samples)
    by_id = {m: {r["id"]: bool(r.get(key, False)) for r in rows} for m, rows in samples.items()}
    ids = [r["id"] for r in samples[models[0]] if all(r["id"] in by_id[m] for m in models)]
    return ids, {m: [by_id[m][i] for i in ids] for m in models}


def model_rows(samples: dict[str, list[dict]], metrics: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per model: accuracy with its Wilson interval, format rate, trace diagnostics, sampling metrics."""
    rows = []
    for model, records in samples.items():
        n, correct = len(records), sum(bool(r["correct"]) for r in records)
        low, high = wilson_interval(correct, n)
        flexible = sum(bool(r.get("correct_flexible", False)) for r in records)
        flex_low, flex_high = wilson_interval(flexible, n)
        row = {
            "model": model,
            "questions": n,
            "accuracy": correct / n if n else 0.0,
            "ci_low": low,
            "ci_high": high,
            "flexible_accuracy": flexible / n if n else 0.0,
            "flexible_ci_low": flex_low,
            "flexible_ci_high": flex_high,
            "format_rate": sum(bool(r["format_ok"]) for r in records) / n if n else 0.0,
            "mean_tokens": sum(r["num_tokens"] for r in records) / n if n else 0.0,
            **trace_diagnostics([r["completion"] for r in records]),
        }
        row |= {k: v for k, v in metrics.get(model, {}).items() if k.startswith(("pass@", "maj@", "pass1_"))}
        rows.append(row)
    return rows


def paired_summary(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """metrics/paired.json: per pair ("sft_vs_grpo"), greedy McNemar exact p and B − A accuracy (`strict`,
    `flexible`), and where both models were sampled, the sampled pass@1 test (`sampled.strict`, `.flexible`:
    delta, ci_low, ci_high, p, k, n)."""
    out: dict[str, dict[str, Any]] = {}
    for kind, key in (("strict", "paired"), ("flexible", "paired_flexible")):
        for p in summary[key].values():
            out.setdefault(f"{p['a']}_vs_{p['b']}", {})[kind] = {"p": p["p_exact"], "delta": p["delta"],
                                                                "only_a": p["only_a"], "only_b": p["only_b"]}
    for p in summary["paired_sampled"].values():
        out.setdefault(f"{p['a']}_vs_{p['b']}", {})["sampled"] = {kind: p[kind] for kind in ("strict", "flexible")}
    return out


def sampled_pairs(samples: dict[str, list[dict]]) -> list[dict[str, Any]]:
    """The pre-registered test on sampled pass@1 for every pair of sampled models (docs/evaluation.md): per
    question the share of right samples, B − A over the questions both answered, strict and flexible."""
    sampled = {m: rows for m, rows in samples.items() if rows and "sampled_strict" in rows[0]}
    out = []
    for a, b in combinations(sampled, 2):
        by_id = {m: {r["id"]: r for r in sampled[m]} for m in (a, b)}
        ids = [i for i in by_id[a] if i in by_id[b]]
        k = len(by_id[b][ids[0]]["samples"]) if ids else 0
        result = {"pair": f"{a} vs {b}", "a": a, "b": b}
        for kind in ("strict", "flexible"):
            scores = [[by_id[m][i][f"sampled_{kind}"] for i in ids] for m in (a, b)]
            result[kind] = paired_delta(*scores, k=k).as_dict()
        out.append(result)
    return out


def paired_tests(verdicts: dict[str, list[bool]]) -> list[dict[str, Any]]:
    """McNemar's test for every pair of models (in the given order: base vs sft, base vs grpo, sft vs grpo)."""
    out = []
    for a, b in combinations(verdicts, 2):
        result = mcnemar(verdicts[a], verdicts[b])
        n = result.n
        out.append(
            {
                "pair": f"{a} vs {b}",
                "a": a,
                "b": b,
                "delta": (sum(verdicts[b]) - sum(verdicts[a])) / n if n else 0.0,
                **asdict(result),
            }
        )
    return out


def accuracy_by_difficulty(
    ids: Sequence[str], verdicts: dict[str, list[bool]], steps: dict[str, int]
) -> dict[str, dict[str, dict[str, float]]]:
    """bucket -> model -> {n, accuracy, ci_low, ci_high}, buckets ordered by step count."""
    buckets: dict[str, list[int]] = {}
    for pos, qid in enumerate(ids):
        if qid in steps:
            buckets.setdefault(difficulty_bucket(steps[qid]), []).append(pos)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for bucket in sorted(buckets, key=lambda b: int(b.rstrip("+"))):
        positions = buckets[bucket]
        out[bucket] = {}
        for model, v in verdicts.items():
            correct = sum(v[p] for p in positions)
            low, high = wilson_interval(correct, len(positions))
            out[bucket][model] = {"n": len(positions), "accuracy": correct / len(positions),
                                  "ci_low": low, "ci_high": high}
    return out


def pick_traces(ids: Sequence[str], verdicts: dict[str, list[bool]], count: int) -> list[int]:
    """Positions of questions worth reading: first those where the models disagree, then the first others."""
    disagree = [p for p in range(len(ids)) if len({v[p] for v in verdicts.values()}) > 1]
    rest = [p for p in range(len(ids)) if p not in set(disagree)]
    return (disagree + rest)[:count]


# ----------------------------------------------------------------------------------------------------------
# Figures
# ----------------------------------------------------------------------------------------------------------


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def difficulty_figure(by_difficulty: dict[str, dict[str, dict[str, float]]]) -> str:
    """Grouped bars: accuracy per difficulty bucket and model, with Wilson 95 % error bars (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buckets = list(by_difficulty)
    models = list(next(iter(by_difficulty.values()))) if buckets else []
    fig, ax = plt.subplots(figsize=(7, 3.2))
    width = 0.8 / max(len(models), 1)
    for j, model in enumerate(models):
        xs = [i + (j - (len(models) - 1) / 2) * width for i in range(len(buckets))]
        cells = [by_difficulty[b][model] for b in buckets]
        acc = [100 * c["accuracy"] for c in cells]
        err = [[100 * (c["accuracy"] - c["ci_low"]) for c in cells],
               [100 * (c["ci_high"] - c["accuracy"]) for c in cells]]  # [2, buckets]: below, above
        ax.bar(xs, acc, width, yerr=err, capsize=2, label=model, color=COLOURS.get(model))
    ax.set_xticks(range(len(buckets)), [f"{b} steps\n(n={by_difficulty[b][models[0]]['n']})" for b in buckets]
                  if models else [])
    ax.set_ylabel("accuracy (%)")
    ax.set_title("GSM8K accuracy by reference-solution steps (Wilson 95 % bars)")
    ax.legend(frameon=False)
    return _png(fig)


def curves_figure(history: list[dict[str, float]]) -> str | None:
    """One panel per logged GRPO curve (reward, per-reward means, KL) against the step (base64 PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [(key, label) for key, label in CURVES if any(key in h for h in history)]
    if not present:
        return None
    fig, axes = plt.subplots(1, len(present), figsize=(3.2 * len(present), 2.8), squeeze=False)
    for ax, (key, label) in zip(axes[0], present, strict=True):
        points = [(h["step"], h[key]) for h in history if key in h and "step" in h]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker=".", color="#d62728")
        ax.set_title(label)
        ax.set_xlabel("GRPO step")
        ax.grid(alpha=0.3)
    return _png(fig)


# ----------------------------------------------------------------------------------------------------------
# HTML
# ----------------------------------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1200px;color:#222;background:#fff}
h1{font-size:22px}h2{font-size:18px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse;font-size:13px;margin:8px 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
th{background:#f0f3f7}td:first-child,th:first-child{text-align:left}
.note{color:#555;font-size:13px}.q{background:#f7f7f7;padding:8px;border-left:4px solid #1f77b4;font-size:14px}
.traces{display:grid;gap:8px;margin-bottom:18px}
.trace{border:1px solid #ccc;padding:6px;font-size:12px;white-space:pre-wrap;font-family:ui-monospace,monospace}
.right{border-top:4px solid #2ca02c}.wrong{border-top:4px solid #d62728}.badge{font-weight:bold}
img{max-width:100%}
"""


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _p(x: float) -> str:
    return f"{x:.2g}" if x < 0.001 else f"{x:.3f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def render_html(
    samples: dict[str, list[dict]],
    metrics: dict[str, dict],
    steps: dict[str, int],
    history: list[dict[str, float]],
    history_source: str,
    title: str = "reasoning-rl: GSM8K evaluation report",
    num_traces: int = 6,
    meta: dict[str, str] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The report as one HTML string, and the numbers in it (for metrics/eval_report.json)."""
    ids, verdicts = aligned_verdicts(samples)
    rows = model_rows(samples, metrics)
    pairs = paired_tests(verdicts)
    flexible_pairs = paired_tests(aligned_verdicts(samples, "correct_flexible")[1])
    sampled = sampled_pairs(samples)
    by_difficulty = accuracy_by_difficulty(ids, verdicts, steps)
    esc = html.escape
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title><style>{_CSS}</style>",
             f"</head><body><h1>{esc(title)}</h1>"]
    info = {"questions (shared by all models)": str(len(ids)), **(meta or {})}
    parts.append("<p class='note'>" + " · ".join(f"{esc(k)}: {esc(v)}" for k, v in info.items()) + "</p>")

    ####  the model table
    sampling = [k for k in ("pass1_strict", "pass1_flexible") if any(k in r for r in rows)]
    sampling += sorted({k for r in rows for k in r if k.startswith(("pass@", "maj@"))},
                       key=lambda k: (k.split("@")[0], int(k.split("@")[1])))
    head = ["model", "strict accuracy", "95 % Wilson CI", "flexible accuracy", "95 % Wilson CI", "format rate",
            "mean think words", "no <answer>", "unreadable answer", "mean tokens",
            *[k.replace("pass1_", "sampled pass@1 ") for k in sampling]]
    table = [
        [esc(r["model"]), _pct(r["accuracy"]), f"[{_pct(r['ci_low'])}, {_pct(r['ci_high'])}]",
         _pct(r["flexible_accuracy"]), f"[{_pct(r['flexible_ci_low'])}, {_pct(r['flexible_ci_high'])}]",
         _pct(r["format_rate"]),
         f"{r.get('mean_think_words', 0.0):.0f}", _pct(r.get("no_answer_block_rate", 0.0)),
         _pct(r.get("unreadable_answer_rate", 0.0)), f"{r['mean_tokens']:.0f}",
         *[_pct(r[k]) if k in r else "—" for k in sampling]]
        for r in rows
    ]
    parts.append("<h2>Models on the same questions</h2>" + _table(head, table))
    parts.append("<p class='note'>Accuracies and diagnostics: greedy decoding. Strict: a well-formed completion "
                 "whose answer equals the gold (the reward parser). Flexible: the last number anywhere in the "
                 "completion equals the gold (lm-evaluation-harness's GSM8K flexible-extract): the maths, whatever "
                 "the format. Sampled pass@1 (DeepSeek-R1): the mean over questions of the share of the k samples "
                 "that are right; pass@k (unbiased, Chen et al. 2021) and maj@k come from the same samples.</p>")

    ####  the pre-registered test: sampled pass@1
    if sampled:
        head = ["pair (A vs B)", "rule", "Δ pass@1 (B − A)", "95 % CI (bootstrap)", "sign-flip p", "k", "questions"]
        table = [[esc(p["pair"]), kind, f"{100 * p[kind]['delta']:+.1f} pt",
                  f"[{100 * p[kind]['ci_low']:+.1f}, {100 * p[kind]['ci_high']:+.1f}] pt", _p(p[kind]["p"]),
                  str(p[kind]["k"]), str(p[kind]["n"])] for p in sampled for kind in ("strict", "flexible")]
        parts.append("<h2>Paired test on sampled pass@1 (the pre-registered protocol)</h2>" + _table(head, table))
        parts.append("<p class='note'>Per question, the share of right samples; the test is on the per-question "
                     "differences: a two-sided sign-flip permutation test (10,000 sign patterns) and a percentile "
                     "bootstrap over questions (10,000 resamples). Protocol: docs/evaluation.md.</p>")

    ####  paired tests
    head = ["pair (A vs B)", "A right, B wrong", "B right, A wrong", "Δ accuracy (B − A)", "McNemar exact p",
            "χ² (cc)", "χ² p"]
    table = [[esc(p["pair"]) + f" ({kind})", str(p["only_a"]), str(p["only_b"]), f"{100 * p['delta']:+.1f} pt",
              _p(p["p_exact"]), f"{p['chi2']:.2f}", _p(p["p_chi2"])]
             for kind, group in (("strict", pairs), ("flexible", flexible_pairs)) for p in group]
    parts.append("<h2>Paired tests on greedy verdicts (McNemar, same questions)</h2>" + _table(head, table))
    parts.append("<p class='note'>Only the discordant questions (one model right, the other wrong) carry "
                 "information; the exact p is the two-sided binomial test on them, the χ² uses Edwards' "
                 "continuity correction. p-values are not corrected for the number of pairs.</p>")

    ####  difficulty
    if by_difficulty:
        models = list(verdicts)
        head = ["steps in reference", "questions", *models]
        table = [[esc(b), str(cells[models[0]]["n"]),
                  *[f"{_pct(cells[m]['accuracy'])} [{_pct(cells[m]['ci_low'])}, {_pct(cells[m]['ci_high'])}]"
                    for m in models]] for b, cells in by_difficulty.items()]
        parts.append("<h2>Accuracy by difficulty</h2>" + _table(head, table))
        figure = difficulty_figure(by_difficulty)
        parts.append(f"<img alt='accuracy by difficulty' src='data:image/png;base64,{figure}'>")
        parts.append("<p class='note'>Difficulty = non-empty lines of the GSM8K reference solution, one calculation "
                     "step per line (as in complexity-based prompting, Fu et al. 2022).</p>")

    ####  GRPO curves
    parts.append("<h2>GRPO training curves</h2>")
    curves = curves_figure(history)
    if curves is None:
        parts.append("<p class='note'>No GRPO history found.</p>")
    else:
        parts.append(f"<img alt='GRPO curves' src='data:image/png;base64,{curves}'>")
        no_kl = "" if any("kl" in h for h in history) else " No KL curve: TRL logs KL only when grpo.beta &gt; 0."
        parts.append(f"<p class='note'>Source: {esc(history_source)}.{no_kl}</p>")

    ####  traces
    parts.append("<h2>Side by side: the same questions</h2>")
    by_model = {m: {r["id"]: r for r in recs} for m, recs in samples.items()}
    cols = f"grid-template-columns:repeat({len(samples)},1fr)"
    for pos in pick_traces(ids, verdicts, num_traces):
        qid = ids[pos]
        first = by_model[next(iter(samples))][qid]
        parts.append(f"<div class='q'><b>{esc(qid)}</b>: {esc(first['question'])}<br><b>gold:</b> "
                     f"{esc(str(first['gold']))}</div><div class='traces' style='{cols}'>")
        for model in samples:
            rec = by_model[model][qid]
            verdict = "right" if rec["correct"] else "wrong"
            parts.append(f"<div class='trace {verdict}'><span class='badge'>{esc(model)}: {verdict}</span>\n"
                         f"{esc(rec['completion'])}</div>")
        parts.append("</div>")
    parts.append("</body></html>")
    summary = {"questions": len(ids), "models": {r["model"]: r for r in rows},
               "paired": {p["pair"]: p for p in pairs}, "paired_flexible": {p["pair"]: p for p in flexible_pairs},
               "paired_sampled": {p["pair"]: p for p in sampled},
               "by_difficulty": by_difficulty,
               "history_source": history_source}
    return "".join(parts), summary


# ----------------------------------------------------------------------------------------------------------
# Inputs: the evaluate stages' files, the GRPO curves from MLflow or the history file
# ----------------------------------------------------------------------------------------------------------


def grpo_history_from_mlflow(adapter_sha256: str, tracking_uri: str | None = None,
                             experiment: str | None = None) -> tuple[list[dict[str, float]], str] | None:
    """Per-step GRPO curves of the MLflow run that trained the adapter with this sha256, or None.

    The run is found by content (tag `adapter_sha256`, set by `tracking.log_adapter`), so a cached GRPO stage
    still points at the run that produced the weights being evaluated.
    """
    from mlflow.tracking import MlflowClient

    from reasoning_rl.ops.tracking import experiment_name
    from reasoning_rl.ops.tracking import tracking_uri as default_uri

    client = MlflowClient(tracking_uri or default_uri())
    exp = client.get_experiment_by_name(experiment or experiment_name())
    if exp is None:
        return None
    runs = client.search_runs(
        [exp.experiment_id],
        f"tags.stage = 'grpo' and tags.adapter_sha256 = '{adapter_sha256}' and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    run_id = runs[0].info.run_id
    by_step: dict[int, dict[str, float]] = {}
    for key, _ in CURVES:
        for m in client.get_metric_history(run_id, key):
            by_step.setdefault(m.step, {"step": float(m.step)})[key] = m.value
    if not by_step:
        return None
    return [by_step[s] for s in sorted(by_step)], f"MLflow run {run_id} (GRPO stage, matched by adapter sha256)"


def load_inputs(models: Sequence[str], samples_path, metrics_path, test_path, history_path,
                grpo_adapter_sha256: str | None = None) -> dict[str, Any]:
    """Everything `render_html` needs, read from the pipeline's files.

    `samples_path(model)` / `metrics_path(model)` give a model's evaluate outputs (models without samples are
    skipped); difficulty comes from the reference solutions in `test_path`; the GRPO curves from the GRPO stage's
    history file `history_path` (a DVC dependency of the report stage), or, only when that file is missing and
    `grpo_adapter_sha256` is given, from the MLflow run that trained the adapter.
    """
    import json
    from pathlib import Path

    from reasoning_rl.eval.metrics import reasoning_steps
    from reasoning_rl.task.gsm8k import read_records

    samples = {m: read_records(samples_path(m)) for m in models if Path(samples_path(m)).is_file()}
    if not samples:
        raise FileNotFoundError(f"no evaluation samples for any of {list(models)}: run the evaluate stages first")
    metrics = {m: json.loads(Path(metrics_path(m)).read_text()) for m in samples if Path(metrics_path(m)).is_file()}
    steps = {}
    if Path(test_path).is_file():
        steps = {r["id"]: reasoning_steps(r["reasoning"]) for r in read_records(test_path)}
    found = None
    if Path(history_path).is_file():
        found = json.loads(Path(history_path).read_text()), str(history_path)
    elif grpo_adapter_sha256:
        found = grpo_history_from_mlflow(grpo_adapter_sha256)
    history, source = found or ([], "none")
    return {"samples": samples, "metrics": metrics, "steps": steps, "history": history, "history_source": source}
