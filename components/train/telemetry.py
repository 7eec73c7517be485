"""Training telemetry: model FLOPs utilisation (MFU) and accelerator memory.

MFU follows PaLM (Chowdhery et al. 2022, appendix B): FLOPs per token = 6N + 12·L·H·Q·T, with
N the parameters that take part in matmuls (token and position embeddings are lookups),
L layers, H heads, Q head size, T sequence length; achieved FLOP/s over the peak of all
devices. Frozen weights (LoRA) do the forward and input-gradient matmuls but not the
weight-gradient one: 4 FLOPs per weight and token instead of 6.
"""

from __future__ import annotations

import time
from typing import Any

import torch

# Dense bf16/fp16 tensor-core peak FLOP/s per device, from NVIDIA's and AMD's data sheets
# (no structured sparsity). Matched as substrings of the device name, first match wins.
PEAK_FLOPS_16BIT: list[tuple[str, float]] = [
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("H100", 989e12),  # SXM
    ("H800", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("A800", 312e12),
    ("L40S", 362e12),
    ("L40", 181e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
    ("MI300X", 1307e12),
    ("MI250X", 383e12),
]


def peak_flops(device_name: str, precision: str, override_tflops: float | None = None) -> float | None:
    """Peak FLOP/s of one device for this precision; None when unknown (MFU is then not logged)."""
    if override_tflops:
        return override_tflops * 1e12
    if precision not in ("bf16", "fp16"):
        return None
    for needle, flops in PEAK_FLOPS_16BIT:
        if needle.lower() in device_name.lower():
            return flops
    return None


def matmul_parameters(module: torch.nn.Module) -> tuple[int, int]:
    """(trainable, frozen) parameter counts, leaving out embedding tables."""
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Embedding)}
    trainable = frozen = 0
    for p in module.parameters():
        if id(p) in embeddings:
            continue
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    return trainable, frozen


def flops_per_token(module: torch.nn.Module, config: Any, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of a Hugging Face decoder.

    Read from the built model and its transformers config (num_hidden_layers,
    num_attention_heads, head_dim or hidden_size / heads: names every family's config answers),
    so it holds for any entry of architectures.ARCHITECTURES and for a pretrained base alike.
    """
    trainable, frozen = matmul_parameters(module)
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    attention = 12 * layers * heads * head_dim * seq_len
    return 6 * trainable + 4 * frozen + attention


def mfu(tokens_per_s: float, per_token: float, world_size: int, peak: float | None) -> float | None:
    """Achieved over peak FLOP/s across all ranks (0..1), or None without a peak."""
    if not peak:
        return None
    return tokens_per_s * per_token / (peak * world_size)


def device_name(accelerator: str) -> str:
    if accelerator == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return accelerator


def memory_metrics(accelerator: str) -> dict[str, float]:
    """This rank's accelerator memory in GiB (allocated now, peak allocated, reserved); {} on CPU."""
    if accelerator != "cuda" or not torch.cuda.is_available():
        return {}
    gib = 1024**3
    return {
        "train/gpu_mem_allocated_gib": torch.cuda.memory_allocated() / gib,
        "train/gpu_mem_peak_gib": torch.cuda.max_memory_allocated() / gib,
        "train/gpu_mem_reserved_gib": torch.cuda.memory_reserved() / gib,
    }


class StepMeter:
    """Throughput over the steps since the last log line (not just the last step), and that
    line with the metrics logged beside it. Call `stepped()` after every optimizer step."""

    def __init__(self, tokens_per_step: int, per_token_flops: float, world: int, peak: float | None,
                 accelerator: str, max_steps: int) -> None:  # fmt: skip
        self.tokens_per_step, self.per_token_flops = tokens_per_step, per_token_flops
        self.world, self.peak, self.accelerator, self.max_steps = world, peak, accelerator, max_steps
        self.started = time.perf_counter()
        self.steps = 0

    def stepped(self) -> None:
        self.steps += 1

    def report(self, step: int, loss: float, lr: float, grad_norm: float | None) -> tuple[str, dict[str, float]]:
        """(the log line, {MLflow metric name: value}) for `step`; restarts the interval."""
        now = time.perf_counter()
        step_s = (now - self.started) / self.steps
        self.started, self.steps = now, 0
        tokens_per_s = self.tokens_per_step / step_s
        metrics = {"train/loss": loss, "train/lr": lr, "train/tokens_per_s": tokens_per_s}
        metrics.update(memory_metrics(self.accelerator))
        if grad_norm is not None:
            metrics["train/grad_norm"] = float(grad_norm)
        if (utilisation := mfu(tokens_per_s, self.per_token_flops, self.world, self.peak)) is not None:
            metrics["train/mfu"] = utilisation
        norm = f" | grad_norm {float(grad_norm):.3f}" if grad_norm is not None else ""
        shown_mfu = f" | MFU {utilisation:.1%}" if utilisation is not None else ""
        line = (f"[train] step {step}/{self.max_steps} | loss {loss:.4f} | lr {lr:.2e}{norm} | "
                f"{tokens_per_s:,.0f} tok/s{shown_mfu} | {step_s * 1000:.0f} ms/step")  # fmt: skip
        return line, metrics
