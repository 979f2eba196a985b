"""benchmarks.compare_ablations: variants from several ablation reports, paired against one reference."""

import json

import pytest

from benchmarks.compare_ablations import against, load_variants


def variant(name: str, correct: list[bool]) -> dict:
    return {"variant": name, "val": {"grpo": {"correct": correct, "correct_flexible": correct}}}


def report(tmp_path, file: str, split: str, *rows: dict):
    path = tmp_path / file
    path.write_text(json.dumps({"split": split, "variants": list(rows)}))
    return path


def test_against_counts_questions_only_one_side_gets_right():
    ref = variant("ref", [True, True, False, False, True])
    row = variant("new", [True, False, True, True, True])
    cmp = against(row, ref)["strict"]
    assert (cmp["only_reference"], cmp["only_variant"], cmp["delta"]) == (1, 2, pytest.approx(0.2))


def test_reports_on_different_splits_are_refused(tmp_path):
    a = report(tmp_path, "a.json", "validation (first 200)", variant("x", [True]))
    b = report(tmp_path, "b.json", "validation (first 100)", variant("y", [True]))
    with pytest.raises(SystemExit, match="first 100"):
        load_variants([a, b])
