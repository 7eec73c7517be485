from typing import Any, Literal

from pydantic import Field, model_validator

from components.config import Section
from components.train.architectures import (
    ARCHITECTURES,
    GPT2_DEFAULTS,
    GPT2_KEYS,
    GPT2_TO_LLAMA,
    HEAD_DIM_FREES_WIDTH,
    LLAMA_DEFAULTS,
    LLAMA_KEYS,
    LLAMA_TO_GPT2,
    PRESETS,
    family_keys,
    llama_intermediate_size,
)

# The keys that shape a model built from scratch; a pretrained base brings its own.
FROM_SCRATCH = ("architecture", "preset", *GPT2_KEYS, *LLAMA_KEYS, "tie_word_embeddings")


class LoraConfig(Section):
    """Low-rank adapters (peft) on a pretrained base; only the adapters train."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear",
        description="module names to adapt (e.g. the Llama family's q_proj, k_proj, v_proj, o_proj, gate_proj, "
        "up_proj, down_proj; GPT-2's c_attn, c_proj, c_fc), or every linear layer but the head",
    )
    save_adapter: bool = Field(
        True, description="also write the adapter alone (adapter/) beside the merged model that is evaluated"
    )


def _other_family_key(key: str, architecture: str) -> str:
    """The refusal of a key `architecture` does not take, naming what it takes instead."""
    if architecture == "gpt2":
        instead = LLAMA_TO_GPT2.get(key)
        hint = f"gpt2 uses {instead}" if instead else f"gpt2 has none (its keys: {', '.join(GPT2_KEYS)})"
        return f"model.{key} is a llama-family key; {hint}"
    if key in GPT2_TO_LLAMA:
        return f"model.{key} is a gpt2 key; {architecture} uses {GPT2_TO_LLAMA[key]}"
    if key == "head_dim":
        return (f"model.head_dim: {architecture} has none (its head size is hidden_size / num_attention_heads); "
                "remove it, or use llama, mistral or qwen3")  # fmt: skip
    return f"model.{key} is not a key of {architecture}; its keys: {', '.join(family_keys(architecture))}"


class ModelConfig(Section):
    """A decoder of the family `architecture` built from scratch (random init), or a pretrained
    `base` to continue. The shape keys are the Hugging Face config's names for the family: gpt2
    takes n_layer, n_head, n_embd, n_positions, dropout; llama, mistral, qwen2 and qwen3 take
    hidden_size, num_hidden_layers, ... (a key of the other family is refused, naming the right one).
    A key left out takes the family's default (architectures.GPT2_DEFAULTS / LLAMA_DEFAULTS)."""

    architecture: str | None = Field(
        None,
        description="model family built from scratch, the transformers model_type: a name in "
        "components/train/architectures.py ARCHITECTURES (gpt2, llama, mistral, qwen2, qwen3). Default: the "
        "preset's, else gpt2 (GPT-2: learned positions, LayerNorm, GELU, untied output head); none with model.base",
    )
    preset: str | None = Field(
        None,
        description="a named shape (architectures.PRESETS: smollm2-135m, smollm2-360m, llama-1b, each the published "
        "model's config): sets architecture and every shape key; keys given beside it override the preset's",
    )
    # ---- gpt2 --------------------------------------------------------------------------------
    n_layer: int | None = Field(None, ge=1, description="gpt2: transformer blocks (default 2)")
    n_head: int | None = Field(None, ge=1, description="gpt2: attention heads per block; must divide n_embd (default 4)")
    n_embd: int | None = Field(None, ge=8, description="gpt2: hidden size, the residual stream's width (default 128)")
    n_positions: int | None = Field(
        None, ge=8, description="gpt2: context length (learned positions); must be >= tokenizer.seq_len (default 256)"
    )
    dropout: float | None = Field(
        None, ge=0, lt=1, description="gpt2: dropout probability on embeddings, attention and residuals (default 0)"
    )
    # ---- llama, mistral, qwen2, qwen3 ----------------------------------------------------------
    hidden_size: int | None = Field(None, ge=8, description="llama family: the residual stream's width (default 128)")
    num_hidden_layers: int | None = Field(None, ge=1, description="llama family: transformer blocks (default 2)")
    num_attention_heads: int | None = Field(
        None, ge=1, description="llama family: query heads per block; must divide hidden_size (mistral, qwen3: "
        "unless head_dim is given) (default 4)",
    )  # fmt: skip
    num_key_value_heads: int | None = Field(
        None, ge=1, description="llama family: key/value heads (grouped-query attention); must divide "
        "num_attention_heads (default: num_attention_heads, plain multi-head attention)",
    )  # fmt: skip
    intermediate_size: int | None = Field(
        None, ge=1, description="llama family: width of the SwiGLU MLP (default: 2/3 x 4 x hidden_size rounded up "
        "to a multiple of 256, Llama's rule)",
    )  # fmt: skip
    max_position_embeddings: int | None = Field(
        None, ge=8, description="llama family: context length (rotary positions, no weights); must be >= "
        "tokenizer.seq_len (default 256)",
    )  # fmt: skip
    rope_theta: float | None = Field(
        None, gt=1, description="llama family: RoPE base; larger suits longer contexts (default 10000; SmolLM2 "
        "100000, Llama 3 500000)",
    )  # fmt: skip
    rms_norm_eps: float | None = Field(None, gt=0, le=0.01, description="llama family: RMSNorm epsilon (default 1e-5)")
    attention_dropout: float | None = Field(
        None, ge=0, lt=1, description="llama family: dropout on attention probabilities (default 0)"
    )
    head_dim: int | None = Field(
        None, ge=1, description="llama, mistral, qwen3: size of one head (default hidden_size / num_attention_heads)"
    )
    # ---- both --------------------------------------------------------------------------------
    tie_word_embeddings: bool | None = Field(
        None,
        description="the output head shares the input embedding matrix (one tensor in the saved model). Default: "
        "true for the llama family, false for gpt2 (what it always trained)",
    )
    base: str | None = Field(
        None,
        description="continue training a pretrained model: models:/name@alias, runs:/..., s3:// prefix or a local "
        "Hugging Face directory (safetensors); its architecture and tokenizer are used",
    )
    lora: LoraConfig | None = Field(None, description="train LoRA adapters on the base instead of all weights")

    @model_validator(mode="before")
    @classmethod
    def _resolve_shape(cls, data: Any) -> Any:
        """From scratch: the preset's keys under the given ones, other families' keys refused,
        the family's defaults for the keys left out. With a base: unchanged (refused below)."""
        if not isinstance(data, dict) or data.get("base") is not None:
            return data
        given = {key: value for key, value in data.items() if value is not None}
        if (preset := given.get("preset")) is not None:
            if preset not in PRESETS:
                raise ValueError(f"unknown model.preset {preset!r}; known: {', '.join(PRESETS)}")
            shape = PRESETS[preset]
            if "gpt2" in (given.get("architecture"), shape["architecture"]) and given.get("architecture") not in (
                None, shape["architecture"]
            ):  # a llama-family shape fits any llama-family architecture; gpt2's keys are others
                raise ValueError(f"model.preset {preset} is a {shape['architecture']} shape; remove "
                                 f"model.architecture={given['architecture']} or the preset")  # fmt: skip
            given = {**shape, **given}
        architecture = given.setdefault("architecture", "gpt2")
        if architecture not in ARCHITECTURES:
            raise ValueError(f"unknown model.architecture {architecture!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        own = family_keys(architecture)
        if wrong := [key for key in (*GPT2_KEYS, *LLAMA_KEYS) if key in given and key not in own]:
            default = "" if "architecture" in data else " (model.architecture defaults to gpt2: set it, e.g. llama)"
            raise ValueError("; ".join(_other_family_key(key, architecture) for key in wrong) + default)
        for key, value in (GPT2_DEFAULTS if architecture == "gpt2" else LLAMA_DEFAULTS).items():
            given.setdefault(key, value)
        if architecture != "gpt2":
            given.setdefault("num_key_value_heads", given["num_attention_heads"])
            if isinstance(given["hidden_size"], int):  # a wrong type is the field's to report
                given.setdefault("intermediate_size", llama_intermediate_size(given["hidden_size"]))
        return {**data, **given}

    @model_validator(mode="after")
    def _shape_fits(self) -> "ModelConfig":
        if self.base:
            return self
        if self.architecture == "gpt2":
            if self.n_embd % self.n_head:
                raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
            return self
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be divisible by num_key_value_heads "
                f"({self.num_key_value_heads}): each key/value head serves a whole group of query heads"
            )
        frees = self.architecture in HEAD_DIM_FREES_WIDTH
        if self.hidden_size % self.num_attention_heads and not (frees and self.head_dim is not None):
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
                + (", or give head_dim" if frees else f" ({self.architecture} requires it even with head_dim)")
            )
        head_dim = self.head_dim or self.hidden_size // self.num_attention_heads
        if head_dim % 2:  # rotary embeddings turn pairs of dimensions
            key = "head_dim" if self.head_dim else "hidden_size / num_attention_heads"
            raise ValueError(f"model.{key} is {head_dim}: rotary positions need an even head dimension")
        return self

    @model_validator(mode="after")
    def _base_or_architecture(self) -> "ModelConfig":
        if self.base:
            if given := [name for name in FROM_SCRATCH if getattr(self, name) is not None]:
                raise ValueError(f"{', '.join(given)}: the architecture comes from model.base; remove these keys")
        elif self.lora is not None:
            raise ValueError("model.lora needs model.base: LoRA adapts a pretrained model")
        return self

    @property
    def context_length(self) -> int | None:
        """The longest sequence the model built from scratch takes (n_positions for gpt2,
        max_position_embeddings for the llama family); None with model.base (the base's own,
        hf_model.context_length, is checked by the train step)."""
        if self.base:
            return None
        return self.n_positions if self.architecture == "gpt2" else self.max_position_embeddings


class TrainConfig(Section):
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage (0 = plain data parallel)")
    nproc_per_node: int = Field(2, ge=1, description="processes per node (CPU ranks or GPUs)")
    micro_batch_size: int = Field(8, ge=1, description="sequences per rank per forward pass")
    global_batch_size: int = Field(32, ge=1, description="sequences per optimizer step across all ranks")
    max_steps: int = Field(200, ge=1, description="optimizer steps")
    learning_rate: float = Field(1e-3, gt=0)
    min_lr_ratio: float = Field(0.1, ge=0, le=1, description="cosine decays to learning_rate * this")
    warmup_steps: int = Field(20, ge=0)
    weight_decay: float = Field(0.1, ge=0)
    grad_clip: float = Field(1.0, ge=0, description="0 turns clipping off")
    precision: Literal["fp32", "bf16", "fp16"] = Field(
        "fp32", description="fp32 or bf16 on CPU (fp16 is refused there); bf16 on GPUs that have it. The saved model is "
        "fp32 (the optimizer's master weights)",
    )
    log_every: int = Field(10, ge=1, description="steps between metric logs")
    seed: int = Field(1234)
    checkpoint_every: int = Field(0, ge=0, description="optimizer steps between checkpoints; 0 = only at the end")
    keep_checkpoints: int = Field(2, ge=1, description="newest checkpoint tags kept under checkpoints/")
    resume: bool = Field(True, description="resume from the newest complete checkpoint in the output dir")
    preemption_grace_s: int = Field(
        30, ge=1, le=86_400,
        description="seconds from SIGTERM (preemption) to SIGKILL: torchrun gives the ranks this long to write a "
        "checkpoint, and a TrainJob's pods get it (+ 15 s) as terminationGracePeriodSeconds. A save cut off by "
        "the deadline is never resumed from: the previous checkpoint is",
    )  # fmt: skip
    activation_checkpointing: bool = Field(False, description="recompute activations in backward: less memory, ~30 % more compute")
    offload_optimizer: bool = Field(False, description="ZeRO-Offload: optimizer states and step on the CPU (ZeRO >= 1)")
    offload_params: bool = Field(False, description="ZeRO-Infinity: parameters on the CPU between uses (ZeRO-3)")
    peak_tflops: float | None = Field(
        None, gt=0, description="peak TFLOP/s of one device for MFU; default: looked up from the GPU's name (bf16/fp16)"
    )
    system_metrics: bool = Field(True, description="MLflow system metrics (CPU, memory, GPU) on the train run")

    @model_validator(mode="after")
    def _offload_needs_zero(self) -> "TrainConfig":
        if self.offload_optimizer and self.zero_stage < 1:
            raise ValueError("offload_optimizer needs zero_stage >= 1 (the optimizer state must be partitioned)")
        if self.offload_params and self.zero_stage != 3:
            raise ValueError("offload_params needs zero_stage 3 (only ZeRO-3 partitions the parameters)")
        return self
