"""GSM8K parsing, prompt building and the split: pure functions, errors naming file:line."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from reasoning_rl.task.formatting import SYSTEM_PROMPT, parse_completion
from reasoning_rl.task.gsm8k import (
    DataError,
    build_prompt,
    load_split,
    parse_answer_field,
    split_train_val,
    to_record,
)

NATALIA = {
    "question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
    "How many clips did Natalia sell altogether in April and May?",
    "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\nNatalia sold 48+24 = <<48+24=72>>72 clips "
    "altogether in April and May.\n#### 72",
}


def write(tmp_path, name, lines):
    path = tmp_path / name
    path.write_bytes(b"".join(line if isinstance(line, bytes) else line.encode() + b"\n" for line in lines))
    return tmp_path


def test_parse_answer_strips_calculator_annotations():
    reasoning, final = parse_answer_field(NATALIA["answer"])
    assert "<<" not in reasoning and "48/2 = 24 clips" in reasoning
    assert final == "72"


def test_parse_answer_removes_thousands_commas():
    assert parse_answer_field("a lot\n#### 1,234,567")[1] == "1234567"


def test_parse_answer_without_marker_raises():
    with pytest.raises(ValueError, match="no '####'"):
        parse_answer_field("the answer is 72")


def test_build_prompt_has_system_then_user():
    prompt = build_prompt("  What is 2+2?  ")
    assert [m["role"] for m in prompt] == ["system", "user"]
    assert prompt[0]["content"] == SYSTEM_PROMPT and prompt[1]["content"] == "What is 2+2?"


def test_record_target_is_well_formed(tmp_path):
    example = load_split(write(tmp_path, "train.jsonl", [json.dumps(NATALIA)]), "train")[0]
    record = to_record(example)
    parsed = parse_completion(record["completion"][0]["content"])
    assert parsed is not None and parsed.answer == "72"


def test_load_split_bad_json_names_file_and_line(tmp_path):
    write(tmp_path, "train.jsonl", [json.dumps(NATALIA), '{"question": "x", "answer": '])
    with pytest.raises(DataError, match=r"train.jsonl:2: invalid JSON"):
        load_split(tmp_path, "train")


def test_load_split_missing_field_names_file_and_line(tmp_path):
    write(tmp_path, "train.jsonl", [json.dumps({"question": "x"})])
    with pytest.raises(DataError, match=r"train.jsonl:1: missing or empty field 'answer'"):
        load_split(tmp_path, "train")


def test_load_split_no_marker_names_file_and_line(tmp_path):
    write(tmp_path, "test.jsonl", [json.dumps(NATALIA), json.dumps({"question": "q", "answer": "just 5"})])
    with pytest.raises(DataError, match=r"test.jsonl:2: no '####'"):
        load_split(tmp_path, "test")


def test_load_split_non_utf8_names_file_and_line(tmp_path):
    write(tmp_path, "train.jsonl", [json.dumps(NATALIA), b'{"question": "\xff"}\n'])
    with pytest.raises(DataError, match=r"train.jsonl:2: not valid UTF-8"):
        load_split(tmp_path, "train")


def test_load_split_empty_file_is_error(tmp_path):
    (tmp_path / "train.jsonl").write_text("")
    with pytest.raises(DataError, match="no rows"):
        load_split(tmp_path, "train")


def test_load_split_missing_file_is_error(tmp_path):
    with pytest.raises(DataError, match="file not found"):
        load_split(tmp_path, "train")


def test_split_is_deterministic_for_a_seed(gsm8k_dir):
    rows = load_split(gsm8k_dir, "test")
    a = split_train_val(rows, 50, seed=1)
    b = split_train_val(rows, 50, seed=1)
    c = split_train_val(rows, 50, seed=2)
    assert a == b and a != c and len(a[1]) == 50 and len(a[0]) == len(rows) - 50


def test_real_gsm8k_loads_all_rows(gsm8k_dir):
    assert len(load_split(gsm8k_dir, "train")) == 7473
    assert len(load_split(gsm8k_dir, "test")) == 1319


# One bad input per row: (lines of train.jsonl, problem kind, the message naming file:line and the problem).
GOOD = json.dumps(NATALIA)
BAD_INPUTS = [
    # A download cut short: the last line stops mid-string, with no newline.
    ("truncated_line", [GOOD, GOOD[:50].encode()], "bad_json", r"train.jsonl:2: invalid JSON \(Unterminated string"),
    ("non_utf8_byte", [GOOD, b'{"question": "caf\xe9", "answer": "x\\n#### 1"}\n'], "not_utf8",
     r"train.jsonl:2: not valid UTF-8"),
    ("missing_field", [GOOD, json.dumps({"question": "How many?"})], "missing_field",
     r"train.jsonl:2: missing or empty field 'answer'"),
    ("no_final_marker", [GOOD, json.dumps({"question": "q", "answer": "it is 5"})], "bad_answer",
     r"train.jsonl:2: no '####' final-answer marker"),
    ("duplicated_question", [GOOD, json.dumps({**NATALIA, "answer": "other\n#### 7"})], "duplicate",
     r"train.jsonl:2: duplicated question \(same as line 1\)"),
    ("not_an_object", [GOOD, "[1, 2]"], "not_an_object", r"train.jsonl:2: expected a JSON object, got list"),
]


@pytest.mark.parametrize(("case", "lines", "problem", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_load_split_bad_input_stops_naming_line(tmp_path, case, lines, problem, message):
    with pytest.raises(DataError, match=message) as err:
        load_split(write(tmp_path, "train.jsonl", lines), "train")
    assert err.value.problem == problem


@pytest.mark.parametrize(("case", "lines", "problem", "message"), BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_load_split_bad_input_skipped_and_counted(tmp_path, case, lines, problem, message):
    skipped: Counter[str] = Counter()
    rows = load_split(write(tmp_path, "train.jsonl", lines), "train", skip_bad_rows=True, skipped=skipped)
    assert len(rows) == 1 and rows[0].answer == "72"
    assert skipped == {f"train.{problem}": 1}


def test_load_split_empty_file_is_error_even_when_skipping(tmp_path):
    (tmp_path / "train.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="train.jsonl: no rows"):
        load_split(tmp_path, "train", skip_bad_rows=True)


def test_load_split_all_rows_bad_is_error_when_skipping(tmp_path):
    write(tmp_path, "train.jsonl", ["{", "[]"])
    with pytest.raises(DataError, match="no rows"):
        load_split(tmp_path, "train", skip_bad_rows=True, skipped=Counter())
