"""Typed configs: defaults validate, bad values raise ValueError naming the key and value."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from reasoning_rl.config import SECTIONS, GrpoConfig, Params, SftConfig, params_from_dict

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_config_defaults_equal_params_yaml(section):
    """One source for every default: a dataclass default that drifts from params.yaml fails here (and a
    partial profile, which falls back to the defaults, is therefore an overlay on params.yaml)."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())[section]
    defaults = getattr(Params(), section)
    assert params_from_dict({section: written}) == Params(**{section: defaults}), (
        f"params.yaml's {section} section and {type(defaults).__name__}'s defaults disagree"
    )


@pytest.mark.parametrize("section", sorted(SECTIONS))
def test_params_yaml_writes_every_key(section):
    """params.yaml spells out every key, so it reads as the whole recipe."""
    written = yaml.safe_load((ROOT / "params.yaml").read_text())[section]
    assert set(written) == {f.name for f in dataclasses.fields(SECTIONS[section])}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_pp": 0.9}, r"grpo.trl.top_pp is not a trl.GRPOConfig option"),
        ({"max_steps": 3}, r"grpo.trl.max_steps: set it as grpo.max_steps"),
        ({"bf16": False}, r"grpo.trl.bf16 is set by the project"),
    ],
)
def test_grpo_trl_options_bad_key_is_named(options, message):
    with pytest.raises(ValueError, match=message):
        params_from_dict({"grpo": {"trl": options}})


def test_grpo_trl_options_pass_through():
    assert params_from_dict({"grpo": {"trl": {"max_grad_norm": 0.5}}}).grpo.trl == {"max_grad_norm": 0.5}


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"top_p": 0.95}, r"grpo.trl.top_p \(0.95\) truncates sampling: .*TRL issue #6789"),
        ({"top_k": 50}, r"grpo.trl.top_k \(50\) truncates sampling"),
        ({"min_p": 0.05}, r"grpo.trl.min_p \(0.05\) truncates sampling"),
        ({"generation_kwargs": {"top_p": 0.9}}, r"grpo.trl.generation_kwargs.top_p \(0.9\) truncates sampling"),
    ],
)
def test_grpo_trl_truncated_sampling_is_refused(options, message):
    """The engine's log-probs would be of the truncated distribution, the trainer's of the whole one."""
    with pytest.raises(ValueError, match=message):
        params_from_dict({"grpo": {"trl": options}})


@pytest.mark.parametrize("options", [{"top_p": 1.0}, {"top_k": 0}, {"top_k": -1}, {"min_p": 0.0}, {"min_p": None}])
def test_grpo_trl_untruncated_sampling_values_pass(options):
    assert params_from_dict({"grpo": {"trl": options}}).grpo.trl == options


@pytest.mark.parametrize("path", ["params.yaml", "profiles/smoke.yaml"])
def test_params_files_validate(path):
    params = params_from_dict(yaml.safe_load((ROOT / path).read_text()))
    assert params.grpo.per_device_train_batch_size % params.grpo.num_generations == 0


@pytest.mark.parametrize(
    ("section", "values", "message"),
    [
        ("grpo", {"per_device_train_batch_size": 6, "num_generations": 4}, r"per_device_train_batch_size \(6\)"),
        ("grpo", {"max_completion_length": 0}, r"grpo.max_completion_length \(0\) must be > 0"),
        ("grpo", {"num_generations": 1, "per_device_train_batch_size": 4}, r"num_generations \(1\)"),
        ("grpo", {"loss_type": "ppo"}, r"grpo.loss_type \('ppo'\)"),
        ("grpo", {"beta": -0.1}, r"grpo.beta \(-0.1\)"),
        ("grpo", {"epsilon_high": 0.1}, r"epsilon_high \(0.1\) must be >= grpo.epsilon"),
        ("grpo", {"reward_weights": [1.0]}, r"reward_weights has 1 values"),
        ("grpo", {"scale_rewards": "yes"}, r"grpo.scale_rewards \('yes'\) must be one of"),
        ("base", {"engine": "tgi"}, r"base.engine \('tgi'\) must be one of"),
        ("grpo", {"training_attention": "flash"}, r"grpo.training_attention \('flash'\) must be one of"),
        ("grpo", {"shared_prefix": True, "gradient_checkpointing": True}, r"grpo.shared_prefix needs grpo.gradient_"),
        ("sft", {"learning_rate": 0}, r"sft.learning_rate \(0.0\) must be > 0"),
        ("sft", {"lora_dropout": 1.5}, r"sft.lora_dropout \(1.5\)"),
        ("evaluate", {"models": ["base", "gpt4"]}, r"evaluate.models"),
        ("evaluate", {"num_questions": 0}, r"evaluate.num_questions \(0\)"),
        ("evaluate", {"samples_k": -1}, r"evaluate.samples_k \(-1\)"),
        ("evaluate", {"temperature": 0.0}, r"evaluate.temperature \(0.0\)"),
        ("evaluate", {"top_p": 0.0}, r"evaluate.top_p \(0.0\) must be in \(0, 1\]"),
        ("prepare", {"val_size": 0}, r"prepare.val_size \(0\)"),
        ("select", {"samples": 1}, r"select.samples \(1\) must be 0 \(off\) or >= 2"),
        ("select", {"candidates": 0}, r"select.candidates \(0\) must be > 0"),
        ("base", {"dtype": "int8"}, r"base.dtype \('int8'\)"),
        ("grpo", {"vllm_importance_sampling_mode": "sequence"}, r"grpo.vllm_importance_sampling_mode \('sequence'\)"),
    ],
)
def test_params_bad_value_names_key(section, values, message):
    with pytest.raises(ValueError, match=message):
        params_from_dict({section: values})


def test_params_unknown_key_is_error():
    with pytest.raises(ValueError, match=r"unknown key\(s\) in params section 'grpo': \['max_stepz'\]"):
        params_from_dict({"grpo": {"max_stepz": 3}})


def test_params_unknown_section_is_error():
    with pytest.raises(ValueError, match=r"unknown params section\(s\) \['ppo'\]"):
        params_from_dict({"ppo": {}})


def test_params_wrong_type_names_key():
    with pytest.raises(ValueError, match=r"sft.max_steps must be int, got str '10'"):
        params_from_dict({"sft": {"max_steps": "10"}})


def test_params_yaml_exponent_without_dot_gets_a_hint():
    with pytest.raises(ValueError, match=r"grpo.learning_rate must be float, got str '1e-4' \(YAML 1.1 .* 1.0e-04\)"):
        params_from_dict({"grpo": {"learning_rate": "1e-4"}})


def test_params_bool_is_not_an_int():
    with pytest.raises(ValueError, match=r"grpo.max_steps must be int, got bool"):
        params_from_dict({"grpo": {"max_steps": True}})


def test_params_int_accepted_for_float():
    assert params_from_dict({"grpo": {"beta": 0}}).grpo.beta == 0.0


def test_params_lists_become_tuples():
    cfg = params_from_dict({"grpo": {"reward_funcs": ["format"]}}).grpo
    assert cfg.reward_funcs == ("format",)


def test_configs_are_frozen():
    with pytest.raises(AttributeError):
        GrpoConfig().beta = 1.0  # type: ignore[misc]


def test_sft_defaults_valid():
    assert SftConfig().max_steps > 0


def test_hf_argument_parser_would_lose_the_yaml_hint():
    """Why config.py keeps its own checks: transformers' parse_dict passes YAML 1.1's text '1e-4' through."""
    from transformers import HfArgumentParser

    from reasoning_rl.config import SftConfig

    with pytest.raises(TypeError, match="not supported between instances of 'str'"):
        HfArgumentParser(SftConfig).parse_dict({"learning_rate": "1e-4"})
    with pytest.raises(ValueError, match=r"sft.learning_rate must be float, got str '1e-4' \(YAML 1.1"):
        params_from_dict({"sft": {"learning_rate": "1e-4"}})
