"""The model: a GPT-2 style decoder built from `ModelConfig`, randomly initialised from a seed."""

from __future__ import annotations

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from components.train.config import ModelConfig


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
