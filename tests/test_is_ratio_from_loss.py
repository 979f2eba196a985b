"""grpo.is_ratio_from_loss_forward: TRL's vLLM importance ratio from the loss forward, not an extra forward.

The trainer runs TRL's vLLM code paths with a `rollout_func` that plays the engine: fixed completions and the
per-token log-probs an engine would report. Some of those log-probs sit far from the tiny model's own, so the
ratio is clipped (truncate modes) or masked (mask modes), and both arms have to agree on that too.
"""

import os

import pytest
import torch

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # rollout_func is flagged experimental in TRL

G = 2
COMPLETION = [11, 12, 13, 1]  # ends with EOS (id 1)
ENGINE_LOGPS = [-2.0, -6.0, -4.0, -4.3]  # the tiny model's own are ~-4.2: ratios ~0.1 to ~6, some past the cap 3
MODES = ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"]


def make_trainer(tmp_path, *, from_loss: bool, mode: str = "token_truncate", **config):
    from datasets import Dataset
    from tiny_models import tiny_llama, tiny_tokenizer
    from trl import GRPOConfig

    from reasoning_rl.train.grpo import GrpoTrainer

    model_dir = tmp_path / "model"
    if not model_dir.exists():
        tiny_llama(0, max_position_embeddings=64).save_pretrained(model_dir)
        tiny_tokenizer(chat_template=False).save_pretrained(model_dir)

    def engine(prompts, trainer):  # what vLLM would return: token ids and their sampling log-probs
        return {"prompt_ids": [[5, 9, 7]] * len(prompts), "completion_ids": [COMPLETION] * len(prompts),
                "logprobs": [[[lp] for lp in ENGINE_LOGPS]] * len(prompts)}

    def reward(completions, **kwargs):  # rewards differ inside each group: non-zero advantages
        return [float(i % G) for i in range(len(completions))]

    args = GRPOConfig(output_dir=str(tmp_path / "out"), report_to=[], use_cpu=True, bf16=False,
                      per_device_train_batch_size=4, num_generations=G, max_completion_length=8,
                      scale_rewards="none", loss_type="dr_grpo", seed=0, vllm_importance_sampling_mode=mode,
                      **config)
    trainer = GrpoTrainer(model=str(model_dir), reward_funcs=reward, args=args, rollout_func=engine,
                          train_dataset=Dataset.from_dict({"prompt": ["t2 t6"] * 4}),
                          processing_class=tiny_tokenizer(chat_template=False),
                          is_ratio_from_loss_forward=from_loss)
    trainer.use_vllm = True  # TRL's vLLM paths (the importance ratio), with rollout_func as the engine
    trainer._last_loaded_step = trainer.state.global_step  # no weight sync: there is no engine to sync
    trainer.current_gradient_accumulation_steps = 1
    trainer.model.train()
    return trainer


def step(trainer) -> tuple[dict, torch.Tensor, list[torch.Tensor]]:
    """Sample and score one batch, then the loss and the LoRA-free model's gradients, as a training step does."""
    batch = trainer._generate_and_score_completions([{"prompt": "t2 t6"}] * 4)
    trainer.model.zero_grad()
    loss = trainer.compute_loss(trainer.model, batch)
    loss.backward()
    return batch, loss.detach(), [p.grad.clone() for p in trainer.model.parameters() if p.grad is not None]


def test_ratio_from_loss_forward_skips_trls_scoring_forward(tmp_path):
    """Sampling and scoring runs no forward at all: TRL's no-grad forward over the batch is gone."""
    def forwards_while_scoring(from_loss: bool) -> int:
        trainer = make_trainer(tmp_path, from_loss=from_loss)
        forward, calls = trainer._get_per_token_logps_and_entropies, []
        trainer._get_per_token_logps_and_entropies = lambda *a, **k: calls.append(1) or forward(*a, **k)
        trainer._generate_and_score_completions([{"prompt": "t2 t6"}] * 4)
        return len(calls)

    assert (forwards_while_scoring(False), forwards_while_scoring(True)) == (1, 0)


@pytest.mark.parametrize("mode", MODES)
def test_ratio_from_loss_forward_gives_trls_loss_and_gradients(tmp_path, mode):
    """Same loss and gradients as TRL's own path, in each of TRL's four ratio modes."""
    trl_batch, trl_loss, trl_grads = step(make_trainer(tmp_path, from_loss=False, mode=mode))
    batch, loss, grads = step(make_trainer(tmp_path, from_loss=True, mode=mode))
    ratio = trl_batch["importance_sampling_ratio"]
    assert (ratio != 1).any()  # the ratio is not neutral here, so it is under test
    assert "importance_sampling_ratio" not in batch and "old_per_token_logps" not in batch
    torch.testing.assert_close(loss, trl_loss)
    assert len(grads) == len(trl_grads) > 0
    for ours, theirs in zip(grads, trl_grads, strict=True):
        torch.testing.assert_close(ours, theirs)


def test_ratio_from_loss_forward_logs_trls_sampling_metrics(tmp_path):
    """The engine/trainer diagnostics TRL logs (log-prob gap, ratio min/mean/max) have TRL's values."""
    logged = {}
    for from_loss in (False, True):
        trainer = make_trainer(tmp_path, from_loss=from_loss)
        step(trainer)
        logged[from_loss] = {k: v for k, v in trainer._metrics["train"].items() if k.startswith("sampling/")}
    assert len(logged[True]) == 5
    assert logged[True].keys() == logged[False].keys()
    for name, values in logged[False].items():
        assert logged[True][name] == pytest.approx(values, rel=1e-5), name


@pytest.mark.parametrize(("config", "expected"), [
    ({}, True),
    ({"num_iterations": 2}, False),  # the second pass trains on completions sampled before an update
    ({"gradient_accumulation_steps": 1, "steps_per_generation": 2}, False),  # one sampling spans two updates
])
def test_ratio_from_loss_forward_only_when_on_policy(tmp_path, config, expected):
    """Off-policy steps keep TRL's scoring forward: there the loss forward's weights are not the sampler's."""
    assert make_trainer(tmp_path, from_loss=True, **config)._ratio_from_loss_forward() is expected
