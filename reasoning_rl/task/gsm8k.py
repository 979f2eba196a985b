"""GSM8K: parse the raw rows, build chat prompts and SFT targets in the project's format.

A raw GSM8K row (openai/grade-school-math, `train.jsonl` line 1)::

    {"question": "Natalia sold clips to 48 of her friends in April, and then she sold half as many
                  clips in May. How many clips did Natalia sell altogether in April and May?",
     "answer": "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\\nNatalia sold 48+24 = <<48+24=72>>72
                clips altogether in April and May.\\n#### 72"}

Normalisation rules (source: the GSM8K paper, arXiv 2110.14168, §2 and its repo's README): the final answer
is the text after `#### `; calculator annotations `<<48/2=24>>` were inserted by the annotation tool and are
not part of the human-written solution, so they are removed; thousands commas in the final answer are
removed (`1,000` → `1000`), as the dataset's own grader does (`grade_school_math/dataset.py`).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from reasoning_rl.task.formatting import SYSTEM_PROMPT, format_target

log = logging.getLogger(__name__)

HUB_DATASET = ("openai/gsm8k", "main")
_CALC_RE = re.compile(r"<<[^<>]*>>")
_FINAL_MARK = "####"


class DataError(ValueError):
    """A malformed data row; the message names file:line and the problem, `problem` a short kind."""

    def __init__(self, message: str, problem: str = "other") -> None:
        super().__init__(message)
        self.problem = problem


@dataclass(frozen=True)
class Example:
    """One GSM8K problem in the project's shape."""

    id: str
    question: str
    reasoning: str
    answer: str

    def prompt(self) -> list[dict[str, str]]:
        return build_prompt(self.question)

    def target(self) -> str:
        return format_target(self.reasoning, self.answer)


def build_prompt(question: str) -> list[dict[str, str]]:
    """The chat prompt every stage and model uses: the format-stating system prompt, then the question."""
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": question.strip()},
    ]


def parse_answer_field(answer: str) -> tuple[str, str]:
    """Split GSM8K's `answer` field into (reasoning without calculator annotations, final answer).

    >>> parse_answer_field("48/2 = <<48/2=24>>24 clips.\\n#### 1,024")
    ('48/2 = 24 clips.', '1024')
    """
    if _FINAL_MARK not in answer:
        raise ValueError("no '####' final-answer marker in the answer field")
    reasoning, _, final = answer.rpartition(_FINAL_MARK)
    final = final.strip().replace(",", "")
    if not final:
        raise ValueError("empty final answer after '####'")
    reasoning = _CALC_RE.sub("", reasoning).strip()
    if not reasoning:
        raise ValueError("empty reasoning before '####'")
    return reasoning, final


def parse_row(row: object, where: str) -> Example:
    """Turn one decoded JSON row into an Example; `where` is `file:line` for error messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}", "not_an_object")
    for field in ("question", "answer"):
        value = row.get(field)
        if not isinstance(value, str) or not value.strip():
            raise DataError(f"{where}: missing or empty field {field!r}", "missing_field")
    try:
        reasoning, final = parse_answer_field(row["answer"])
    except ValueError as err:
        raise DataError(f"{where}: {err}", "bad_answer") from None
    return Example(id=where, question=row["question"].strip(), reasoning=reasoning, answer=final)


def _decode_lines(path: Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, decoded JSON or the DataError saying why not) for each non-blank line."""
    with open(path, "rb") as fh:
        for lineno, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                reason = f"not valid UTF-8 ({err.reason} at byte {err.start})"
                yield lineno, DataError(f"{path}:{lineno}: {reason}", "not_utf8")
                continue
            if not line.strip():
                continue
            try:
                yield lineno, json.loads(line)
            except json.JSONDecodeError as err:
                # A truncated line (a download cut short) lands here too: "Unterminated string ...".
                yield lineno, DataError(f"{path}:{lineno}: invalid JSON ({err.msg}, column {err.colno})", "bad_json")


def read_jsonl(path: Path) -> Iterator[tuple[int, object]]:
    """Yield (line number, decoded JSON) for each non-blank line; the first bad line raises, naming file:line."""
    for lineno, row in _decode_lines(path):
        if isinstance(row, DataError):
            raise row
        yield lineno, row


def load_split(
    data_dir: Path, split: str, skip_bad_rows: bool = False, skipped: Counter[str] | None = None
) -> list[Example]:
    """Read `<data_dir>/<split>.jsonl` (GSM8K layout) into Examples.

    A malformed row (invalid UTF-8 or JSON, not an object, missing field, no `####` answer, a question seen
    on an earlier line) stops with file:line and the problem; with `skip_bad_rows` it is left out and counted
    in `skipped` under `<split>.<problem>`. A missing file or one without a single good row is always an error.
    """
    path = Path(data_dir) / f"{split}.jsonl"
    if not path.is_file():
        raise DataError(f"{path}: file not found", "missing_file")
    examples: list[Example] = []
    seen: dict[str, int] = {}
    for lineno, row in _decode_lines(path):
        try:
            if isinstance(row, DataError):
                raise row
            example = parse_row(row, f"{path.name}:{lineno}")
            if example.question in seen:
                raise DataError(
                    f"{path}:{lineno}: duplicated question (same as line {seen[example.question]})", "duplicate"
                )
        except DataError as err:
            if not skip_bad_rows:
                raise
            log.warning("skipping %s", err)
            if skipped is not None:
                skipped[f"{split}.{err.problem}"] += 1
            continue
        seen[example.question] = lineno
        examples.append(example)
    if not examples:
        raise DataError(f"{path}: no rows", "empty")
    return examples


def load_from_hub(split: str) -> list[Example]:
    """GSM8K from the Hugging Face hub (`openai/gsm8k`, config `main`) for users who are online."""
    from datasets import load_dataset

    ds = load_dataset(*HUB_DATASET, split=split)
    return [parse_row(row, f"{HUB_DATASET[0]}[{split}]:{i}") for i, row in enumerate(ds)]


def load_gsm8k(
    data_dir: str | Path | None, split: str, skip_bad_rows: bool = False, skipped: Counter[str] | None = None
) -> list[Example]:
    """Local folder when given (or present), else the hub; a clear error when neither can be had."""
    if data_dir is not None:
        return load_split(Path(data_dir), split, skip_bad_rows, skipped)
    try:
        return load_from_hub(split)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one actionable message
        raise DataError(
            f"GSM8K {split!r} split: no local data_dir configured and the hub load failed ({err}). "
            "Set prepare.data_dir to a folder holding train.jsonl/test.jsonl."
        ) from err


def split_train_val(examples: list[Example], val_size: int, seed: int) -> tuple[list[Example], list[Example]]:
    """Deterministic shuffle with `seed`, then hold out `val_size` rows for validation."""
    if val_size >= len(examples):
        raise ValueError(f"val_size ({val_size}) must be smaller than the number of rows ({len(examples)})")
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    shuffled = [examples[i] for i in order]
    return shuffled[val_size:], shuffled[:val_size]


def to_record(example: Example) -> dict[str, object]:
    """The row written to data/prepared/*.jsonl: TRL's conversational prompt-completion format plus gold."""
    return {
        **asdict(example),
        "prompt": example.prompt(),
        "completion": [{"role": "assistant", "content": example.target()}],
    }


def write_jsonl(path: Path, records: list[dict[str, object]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False) + "\n")


def read_records(path: Path) -> list[dict[str, object]]:
    return [row for _, row in read_jsonl(Path(path))]


def question_set(rows: list[dict]) -> str:
    """A short fingerprint of which questions, in which order: accuracies compare only within one set."""
    import hashlib

    return hashlib.sha256(json.dumps([r["id"] for r in rows]).encode()).hexdigest()[:16]
