"""MLflow pyfunc wrapper of a GRPO LoRA adapter, logged as code ("models from code": no pickle).

The registry (reasoning_rl/ops/registry.py) logs this file with the adapter folder as an artifact; MLflow 3.x
refuses to register a plain artifact folder, but accepts this. Loading it back runs this file (project code,
versioned with the model) and reads the adapter from safetensors; nothing is unpickled.

    model = mlflow.pyfunc.load_model("models:/reasoning-rl-grpo@champion")
    model.predict(["Natalia sold 48 clips in April ..."])  # -> ["<think>\\n...\\n</think>\\n<answer>72</answer>"]

`model_config`: `base_model` (id the adapter was trained on), `dtype`, `max_new_tokens`.
"""

from __future__ import annotations

from typing import Any

from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


class AdapterModel(PythonModel):
    """Base model + LoRA adapter, merged; answers GSM8K-style questions greedily in the project's format."""

    def load_context(self, context) -> None:
        from reasoning_rl.model.loading import DECODE_ATTENTION, load_model

        config = context.model_config or {}
        self.max_new_tokens = int(config.get("max_new_tokens", 256))
        lm = load_model(
            config["base_model"], config.get("dtype", "auto"), adapter=context.artifacts["adapter"],
            attn_implementation=DECODE_ATTENTION,
        )
        self.model = lm.model.merge_and_unload()
        self.tokenizer = lm.tokenizer

    def predict(self, context, model_input: list[str], params: dict[str, Any] | None = None) -> list[str]:
        from reasoning_rl.eval.generation import generate_greedy
        from reasoning_rl.task.gsm8k import build_prompt

        questions = list(model_input["question"]) if hasattr(model_input, "columns") else list(model_input)
        prompts = [build_prompt(q) for q in questions]
        gens, _ = generate_greedy(self.model, self.tokenizer, prompts, 16, self.max_new_tokens, "pyfunc")
        return [g.text for g in gens]


set_model(AdapterModel())
