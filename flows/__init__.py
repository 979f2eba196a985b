"""Prefect flows: orchestration only (the library never imports Prefect)."""
