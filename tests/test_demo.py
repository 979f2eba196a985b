"""The demo CLI on a tiny random model: it streams the completion, and scores it with the reward registry."""

from __future__ import annotations

import io

import pytest
from tiny_models import tiny_llama, tiny_tokenizer

from scripts.demo import main, report, rewards_for


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory):
    """A saved tiny Llama (2 layers, vocab 64) and its word-level tokenizer: a base model the CLI can load."""
    folder = tmp_path_factory.mktemp("tiny")
    tiny_llama().save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def tiny_adapter_dir(tmp_path_factory):
    """A LoRA adapter for the tiny model with non-zero B, so merging it changes the weights."""
    import torch
    from peft import LoraConfig, get_peft_model

    folder = tmp_path_factory.mktemp("adapter")
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_model.save_pretrained(folder)
    return folder


GOOD = "<think>\n48/2 = 24, 48 + 24 = 72\n</think>\n<answer>72</answer>"


@pytest.mark.parametrize(
    ("completion", "gold", "expected"),
    [
        (GOOD, "72", {"format": 1.0, "correctness": 1.0, "correctness_soft": 1.0}),
        (GOOD, "71", {"format": 1.0, "correctness": 0.0, "correctness_soft": 0.0}),
        ("<answer>72</answer>", "72", {"format": 0.0, "correctness": 0.0, "correctness_soft": 0.5}),
        (GOOD, None, {"format": 1.0}),  # no gold: only the format can be scored
    ],
)
def test_rewards_for_uses_the_registered_rewards(completion, gold, expected):
    assert rewards_for(completion, gold) == expected


def test_report_prints_answer_and_rewards():
    out = io.StringIO()
    report(GOOD, "72", stream=out)
    assert "answer: 72" in out.getvalue() and "correctness 1" in out.getvalue()


def test_demo_cli_streams_and_scores_on_a_tiny_model(tiny_model_dir, capsys):
    # 6 new tokens: enough to see streamed text, fast on CPU
    main(["--base-model", str(tiny_model_dir), "--model", "base", "--dtype", "float32", "--question", "t1 t2 t3",
          "--gold", "18", "--max-new-tokens", "6"])
    out = capsys.readouterr().out
    streamed = out.split("\n", 1)[1].split("-- answer")[0]
    assert streamed.split() and all(w.startswith("t") for w in streamed.split())  # the tiny vocab's words
    assert "-- rewards (gold 18): format 0, correctness 0, correctness_soft 0" in out


def test_demo_cli_interactive_answers_each_question_until_empty_line(tiny_model_dir, tiny_adapter_dir, capsys,
                                                                     monkeypatch):
    answers = iter(["t1 t2", "18", "t3 t4", "", ""])  # q1 with gold, q2 without, then an empty line quits
    monkeypatch.setattr("builtins.input", lambda prompt="": next(answers))
    main(["--base-model", str(tiny_model_dir), "--adapter", str(tiny_adapter_dir), "--dtype", "float32",
          "--interactive", "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert f"+ {tiny_adapter_dir}" in out  # the adapter was loaded
    assert out.count("-- rewards") == 2 and "(gold 18)" in out and "give --gold" in out


def test_demo_cli_without_question_or_interactive_fails():
    with pytest.raises(SystemExit):
        main(["--model", "base"])
