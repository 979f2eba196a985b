"""The project files each DVC stage imports, from the import graph, checked against dvc.yaml's deps.

Run: python -m scripts.stage_deps           # prints, per stage, the files it imports that dvc.yaml does not list
     python -m scripts.stage_deps --write   # rewrites each stage's code deps in dvc.yaml from the graph

A stage re-runs when one of its deps changes; a module it imports but does not list would let `dvc repro` call
stale results up to date (e.g. the answer rule in task/answer_check.py decides both the reward and the
evaluation's verdicts). Imports are followed transitively, inside functions too (a lazy import runs as well).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reasoning_rl", "stages")  # what a stage can import from this repository


def module_file(module: str, root: Path = ROOT) -> Path | None:
    """`reasoning_rl.task.rewards` -> reasoning_rl/task/rewards.py (or a package's __init__.py); None if external."""
    if module.split(".")[0] not in PACKAGES:
        return None
    base = root.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported_modules(path: Path) -> set[str]:
    """Every module named by an import statement in `path` (`from a import b` yields a, and a.b if b is one)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def stage_files(entry: Path, root: Path = ROOT) -> set[Path]:
    """`entry` and every project file it imports, transitively (package __init__ files with content included)."""
    seen: set[Path] = set()
    todo = [entry]
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        for module in imported_modules(path):
            parts = module.split(".")
            for i in range(1, len(parts) + 1):  # importing a.b.c runs a/__init__.py and a/b/__init__.py too
                found = module_file(".".join(parts[:i]), root)
                if found is not None and found not in seen:
                    todo.append(found)
    return {p for p in seen if p.stat().st_size > 0}  # an empty __init__.py changes nothing


def covered(path: str, deps: list[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def missing_deps(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> dict[str, list[str]]:
    """Per stage: project files its command imports that its deps do not cover."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    out = {}
    for name, stage in stages.items():
        entry = root / "stages" / f"{name}.py"
        needed = sorted(p.relative_to(root).as_posix() for p in stage_files(entry, root))
        deps = stage.get("do", stage).get("deps", [])  # a foreach stage (evaluate@<model>) lists them under do
        out[name] = [p for p in needed if not covered(p, deps)]
    return out


def write_deps(dvc_yaml: Path = ROOT / "dvc.yaml", root: Path = ROOT) -> None:
    """Replace each stage's code deps (files under PACKAGES) with the import graph's; data deps and comments stay."""
    lines, out, stage, i = dvc_yaml.read_text().split("\n"), [], None, 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip().rstrip(":")
        out.append(line)
        i += 1
        if line.strip() != "deps:":
            continue
        indent = " " * (len(line) - len(line.lstrip()) + 2)  # under `do:` in a foreach stage, deeper
        data = []
        while i < len(lines) and lines[i].lstrip().startswith(("- ", "#")):
            dep = lines[i].strip().removeprefix("- ").split("#")[0].strip()
            if lines[i].lstrip().startswith("- ") and dep.split("/")[0] not in PACKAGES:
                data.append(lines[i])
            i += 1
        code = sorted(p.relative_to(root).as_posix() for p in stage_files(root / "stages" / f"{stage}.py", root))
        out.append(f"{indent}{CODE_COMMENT}")
        out += [f"{indent}- {c}" for c in code] + data
    dvc_yaml.write_text("\n".join(out))


CODE_COMMENT = "# code: every project file the stage imports (python -m scripts.stage_deps checks it)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="rewrite the code deps in dvc.yaml from the graph")
    args = parser.parse_args()
    if args.write:
        write_deps()
    gaps = {stage: files for stage, files in missing_deps().items() if files}
    for stage, files in gaps.items():
        print(f"dvc.yaml: stage {stage!r} imports files its deps do not list: {', '.join(files)}")
    sys.exit(1 if gaps else 0)


if __name__ == "__main__":
    main()
