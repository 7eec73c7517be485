"""The model: a GPT-2 style decoder built from `ModelConfig` and randomly initialised from a
seed, or a pretrained base (optionally with LoRA adapters) to continue training."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from components.hf_model import load_causal_lm
from components.train.config import LoraConfig, ModelConfig


def gpt2_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=model.n_positions,
        n_layer=model.n_layer,
        n_head=model.n_head,
        n_embd=model.n_embd,
        resid_pdrop=model.dropout,
        embd_pdrop=model.dropout,
        attn_pdrop=model.dropout,
        # Untied: zero_to_fp32 / safetensors reject the shared wte/lm_head storage.
        tie_word_embeddings=False,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        attn_implementation="sdpa",
    )


def build_model(model: ModelConfig, vocab_size: int, seed: int, eos_token_id: int | None = None) -> GPT2LMHeadModel:
    """A freshly initialised model; the same seed gives the same weights on every rank."""
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    torch.manual_seed(seed)
    return GPT2LMHeadModel(gpt2_config(model, vocab_size, eos_token_id))


def parameter_count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def apply_lora(module: torch.nn.Module, lora: LoraConfig) -> torch.nn.Module:
    """Wrap module with peft LoRA adapters; the base weights are frozen."""
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    config = PeftLoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=lora.target_modules,
        task_type="CAUSAL_LM",
    )
    return get_peft_model(module, config)


def build_or_load(
    model: ModelConfig, vocab_size: int, seed: int, eos_token_id: int | None = None, base_dir: Path | None = None
) -> torch.nn.Module:
    """From scratch, or the base in base_dir (model.base fetched) with LoRA if configured.

    The same arguments give the same weights on every rank (the seed also initialises LoRA).
    """
    if base_dir is None:
        return build_model(model, vocab_size, seed, eos_token_id)
    module = load_causal_lm(base_dir)
    if module.config.vocab_size < vocab_size:
        raise ValueError(
            f"{model.base}: its vocabulary ({module.config.vocab_size}) is smaller than the tokenizer's ({vocab_size}); "
            "tokenize with the base model's tokenizer"
        )
    torch.manual_seed(seed)  # LoRA's A matrices start random
    return apply_lora(module, model.lora) if model.lora else module


def load_consolidated(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a consolidated ZeRO state dict; a tied weight (lm_head = embeddings) appears once in it."""
    missing, unexpected = module.load_state_dict(state, strict=False)
    shared: dict[int, list[str]] = {}
    for name, param in module.named_parameters(remove_duplicate=False):
        shared.setdefault(id(param), []).append(name)
    tied = {name for names in shared.values() if len(names) > 1 and any(n in state for n in names) for name in names}
    if unexpected or set(missing) - tied:
        raise RuntimeError(
            f"the consolidated checkpoint does not match the model: missing {sorted(set(missing) - tied)[:5]}, "
            f"unexpected {sorted(unexpected)[:5]}"
        )
