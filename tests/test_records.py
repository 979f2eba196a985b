"""Committed benchmark records: each one in benchmarks/results/ is indexed and cited, and each one cited exists.

benchmarks/results/ holds the records the docs quote; reports/ holds only the pipeline's own outputs (dvc.yaml).
A record counts as cited when README.md or a page of docs/ (docs/LOG.md included: history may point at a record)
names it; the index benchmarks/results/README.md must list it too, but being listed there is not a citation.
"""

from __future__ import annotations

import fnmatch
import re
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
INDEX = RESULTS / "README.md"
REPORTS = ROOT / "reports"

RECORDS = sorted(p.name for p in RESULTS.iterdir() if p.is_file() and p.name != INDEX.name)
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# a repo-relative path into either folder, as prose or commands spell it: benchmarks/results/x.json,
# reports/eval_samples_<model>.jsonl (a <placeholder> or * stands for any name); with a commit in front
# (49d6eb7:reports/x.json, as `git show` takes it) it names a deleted record in git history, not a file here
CITED_PATH = re.compile(r"(?<![\w/.-])(?:([0-9a-f]{7,40}):)?(benchmarks/results|reports)/([\w.<>*-]+)")


def rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def indexed() -> set[str]:
    """File names in the first column of the index table: | `name` | ..."""
    return set(re.findall(r"^\| `([^`]+)` \|", INDEX.read_text(), flags=re.MULTILINE))


def citing(name: str) -> list[str]:
    word = re.compile(rf"(?<![\w.-]){re.escape(name)}(?![\w-])")
    return [rel(doc) for doc in DOCS if word.search(doc.read_text())]


def dvc_outputs() -> set[str]:
    """Every path dvc.yaml declares as a stage's outs, metrics or plots."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    declared = set()
    for stage in stages.values():
        keys = list(stage.get("foreach", [None]))  # a foreach stage declares its outputs once, per ${key}
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get("do", stage).get(kind, []):
                for path in [entry] if isinstance(entry, str) else entry:
                    declared.update(path.replace("${key}", key) if key else path for key in keys)
    return declared


def missing_paths(doc: Path) -> list[str]:
    """Paths under benchmarks/results/ or reports/ that `doc` names and that are not there (reports/: not a
    DVC output)."""
    records = [*RECORDS, INDEX.name]
    reports = sorted(p.removeprefix("reports/") for p in dvc_outputs() if p.startswith("reports/"))
    missing = []
    for commit, folder, name in CITED_PATH.findall(doc.read_text()):
        name = name.rstrip(".")  # a sentence's full stop, or the "..." of an elided path
        if commit or not name:
            continue
        pattern = re.sub(r"<[^>]*>", "*", name)
        if not fnmatch.filter(records if folder == "benchmarks/results" else reports, pattern):
            missing.append(f"{folder}/{name}")
    return sorted(set(missing))


def test_records_exist():
    assert RECORDS, "benchmarks/results/ holds no records"


@pytest.mark.parametrize("name", RECORDS)
def test_record_is_listed_in_the_index(name):
    assert name in indexed(), (
        f"benchmarks/results/{name} is not in the table of benchmarks/results/README.md: add its row (what it "
        "measures, the command that made it, commit and date)"
    )


def test_index_lists_only_existing_records():
    gone = sorted(indexed() - set(RECORDS))
    assert not gone, f"benchmarks/results/README.md lists records that are not in benchmarks/results/: {gone}"


@pytest.mark.parametrize("name", RECORDS)
def test_record_is_cited_in_the_docs(name):
    assert citing(name), (
        f"benchmarks/results/{name} is cited nowhere in README.md or docs/*.md: cite it where its numbers are "
        "quoted, or delete it and log its finding in docs/LOG.md"
    )


@pytest.mark.parametrize("doc", [*DOCS, INDEX], ids=rel)
def test_cited_paths_exist(doc):
    missing = missing_paths(doc)
    assert not missing, (
        f"{rel(doc)} names files that do not exist: {missing} (benchmarks/results/: no such record; reports/: "
        "not an output that dvc.yaml declares; a record moved from reports/ lives in benchmarks/results/)"
    )


def test_reports_holds_only_pipeline_outputs():
    declared = dvc_outputs()
    strays = sorted(rel(p) for p in REPORTS.rglob("*") if p.is_file() and rel(p) not in declared)
    assert not strays, f"reports/ is for dvc.yaml's outputs; move these records to benchmarks/results/: {strays}"
