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
