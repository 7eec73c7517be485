"""Model families a run can build from scratch: `model.architecture` names an entry here.

An entry is one function, ModelConfig + the tokenizer's vocabulary size (+ its end-of-text id)
-> a Hugging Face `PretrainedConfig`; `model.build_model` turns that into weights with
`AutoModelForCausalLM.from_config`, and telemetry.flops_per_token reads the layers, heads and
head size from the built config, so a new family needs nothing else. To add one: write its
builder below and add one line to ARCHITECTURES.

transformers is imported inside the builders: ModelConfig validates names against this
registry, and validating a pipeline config must not load transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from components.train.config import ModelConfig


def gpt2_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A GPT-2 decoder (transformers.GPT2Config): learned positions, LayerNorm, GELU MLP of
    4 x n_embd, dropout on embeddings, attention and residuals; SDPA attention."""
    from transformers import GPT2Config

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


# model.architecture -> its config builder: (ModelConfig, vocab_size, eos_token_id) -> PretrainedConfig
ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "gpt2": gpt2_config,
}


def model_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """The transformers config of `model.architecture` for this vocabulary.

    Raises ValueError for vocab_size < 1 or a name not in ARCHITECTURES (ModelConfig refuses
    those already; this guards a config built without validation).
    """
    if vocab_size < 1:
        raise ValueError(f"vocab_size must be positive, got {vocab_size}")
    if model.architecture not in ARCHITECTURES:
        raise ValueError(f"model.architecture {model.architecture!r} is not known; known: {', '.join(ARCHITECTURES)}")
    return ARCHITECTURES[model.architecture](model, vocab_size, eos_token_id)
