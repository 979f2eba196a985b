"""benchmarks/grpo_seed.py: a second seed's SFT -> GRPO comparison has the shape of metrics/paired.json's."""


def record(i: int, correct: bool, share: float) -> dict:
    return {"id": f"q{i}", "correct": correct, "correct_flexible": correct, "samples": ["a", "b", "c", "d"],
            "sampled_strict": share, "sampled_flexible": share}


def test_compare_matches_the_report_stages_pair():
    from benchmarks.grpo_seed import compare

    sft = [record(i, i < 2, 0.25) for i in range(6)]
    grpo = [record(i, i < 3, 0.5) for i in range(6)]
    out = compare(sft, grpo)
    assert out["strict"] == {"p": 1.0, "delta": 1 / 6, "only_a": 0, "only_b": 1}
    assert (out["sampled"]["strict"]["delta"], out["sampled"]["strict"]["k"]) == (0.25, 4)


def test_training_windows_average_each_20_steps():
    from benchmarks.grpo_seed import training_windows

    history = [{"step": i, "rewards/correctness/mean": 0.1 if i <= 20 else 0.3, "frac_reward_zero_std": 0.5,
                "completions/mean_length": 90.0} for i in range(1, 41)] + [{"step": 40, "train_loss": 0.1}]
    rows = training_windows(history)
    assert [(r["steps"], r["correctness"]) for r in rows] == [("1-20", 0.1), ("21-40", 0.3)]


def run_main(monkeypatch, tmp_path, *argv: str) -> str:
    import shutil
    import sys

    import pytest

    from benchmarks import grpo_seed

    shutil.copy("params.yaml", tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["grpo_seed", *argv])
    with pytest.raises(SystemExit) as exc:
        grpo_seed.main()
    return str(exc.value)


def test_training_names_the_missing_sft_adapter(monkeypatch, tmp_path):
    assert run_main(monkeypatch, tmp_path, "--seed", "7") == "models/sft/adapter is missing: run `dvc repro` first"


def test_a_trained_seed_needs_only_the_pipelines_evaluation(monkeypatch, tmp_path):
    out = tmp_path / "runs" / "grpo_seed7"
    (out / "adapter").mkdir(parents=True)
    (out / "adapter" / "adapter_config.json").write_text("{}")
    (out / "eval.json").write_text("{}")
    message = run_main(monkeypatch, tmp_path, "--seed", "7")
    assert message == "reports/eval_sft.jsonl is missing: run `dvc repro` first"
