"""Benchmarks: scripts that measure (`python -m benchmarks.<name>`), not timed tests; each writes reports/*.json."""
