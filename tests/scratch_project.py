"""A scratch copy of this DVC project (code, dvc.yaml, params) for the tests that run the stages.

The copy reads GSM8K from `data_dir` (absolute), has its own `dvc init --no-scm`, and leaves the checkout's
dvc.lock, params.yaml and caches alone.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from reasoning_rl.config import overlay

ROOT = Path(__file__).resolve().parents[1]
DATA_DEP = "../shared/data/gsm8k"  # the data dependency as dvc.yaml and the params files spell it


def scratch_project(dest: Path, data_dir: Path, params_file: str = "params.yaml") -> Path:
    """Copy stages/, reasoning_rl/, profiles/ and dvc.yaml into `dest`; params.yaml = params.yaml with
    `params_file` laid over it (a profile)."""
    for name in ("stages", "reasoning_rl", "profiles"):
        shutil.copytree(ROOT / name, dest / name, ignore=shutil.ignore_patterns("__pycache__"))
    (dest / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text().replace(DATA_DEP, str(data_dir)))
    whole = yaml.safe_load((ROOT / "params.yaml").read_text())
    for src, dst in ((params_file, "params.yaml"), ("profiles/smoke.yaml", "profiles/smoke.yaml")):
        params = yaml.safe_load((ROOT / src).read_text())
        if dst == "params.yaml":  # a profile is an overlay on params.yaml; DVC reads one whole file
            params = overlay(whole, params)
        params.setdefault("prepare", {})["data_dir"] = str(data_dir)
        (dest / dst).write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run([str(Path(sys.executable).with_name("dvc")), "init", "--no-scm", "-q"], cwd=dest, check=True)
    return dest
