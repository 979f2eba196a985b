"""The GRPO benchmark protocol (benchmarks/bench_grpo_cpu.py) trains what it says: 4 prompts x 4 completions."""

from argparse import Namespace


def test_protocol_trains_one_micro_batch_of_prompts_times_generations_per_step():
    from benchmarks.bench_grpo_cpu import protocol_config

    args = Namespace(steps=20, generations=4, prompts_per_step=4, max_completion_length=160)
    cfg = protocol_config("tuned", args)
    assert (cfg.per_device_train_batch_size, cfg.gradient_accumulation_steps) == (16, 1)
