"""Benchmarks: scripts that measure (`python -m benchmarks.<name>`), not timed tests; each writes its result to
benchmarks/results/ (the committed records, indexed in benchmarks/results/README.md). reports/ holds only the
pipeline's own outputs (dvc.yaml)."""

from pathlib import Path

RESULTS = Path("benchmarks/results")  # repo-relative, like reasoning_rl.paths: the scripts run from the repo root
