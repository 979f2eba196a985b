"""A tiny random LlamaForCausalLM shared by the mini-GRPO, mini-PPO and TRL cross-check tests (fast on CPU)."""

from __future__ import annotations

import torch

PAD, EOS = 0, 1


def tiny_llama(seed: int = 0, *, tie_word_embeddings: bool = False, max_position_embeddings: int = 128):
    """2 layers, hidden 32, vocab 64; pad id 0, eos id 1; deterministic for a seed."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_position_embeddings,
        pad_token_id=PAD,
        eos_token_id=EOS,
        bos_token_id=None,
        tie_word_embeddings=tie_word_embeddings,
    )
    return LlamaForCausalLM(config).eval()


def tiny_tokenizer(*, chat_template: bool = True):
    """A word-level tokenizer over the tiny model's 64 ids ("t0".."t60"); optionally a plain chat template."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": PAD, "<eos>": EOS, "<unk>": 2, **{f"t{i}": i + 3 for i in range(61)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    if chat_template:
        tok.chat_template = "{% for m in messages %}{{ m['content'] }} {% endfor %}"
    return tok


def tiny_lora_policy(dtype: torch.dtype = torch.float32):
    """`tiny_llama` with a LoRA on every projection whose B is non-zero (so the adapter is not a no-op).

    The base weights take `dtype`; the adapter weights stay fp32, as PEFT keeps them.
    """
    from peft import LoraConfig, get_peft_model

    from reasoning_rl.train.lora import LORA_TARGETS

    model = get_peft_model(tiny_llama(seed=0).to(dtype), LoraConfig(r=4, lora_alpha=8, target_modules=LORA_TARGETS))
    torch.manual_seed(1)
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model


def random_lora_adapter(model: str, out, seed: int = 0):
    """A saved LoRA adapter (safetensors) on `model` whose B is non-zero, so it changes what the model writes."""
    from peft import get_peft_model

    from reasoning_rl.model.loading import load_model
    from reasoning_rl.train.lora import lora_config

    torch.manual_seed(seed)
    policy = get_peft_model(load_model(model, "float32").model, lora_config(16, 32, 0.0))
    for name, param in policy.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.05)
    policy.save_pretrained(out, safe_serialization=True)
    return out
