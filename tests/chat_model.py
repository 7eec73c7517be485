"""A tiny chat model directory for tests: a BPE tokenizer trained by the project's own code on
the demo corpus with the default (ChatML) template's markers reserved, and a randomly initialised
two-layer Llama saved in safetensors beside it, as the SFT train step writes one."""

from __future__ import annotations

import json
from pathlib import Path

from components.sft.template import CHATML_SPECIAL_TOKENS, DEFAULT_CHAT_TEMPLATE, IM_END
from components.tokenizer.train_bpe import train_bpe
from components.train.config import ModelConfig
from components.train.model import build_model

from tests.conftest import DEMO_CORPUS


def demo_texts(n: int = 600) -> list[str]:
    """The first n documents of the demo corpus (`make corpus` builds it)."""
    with open(DEMO_CORPUS / "part-0000.jsonl", encoding="utf-8") as lines:
        return [json.loads(line)["text"] for _, line in zip(range(n), lines)]


def chat_tokenizer(vocab_size: int = 400):
    """A tokenizer reserving <|im_start|> and <|im_end|>, without a chat template of its own."""
    return train_bpe(demo_texts(), vocab_size=vocab_size, min_frequency=2, special_tokens=CHATML_SPECIAL_TOKENS)


def tiny_chat_model(dest: Path, *, seed: int = 0, with_template: bool = True, context: int = 256) -> Path:
    """dest/ with config.json, model.safetensors, the tokenizer and, with_template, the default
    chat template and <|im_end|> among the generation config's eos ids. Returns dest."""
    tokenizer = chat_tokenizer()
    model = build_model(
        ModelConfig(architecture="llama", hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                    num_key_value_heads=2, max_position_embeddings=context),
        len(tokenizer), seed, tokenizer.eos_token_id,
    )  # fmt: skip
    if with_template:
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
        model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)]
    model.save_pretrained(dest, safe_serialization=True)
    tokenizer.save_pretrained(dest)
    return dest
