"""How the pipeline flow applies a profile and overrides to params.yaml, and puts the file back."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.pipeline import applied_params, pipeline

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def project(tmp_path) -> Path:
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    (tmp_path / "profiles").mkdir()
    shutil.copy(ROOT / "profiles/smoke.yaml", tmp_path / "profiles/smoke.yaml")
    return tmp_path


def test_applied_params_sets_override_inside_block(project):
    with applied_params(project, None, ["grpo.beta=0.04"]) as params:
        assert params["grpo"]["beta"] == 0.04
        assert yaml.safe_load((project / "params.yaml").read_text())["grpo"]["beta"] == 0.04


def test_applied_params_uses_profile_then_overrides(project):
    with applied_params(project, "profiles/smoke.yaml", ["grpo.max_steps=3"]) as params:
        assert params["grpo"]["max_steps"] == 3
        assert params["evaluate"]["num_questions"] == 16  # from the smoke profile


def test_applied_params_restores_bytes_after(project):
    before = (project / "params.yaml").read_bytes()
    with applied_params(project, "profiles/smoke.yaml", ["grpo.beta=0.04"]):
        pass
    assert (project / "params.yaml").read_bytes() == before  # comments and key order included


def test_applied_params_restores_bytes_after_error(project):
    before = (project / "params.yaml").read_bytes()
    with pytest.raises(RuntimeError), applied_params(project, None, ["grpo.beta=0.04"]):
        raise RuntimeError("stage failed")
    assert (project / "params.yaml").read_bytes() == before


def test_applied_params_adds_known_key_missing_from_profile(project):
    with applied_params(project, "profiles/smoke.yaml", ["grpo.learning_rate=1e-3"]) as params:
        assert params["grpo"]["learning_rate"] == 1e-3  # the smoke profile leaves learning_rate out


@pytest.mark.parametrize("override", ["grpo.nope=1", "+grpo.nope=1", "nosection.x=1"])
def test_applied_params_rejects_unknown_key_naming_it(project, override):
    with pytest.raises(ValueError, match="nope|nosection"), applied_params(project, None, [override]):
        pass
    assert "nope" not in (project / "params.yaml").read_text()


def test_applied_params_rejects_bad_value_naming_key(project):
    with pytest.raises(ValueError, match="num_generations"), applied_params(project, None, ["grpo.num_generations=5"]):
        pass


def test_pipeline_rejects_unknown_stage(project):
    with pytest.raises(ValueError, match="train"):
        pipeline.fn(stages=["train"], project_dir=str(project))
