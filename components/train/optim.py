"""The optimizer (torch AdamW, two weight-decay groups) and the LR schedule, and putting the
configured hyperparameters back after a checkpoint is loaded.

DeepSpeed's load_checkpoint restores the optimizer's param_groups (lr, initial_lr,
weight_decay, betas, eps), the LambdaLR's base_lrs and the ZeRO/bf16 wrappers' clip_grad from
the checkpoint, so values changed in the config since would be silently ignored;
`apply_config_after_load` sets them from the config again.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from components.train.config import TrainConfig

BETAS = (0.9, 0.95)
EPS = 1e-8


def lr_lambda(train: TrainConfig) -> Callable[[int], float]:
    """Linear warmup to 1, then cosine down to min_lr_ratio at max_steps (a factor on lr).

    The argument is the number of optimizer steps taken (LambdaLR's last_epoch): optimizer step
    k (1-based) runs at learning_rate * factor(k - 1).
    """
    warmup, total, floor = train.warmup_steps, train.max_steps, train.min_lr_ratio

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def decay_groups(module: torch.nn.Module) -> list[list[tuple[str, torch.nn.Parameter]]]:
    """The trainable parameters as [(name, parameter)] per optimizer group, in the optimizer's
    order: 2-D tensors (decayed) first, then biases and LayerNorm gains (nanoGPT's split).
    An empty group is left out: ZeRO drops it (LoRA trains only 2-D matrices), which would
    shift the groups the schedule and the consolidation count."""
    params = [(name, p) for name, p in module.named_parameters() if p.requires_grad]
    groups = [[(n, p) for n, p in params if p.dim() >= 2], [(n, p) for n, p in params if p.dim() < 2]]
    return [group for group in groups if group]


def group_weight_decay(group: list[tuple[str, torch.nn.Parameter]], train: TrainConfig) -> float:
    return train.weight_decay if group[0][1].dim() >= 2 else 0.0


def fused_adamw(params: list[torch.nn.Parameter], train: TrainConfig) -> bool:
    """Whether AdamW runs as torch's fused CUDA kernel: every parameter on a GPU and the
    optimizer step staying there (ZeRO-Offload steps on CPU partitions, which that kernel does
    not take). One kernel for the whole update instead of a few per tensor (torch.optim.AdamW,
    `fused=True`); CPU training keeps the reference implementation, whose results the tests pin."""
    return bool(params) and not train.offload_optimizer and all(p.is_cuda for p in params)


def make_optimizer(module: torch.nn.Module, train: TrainConfig) -> torch.optim.Optimizer:
    """torch AdamW over decay_groups(module), fused on GPUs (fused_adamw). A torch optimizer,
    not DeepSpeed's FusedAdam/CPUAdam: nothing to compile."""
    groups = [
        {"params": [p for _, p in group], "weight_decay": group_weight_decay(group, train)}
        for group in decay_groups(module)
    ]
    fused = fused_adamw([p for group in groups for p in group["params"]], train)
    return torch.optim.AdamW(groups, lr=train.learning_rate, betas=BETAS, eps=EPS, fused=fused or None)


def apply_config_after_load(
    engine_optimizer, scheduler: torch.optim.lr_scheduler.LambdaLR, train: TrainConfig, step: int,
    weight_decays: list[float],
) -> list[float]:  # fmt: skip
    """After engine.load_checkpoint: the configured learning rate, schedule, weight decay and
    gradient clipping replace the checkpoint's, the schedule evaluated at `step` (optimizer
    steps taken). Returns the learning rate per group for the next step,
    learning_rate * lr_lambda(train)(step).

    engine_optimizer: engine.optimizer (a ZeRO, bf16 or fp16 wrapper, or the AdamW itself at
    ZeRO-0 fp32). weight_decays: each group's, as make_optimizer set them (read them before
    deepspeed.initialize: ZeRO-3 empties the parameters). Raises RuntimeError when the
    optimizer's groups do not match them.
    """
    optimizer = scheduler.optimizer  # the AdamW every wrapper steps; its param_groups are the checkpoint's now
    if len(weight_decays) != len(optimizer.param_groups):
        raise RuntimeError(
            f"the optimizer has {len(optimizer.param_groups)} parameter groups, the config {len(weight_decays)}"
        )
    factor = lr_lambda(train)
    rate = train.learning_rate * factor(step)
    for group, decay in zip(optimizer.param_groups, weight_decays):
        group.update(lr=rate, initial_lr=train.learning_rate, weight_decay=decay, betas=BETAS, eps=EPS)
    scheduler.base_lrs = [train.learning_rate] * len(optimizer.param_groups)
    scheduler.lr_lambdas = [factor] * len(optimizer.param_groups)
    scheduler.last_epoch = step
    scheduler._last_lr = [rate] * len(optimizer.param_groups)  # what get_last_lr() answers until the next step
    if hasattr(engine_optimizer, "clip_grad"):  # ZeRO / bf16 / fp16 wrappers clip; at ZeRO-0 fp32 the engine does
        engine_optimizer.clip_grad = train.grad_clip
    return [group["lr"] for group in optimizer.param_groups]
