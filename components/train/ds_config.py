"""The DeepSpeed config, derived from `TrainConfig` and the world size.

The optimizer and LR schedule are not in here: the worker passes a torch AdamW and a
LambdaLR to `deepspeed.initialize`, so no DeepSpeed op (FusedAdam, CPUAdam) is compiled.
"""

from __future__ import annotations

from typing import Any

from components.train.config import TrainConfig


def gradient_accumulation_steps(train: TrainConfig, world_size: int) -> int:
    """Micro-steps per optimizer step: global = micro * accumulation * world."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    per_pass = train.micro_batch_size * world_size
    if train.global_batch_size % per_pass:
        raise ValueError(
            f"global_batch_size ({train.global_batch_size}) must be a multiple of "
            f"micro_batch_size ({train.micro_batch_size}) x world_size ({world_size}) = {per_pass}; "
            "change one of the three"
        )
    return train.global_batch_size // per_pass


def check_precision(precision: str, accelerator: str) -> None:
    """Fail fast on a precision the device cannot train in.

    DeepSpeed's CPU accelerator reports bf16 as supported (and it trains), but fp16 needs a
    dynamic loss scaler and CPU fp16 kernels that are slow or missing: refuse it.
    """
    if accelerator == "cpu" and precision == "fp16":
        raise ValueError("train.precision: 'fp16' is not supported on CPU (DS_ACCELERATOR=cpu): use 'fp32' or 'bf16', "
                         "or train on GPUs")


def zero_config(train: TrainConfig, accelerator: str) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": train.zero_stage}
    pin = accelerator != "cpu"  # page-locked buffers speed up host<->GPU copies; no GPU, no point
    if train.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": pin}
    if train.offload_params:
        zero["offload_param"] = {"device": "cpu", "pin_memory": pin}
    return zero


def deepspeed_config(
    train: TrainConfig, world_size: int, accelerator: str = "cpu", load_universal: bool = False
) -> dict[str, Any]:
    """The resolved DeepSpeed config dict (also logged as `ds_config.json`).

    load_universal: the run resumes from a universal checkpoint (another world size wrote it).
    """
    check_precision(train.precision, accelerator)
    config: dict[str, Any] = {
        "train_batch_size": train.global_batch_size,
        "train_micro_batch_size_per_gpu": train.micro_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps(train, world_size),
        "zero_optimization": zero_config(train, accelerator),
        "bf16": {"enabled": train.precision == "bf16"},
        "fp16": {"enabled": train.precision == "fp16"},
        "gradient_clipping": train.grad_clip,
        # The worker prints its own progress; DeepSpeed's per-step lines would interleave.
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if train.offload_optimizer:
        # Our torch AdamW steps the offloaded fp32 partitions on the CPU. DeepSpeed would
        # otherwise insist on its CPUAdam, a C++ op compiled at start-up.
        config["zero_force_ds_cpu_optimizer"] = False
    if load_universal:
        config["checkpoint"] = {"load_universal": True}
    return config
