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
    assert missing_deps() == {"prepare": [], "sft": [], "select": [], "grpo": [], "evaluate": [], "report": []}


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


def import_cycle(root: Path = ROOT) -> list[str] | None:
    """A cycle in the library's module-level import graph (`reasoning_rl` importing itself round), or None.

    Imports inside functions count too: a lazy import that closes a circle still ties the two modules together.
    """
    from scripts.stage_deps import imported_modules, module_file

    graph: dict[Path, set[Path]] = {}
    for path in sorted((root / "reasoning_rl").rglob("*.py")):
        found = {module_file(m, root) for m in imported_modules(path) if m.startswith("reasoning_rl")}
        graph[path] = {f for f in found if f is not None and f != path and f.name != "__init__.py"}
    state: dict[Path, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: Path, trail: list[Path]) -> list[Path] | None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return trail[trail.index(nxt):] + [nxt] if nxt in trail else [node, nxt]
            if nxt not in state and (cycle := visit(nxt, [*trail, nxt])):
                return cycle
        state[node] = 2
        return None

    for start in graph:
        if start not in state and (cycle := visit(start, [start])):
            return [p.relative_to(root).as_posix() for p in cycle]
    return None


def test_library_has_no_import_cycle():
    assert import_cycle() is None


def test_import_cycle_is_found(tmp_path):
    """The check itself can fail: two modules importing each other are reported."""
    package = tmp_path / "reasoning_rl"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from reasoning_rl.b import f\n")
    (package / "b.py").write_text("def f():\n    from reasoning_rl.a import g\n")
    assert import_cycle(tmp_path) == ["reasoning_rl/a.py", "reasoning_rl/b.py", "reasoning_rl/a.py"]
