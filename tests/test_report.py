"""The HTML report: numbers, self-containment, the MLflow curve source, and rendering in headless Chromium."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from reasoning_rl.eval.report import grpo_history_from_mlflow, load_inputs, render_html


def sample(qid: str, correct: bool, fmt: bool = True) -> dict:
    answer = "18" if correct else "7"
    text = f"<think>\nstep one {qid}\n</think>\n<answer>{answer}</answer>" if fmt else f"I think {answer} <b>"
    return {"id": qid, "question": f"How many eggs? ({qid}) <script>alert(1)</script>", "gold": "18",
            "completion": text, "correct": correct, "format_ok": fmt, "num_tokens": 20}


def synthetic_inputs() -> dict:
    ids = [f"q{i}" for i in range(12)]
    base = [sample(q, False, fmt=False) for q in ids]
    grpo = [sample(q, i < 6) for i, q in enumerate(ids)]  # right on 6, base on none: 6 discordant pairs
    history = [{"step": float(s), "reward": 0.5 + s / 10, "rewards/format/mean": 0.5 + s / 20} for s in range(1, 6)]
    return {"samples": {"base": base, "grpo": grpo}, "metrics": {"grpo": {"pass@1": 0.4, "maj@4": 0.5}},
            "steps": {q: 2 + i % 5 for i, q in enumerate(ids)}, "history": history, "history_source": "test"}


def test_render_html_paired_test_counts_discordant_questions():
    _, summary = render_html(**synthetic_inputs())
    pair = summary["paired"]["base vs grpo"]
    assert (pair["only_a"], pair["only_b"]) == (0, 6)
    assert pair["p_exact"] == pytest.approx(2 / 2**6)  # two-sided exact binomial: 2 * (1/2)^6
    assert summary["models"]["grpo"]["accuracy"] == 0.5 and summary["models"]["grpo"]["pass@1"] == 0.4


def test_render_html_is_self_contained_and_escapes_model_text():
    page, _ = render_html(**synthetic_inputs())
    assert "<script>" not in page  # the question's script tag is shown as text, never run
    assert not re.search(r"""(src|href)\s*=\s*['"]?(https?:)?//""", page)  # nothing fetched from a network
    assert page.count("data:image/png;base64,") == 2  # difficulty bars and GRPO curves
    assert "maj@4" in page and "McNemar" in page


def with_samples(records: list[dict], shares: list[float]) -> list[dict]:
    """Records of a sampled model: 4 samples each, `shares` of them right (strict and flexible alike)."""
    return [r | {"samples": ["x"] * 4, "sampled_strict": s, "sampled_flexible": s}
            for r, s in zip(records, shares, strict=True)]


def test_render_html_tests_sampled_pass1_between_sampled_models_only():
    inputs = synthetic_inputs()
    grpo = inputs["samples"]["grpo"]
    inputs["samples"] = {"base": inputs["samples"]["base"], "sft": with_samples(grpo, [0.25] * 12),
                         "grpo": with_samples(grpo, [0.5] * 6 + [0.25] * 6)}
    page, summary = render_html(**inputs)
    assert list(summary["paired_sampled"]) == ["sft vs grpo"]  # base is not sampled
    strict = summary["paired_sampled"]["sft vs grpo"]["strict"]
    assert strict["delta"] == pytest.approx(0.125) and (strict["k"], strict["n"]) == (4, 12)
    assert strict["p"] == pytest.approx(2 / 2**6)  # 6 equal positive differences: exact sign-flip p
    assert "sampled pass@1" in page


def test_render_html_by_difficulty_buckets_every_question():
    _, summary = render_html(**synthetic_inputs())
    assert sum(cells["grpo"]["n"] for cells in summary["by_difficulty"].values()) == 12


def test_grpo_history_from_mlflow_finds_the_run_by_adapter_hash(tmp_path):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)  # a client, not mlflow.set_tracking_uri: no global state leaks to other tests
    run = client.create_run(client.create_experiment("report-test"), tags={"stage": "grpo", "adapter_sha256": "abc123"})
    for step in (1, 2, 3):  # three steps: enough to see the order and both keys come back
        client.log_metric(run.info.run_id, "reward", step / 10, step=step)
        client.log_metric(run.info.run_id, "kl", step / 100, step=step)
    client.set_terminated(run.info.run_id)
    history, source = grpo_history_from_mlflow("abc123", tracking_uri=uri, experiment="report-test")
    assert [h["reward"] for h in history] == [0.1, 0.2, 0.3] and history[2]["kl"] == 0.03
    assert "MLflow run" in source
    assert grpo_history_from_mlflow("other", tracking_uri=uri, experiment="report-test") is None


def test_load_inputs_falls_back_to_the_history_file_and_says_so(tmp_path):
    import json

    inputs = synthetic_inputs()
    for model, rows in inputs["samples"].items():
        (tmp_path / f"s_{model}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "h.json").write_text(json.dumps(inputs["history"]))
    got = load_inputs(["base", "sft", "grpo"], lambda m: tmp_path / f"s_{m}.jsonl", lambda m: tmp_path / f"m_{m}.json",
                      tmp_path / "missing_test.jsonl", tmp_path / "h.json")
    assert list(got["samples"]) == ["base", "grpo"]  # sft has no samples: skipped
    assert got["history"] == inputs["history"] and str(tmp_path / "h.json") in got["history_source"]


# ---- a real browser ----------------------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, out: Path):
    """Render `page` in headless Chromium with no network and return the screenshot as an [H, W, C] array."""
    import matplotlib.image

    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         "--host-resolver-rules=MAP * ~NOTFOUND",  # no DNS: anything fetched from a network would fail
         "--window-size=1200,1600", f"--screenshot={out}", page.resolve().as_uri()],
        check=True, capture_output=True, timeout=120,
    )
    return matplotlib.image.imread(out)[:, :, :3]


def ink(pixels) -> tuple[float, int]:
    """(fraction of pixels that are not white, number of distinct colours)."""
    import numpy as np

    non_white = float((pixels < 0.95).any(axis=2).mean())
    colours = len(np.unique((pixels * 255).astype(np.uint8).reshape(-1, 3), axis=0))
    return non_white, colours


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium(tmp_path):
    page, _ = render_html(**synthetic_inputs())
    (tmp_path / "report.html").write_text(page, encoding="utf-8")
    (tmp_path / "blank.html").write_text("<!doctype html><html><body></body></html>")
    non_white, colours = ink(screenshot(tmp_path / "report.html", tmp_path / "report.png"))
    blank_non_white, blank_colours = ink(screenshot(tmp_path / "blank.html", tmp_path / "blank.png"))
    assert blank_non_white == 0.0 and blank_colours == 1  # the check does see an empty page as empty
    assert non_white > 0.05 and colours > 100  # text, tables and the embedded figures were drawn
