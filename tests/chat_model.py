"""A tiny chat model directory for tests: a BPE tokenizer trained by the project's own code on
the demo corpus with the default (ChatML) template's markers reserved, and a randomly initialised
two-layer Llama saved in safetensors beside it, as the SFT train step writes one."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

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


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


def assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def system(text: str) -> dict[str, str]:
    return {"role": "system", "content": text}


# What the taught model answers depends on the history and the system prompt: three different
# replies to the same question.
PIRATE = "you are a pirate"
TAUGHT = [
    [user("my name is Ada"), assistant("hello Ada"), user("what is my name?"), assistant("your name is Ada")],
    [user("my name is Bob"), assistant("hello Bob"), user("what is my name?"), assistant("your name is Bob")],
    [user("what is my name?"), assistant("I do not know")],
    [system(PIRATE), user("what is my name?"), assistant("arr, I do not know")],
]


def taught_chat_model(dest: Path, steps: int = 200) -> Path:
    """tiny_chat_model(dest) overfitted on TAUGHT (whole-sequence loss, ~2 s on 2 cores), so greedy
    replies are those conversations' assistant turns, each closed by <|im_end|>. Returns dest."""
    tiny_chat_model(dest)
    tokenizer = AutoTokenizer.from_pretrained(dest)
    model = AutoModelForCausalLM.from_pretrained(dest, use_safetensors=True)
    rows = [tokenizer.apply_chat_template(c, tokenize=True, return_dict=True)["input_ids"] for c in TAUGHT]
    width = max(map(len, rows))
    ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = labels[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    torch.manual_seed(0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: a second thread only waits, ~10x slower on a busy machine
    try:
        for _ in range(steps):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    model.save_pretrained(dest, safe_serialization=True)
    return dest


def greedy_reply(model_dir: Path, messages: list[dict[str, str]], max_new_tokens: int) -> str:
    """What transformers alone answers: the rendered conversation, greedy generate, new tokens decoded."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, use_safetensors=True)
    enc = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)
