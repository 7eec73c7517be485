from typing import Literal

from pydantic import Field, field_validator, model_validator

from components.config import Section
from components.train.architectures import ARCHITECTURES

# The keys that shape a model built from scratch; a pretrained base brings its own.
FROM_SCRATCH = ("architecture", "n_layer", "n_head", "n_embd", "n_positions", "dropout")


class LoraConfig(Section):
    """Low-rank adapters (peft) on a pretrained base; only the adapters train."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scaling numerator: updates are scaled by alpha / r")
    dropout: float = Field(0.0, ge=0, lt=1)
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="module names to adapt (e.g. [q_proj, v_proj]), or every linear layer but the head"
    )
    save_adapter: bool = Field(
        True, description="also write the adapter alone (adapter/) beside the merged model that is evaluated"
    )


class ModelConfig(Section):
    """A decoder of the family `architecture` built from scratch (random init), or a pretrained
    `base` to continue."""

    architecture: str = Field(
        "gpt2",
        description="model family built from scratch, a name in components/train/architectures.py ARCHITECTURES "
        "(gpt2: GPT-2, learned positions, untied output head)",
    )
    n_layer: int = Field(2, ge=1, description="transformer blocks")
    n_head: int = Field(4, ge=1, description="attention heads per block; must divide n_embd")
    n_embd: int = Field(128, ge=8, description="hidden size (width of the residual stream)")
    n_positions: int = Field(256, ge=8, description="context length; must be >= tokenizer.seq_len")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout probability on embeddings, attention and residuals")
    base: str | None = Field(
        None,
        description="continue training a pretrained model: models:/name@alias, runs:/..., s3:// prefix or a local "
        "Hugging Face directory (safetensors); its architecture and tokenizer are used",
    )
    lora: LoraConfig | None = Field(None, description="train LoRA adapters on the base instead of all weights")

    @field_validator("architecture")
    @classmethod
    def _known_architecture(cls, name: str) -> str:
        if name not in ARCHITECTURES:
            raise ValueError(f"unknown model.architecture {name!r}; known: {', '.join(sorted(ARCHITECTURES))}")
        return name

    @model_validator(mode="after")
    def _heads_divide(self) -> "ModelConfig":
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")
        return self

    @model_validator(mode="after")
    def _base_or_architecture(self) -> "ModelConfig":
        if self.base:
            # Compared with the defaults, not model_fields_set: a dumped-and-reloaded config sets every key.
            defaults = type(self).model_fields
            if given := [name for name in FROM_SCRATCH if getattr(self, name) != defaults[name].default]:
                raise ValueError(f"{', '.join(given)}: the architecture comes from model.base; remove these keys")
        elif self.lora is not None:
            raise ValueError("model.lora needs model.base: LoRA adapts a pretrained model")
        return self


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
