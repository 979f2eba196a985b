"""The ablation script: its variant syntax (`name:section.key=value,...`, checked like params.yaml), its rule and
its validation scores."""

import json

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


def test_table_shows_the_sampled_delta():
    from benchmarks.ablate_recipe import table

    model = {"accuracy": 0.2, "format_rate": 0.9, "pass1_strict": 0.2}
    pair = {"sampled_strict": {"delta": 0.03, "ci_low": 0.01, "ci_high": 0.05, "p": 0.004},
            "sampled_flexible": {"delta": 0.02}}
    row = {"variant": "default", "val": {"sft": model, "grpo": model | {"pass1_strict": 0.23}},
           "val_sft_vs_grpo": pair, "no_signal_first10": 0.2, "no_signal_last10": 0.6, "grpo_seconds_per_step": 50.0}
    line = table({"base": model, "variants": [row]}).splitlines()[-1]
    assert line.startswith("| default | 20.0% | 23.0% | +3.0% [+1.0%, +5.0%] | 0.004 | +2.0% |")


@pytest.mark.parametrize(("strict", "flexible", "kept"), [
    (0.02, -0.01, True),  # exactly at both bounds of the pre-registered rule
    (0.0199, 0.0, False),  # under 2 points strict
    (0.05, -0.0101, False),  # maths traded for format
])
def test_keep_applies_the_preregistered_rule(strict, flexible, kept):
    from benchmarks.ablate_recipe import keep

    assert keep({"sampled_strict": {"delta": strict}, "sampled_flexible": {"delta": flexible}}) is kept


def test_variant_can_turn_prompt_selection_off():
    params = apply(Params(), parse_variant("baseline:select.samples=0")[1])
    assert params.select.samples == 0 and params.grpo == Params().grpo


class FakeGenerator:
    """Greedy: the gold answer, well-formed. Sampled: k copies of it, except a wrong last sample."""

    def load(self, adapter):
        self.adapter = adapter

    def greedy(self, batch_size, desc):
        from reasoning_rl.eval.generation import Generation

        return [Generation(f"<think>ok</think><answer>{a}</answer>", 5, False) for a in self.golds], 1.0

    def sampled(self, k, temperature, batch_size, desc, top_p=1.0):
        from reasoning_rl.eval.generation import Generation

        right = [[Generation(f"<think>ok</think><answer>{a}</answer>", 5, False)] * (k - 1) for a in self.golds]
        return [q + [Generation("<think>ok</think><answer>0</answer>", 5, False)] for q in right], 1.0


def test_validation_scores_keep_per_question_shares_for_the_paired_tests(tmp_path):
    from benchmarks.ablate_recipe import evaluate

    val = [{"id": f"q{i}", "question": "?", "answer": str(i + 1)} for i in range(3)]
    gen = FakeGenerator()
    gen.golds = [r["answer"] for r in val]
    evaluate(gen, tmp_path / "adapter", val, Params(), "x", tmp_path / "scores.json", k=4, temperature=0.6)
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert (scores["correct"], scores["sampled_strict"], scores["pass1_strict"]) == ([True] * 3, [0.75] * 3, 0.75)
