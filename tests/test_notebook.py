"""grpo_reasoning.ipynb runs top to bottom with the project's modules (so it cannot rot)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_grpo_notebook_executes(gsm8k_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    from nbclient import NotebookClient

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    nb = nbformat.read(ROOT / "grpo_reasoning.ipynb", as_version=4)
    # 300 s per cell: generous, for shared CPUs (the whole notebook took 228 s here with four other jobs running)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = "".join(o.get("text", "") for cell in nb.cells if cell.cell_type == "code" for o in cell.outputs)
    assert "the reference solution would earn: {'format': 1.0, 'correctness': 1.0}" in outputs
    assert "pass@1 =" in outputs and "accuracy" in outputs
