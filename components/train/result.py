"""The worker's result: what rank 0 writes to `{output}/result.json` once the model is saved
(its presence marks the output complete), and what the launchers read back."""

from __future__ import annotations

import json

from pydantic import BaseModel, ConfigDict, Field


class TrainResult(BaseModel):
    """One training run's figures and where its outputs are. Field order is result.json's key order.

    Read it with `TrainResult.model_validate_json(text)`; written with `to_json()`.
    """

    model_config = ConfigDict(extra="ignore", protected_namespaces=())

    final_loss: float = Field(description="the last step's mean loss across ranks")
    losses: list[float] = Field(description="mean loss across ranks, one per optimizer step")
    steps: int = Field(description="optimizer steps of the whole run (train.max_steps)")
    tokens: int = Field(description="tokens of the whole run: steps x tokens_per_step")
    tokens_per_s: float = Field(description="throughput of the steps this process ran (all of them unless it resumed)")
    mfu: float | None = Field(None, description="model FLOPs utilisation over the run (None: peak unknown)")
    flops_per_token: float = Field(0.0, description="training FLOPs per token (telemetry.flops_per_token)")
    device: str = Field("", description="the accelerator's name, e.g. 'NVIDIA H100 80GB HBM3', or 'cpu'")
    steps_per_s: float = Field(description="optimizer steps per second of the steps this process ran")
    resumed_from_step: int | None = Field(None, description="checkpoint step this run resumed from, if any")
    world_size: int = Field(description="ranks in the run")
    zero_stage: int = Field(description="DeepSpeed ZeRO stage")
    precision: str = Field(description="fp32, bf16 or fp16")
    accelerator: str = Field("", description="DeepSpeed's accelerator: 'cpu' or 'cuda' ('' where a result lacks it)")
    parameters: int = Field(description="parameters of the trained module (with LoRA: base and adapters)")
    tokens_per_step: int = Field(description="global_batch_size x seq_len")
    gradient_accumulation_steps: int = Field(1, description="micro batches per rank per optimizer step (1 where a "
                                             "result lacks it)")  # fmt: skip
    fixed_batch_loss_engine: float = Field(description="loss of the DeepSpeed engine on the first micro batch")
    fixed_batch_loss_consolidated: float = Field(description="same batch, consolidated fp32 model")
    checkpoint_uri: str = Field(description="DeepSpeed checkpoint dir (holds `latest`)")
    checkpoint_tag: str = Field(description="the tag consolidated into the model, step-<steps>")
    model_uri: str = Field(description="save_pretrained dir (safetensors) with the tokenizer beside it")
    data_digest: str = Field(description="digest of the packed-tokens manifest trained on")
    duration_s: float = Field(description="wall time of the worker on rank 0, set-up to result")

    def to_json(self) -> str:
        """result.json's text: indented JSON in field order, a trailing newline. json.dumps, not
        model_dump_json, so a diverged run's NaN loss is written as NaN, not null."""
        return json.dumps(self.model_dump(), indent=2) + "\n"
