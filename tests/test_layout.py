"""The repository's shape: DVC deps cover every stage's imports, and committed files stay machine-free."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from scripts.stage_deps import missing_deps, stage_files

ROOT = Path(__file__).resolve().parents[1]

# Absolute folders of the machine that wrote a file (home, work and temp folders, wheel caches) ...
MACHINE_PATH = re.compile(r"(?<![\w.~$])/(?:root|home/\w+|work|tmp|Users/\w+|opt/\w+)/")
# ... and package-index hosts: a committed file names an index by what it is, not by its address.
INDEX_HOST = re.compile(r"pypi\.org|pythonhosted\.org|download\.pytorch\.org|file:///", re.IGNORECASE)


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    files = [ROOT / n for n in names if (ROOT / n).is_file()]
    return [f for f in files if b"\0" not in f.read_bytes()[:4096]]


def test_dvc_deps_cover_every_stage_import():
    assert missing_deps() == {"prepare": [], "sft": [], "grpo": [], "evaluate": [], "report": []}


def test_stage_deps_follow_imports_transitively_and_lazily(tmp_path):
    """A stage that imports a.b, which imports c inside a function, depends on all three files."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "reasoning_rl" / "a").mkdir(parents=True)
    (tmp_path / "stages" / "s.py").write_text("from reasoning_rl.a import b\n")
    (tmp_path / "reasoning_rl" / "a" / "b.py").write_text("def f():\n    import reasoning_rl.c\n")
    (tmp_path / "reasoning_rl" / "c.py").write_text("import json\n")
    found = {p.relative_to(tmp_path).as_posix() for p in stage_files(tmp_path / "stages" / "s.py", tmp_path)}
    assert found == {"stages/s.py", "reasoning_rl/a/b.py", "reasoning_rl/c.py"}


def test_missing_deps_names_an_unlisted_import(tmp_path):
    """The negative control: drop a module from a stage's deps and the check names it."""
    (tmp_path / "stages").mkdir()
    (tmp_path / "reasoning_rl").mkdir()
    (tmp_path / "stages" / "s.py").write_text("import reasoning_rl.rule\n")
    (tmp_path / "reasoning_rl" / "rule.py").write_text("X = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages:\n  s:\n    cmd: x\n    deps:\n      - stages/s.py\n")
    assert missing_deps(tmp_path / "dvc.yaml", tmp_path) == {"s": ["reasoning_rl/rule.py"]}


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("adapter: /work/main/models/sft/adapter", MACHINE_PATH),
        ('"model": "/root/.cache/reasoning-rl/SmolLM2"', MACHINE_PATH),
        ("--report /tmp/r.json", MACHINE_PATH),
        ("--index-url https://" + "pypi.org/simple", INDEX_HOST),  # split: this file must not name a host
    ],
)
def test_clean_file_patterns_catch_the_leaks_seen_before(text, pattern):
    assert pattern.search(text)


@pytest.mark.parametrize("text", ["models/sft/adapter", "~/.cache/reasoning-rl", "$REASONING_RL_CACHE/x", "a/tmp/b"])
def test_clean_file_patterns_allow_relative_paths(text):
    assert not MACHINE_PATH.search(text)


def test_tracked_files_name_no_machine_paths_or_index_hosts():
    leaks = []
    for path in tracked_text_files():
        if path == Path(__file__).resolve():  # its own examples of leaks, above
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            if MACHINE_PATH.search(line) or INDEX_HOST.search(line):
                leaks.append(f"{path.relative_to(ROOT)}:{number}: {line.strip()[:120]}")
    assert not leaks, "committed files name machine paths or index hosts:\n" + "\n".join(leaks)
