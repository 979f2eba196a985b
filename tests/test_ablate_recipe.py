"""The ablation script's variant syntax: `name:section.key=value,...`, checked like params.yaml."""

import pytest

from benchmarks.ablate_recipe import apply, parse_variant
from reasoning_rl.config import Params


def test_variant_parses_sections_and_yaml_values():
    name, overrides = parse_variant("lr:grpo.learning_rate=1e-4,sft.max_steps=40,grpo.beta=0.0")
    assert (name, overrides) == ("lr", {"grpo": {"learning_rate": 1e-4, "beta": 0.0}, "sft": {"max_steps": 40}})


def test_variant_overrides_apply_to_params():
    params = apply(Params(), parse_variant("x:grpo.num_generations=8,grpo.per_device_train_batch_size=16")[1])
    assert (params.grpo.num_generations, params.grpo.per_device_train_batch_size) == (8, 16)


def test_variant_bad_value_is_named():
    with pytest.raises(ValueError, match=r"grpo.per_device_train_batch_size \(16\) must be divisible"):
        apply(Params(), parse_variant("x:grpo.num_generations=6,grpo.per_device_train_batch_size=16")[1])


def test_variant_without_name_is_refused():
    with pytest.raises(SystemExit, match="give it a name"):
        parse_variant(":grpo.beta=0.1")
