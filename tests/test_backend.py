"""The backend seam: auto/plain/unsloth resolution, its errors, and the GRPO settings that go with it."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch
import yaml

from reasoning_rl.config import params_from_dict
from reasoning_rl.model import loading as modeling
from reasoning_rl.model.loading import BackendUnavailableError, resolve_backend, select_backend

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("requested", "cuda", "installed", "expected"),
    [
        ("auto", False, False, "plain"),  # this CPU machine
        ("auto", False, True, "plain"),  # unsloth installed but no GPU
        ("auto", True, False, "plain"),  # GPU without the gpu extra
        ("auto", True, True, "unsloth"),
        ("plain", True, True, "plain"),  # plain is always honoured
        ("plain", False, False, "plain"),
        ("unsloth", True, True, "unsloth"),
    ],
)
def test_resolve_backend_table(requested, cuda, installed, expected):
    assert resolve_backend(requested, cuda_available=cuda, unsloth_installed=installed) == expected


@pytest.mark.parametrize(
    ("cuda", "installed", "message"),
    [
        (False, True, r"CUDA is not available"),
        (False, False, r"CUDA is not available"),
        (True, False, r"pip install -e '\.\[gpu\]'"),
    ],
)
def test_resolve_backend_explicit_unsloth_unavailable_is_error(cuda, installed, message):
    with pytest.raises(BackendUnavailableError, match=message):
        resolve_backend("unsloth", cuda_available=cuda, unsloth_installed=installed)


def test_resolve_backend_unknown_name_is_error():
    with pytest.raises(ValueError, match=r"unknown backend 'jax'"):
        resolve_backend("jax", cuda_available=False, unsloth_installed=False)


def test_select_backend_auto_without_cuda_is_silent_plain(monkeypatch, caplog):
    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: False)
    with caplog.at_level("INFO"):
        assert select_backend("auto") == "plain"
    assert not caplog.records
    assert "unsloth" not in sys.modules  # probing never imports it (it patches transformers on import)


def test_select_backend_explicit_unsloth_without_cuda_is_error(monkeypatch):
    monkeypatch.setattr(modeling.torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendUnavailableError, match=r"Use base.backend: plain"):
        select_backend("unsloth")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("base", {"backend": "jax"}, r"base.backend \('jax'\) must be one of"),
        ("grpo", {"steps_per_generation": 0}, r"grpo.steps_per_generation \(0\)"),
        ("grpo", {"vllm_mode": "remote"}, r"grpo.vllm_mode \('remote'\)"),
        ("grpo", {"vllm_gpu_memory_utilization": 1.5}, r"grpo.vllm_gpu_memory_utilization \(1.5\)"),
    ],
)
def test_params_backend_and_speed_keys_validated(section, values, message):
    with pytest.raises(ValueError, match=message):
        params_from_dict({section: values})


@pytest.mark.parametrize("path", sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "profiles").glob("gpu_*.yaml")))
def test_gpu_profiles_validate_and_use_unsloth_with_vllm(path):
    params = params_from_dict(yaml.safe_load((ROOT / path).read_text()))
    assert params.base.backend in ("auto", "unsloth")
    assert params.base.engine == "vllm" and params.grpo.vllm_mode == "colocate"
