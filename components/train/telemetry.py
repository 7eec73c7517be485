"""Training telemetry: model FLOPs utilisation (MFU) and accelerator memory.

FLOPs per token follow PaLM (Chowdhery et al. 2022, appendix B), the estimate nanoGPT's
`estimate_mfu` and llm-foundry/torchtitan use: 6·N + 12·L·H·Q·T, generalised to every decoder
family by counting N from the built model's matmul weights instead of from a closed form (see
flops_per_token). Achieved FLOP/s over the peak of all devices is MFU.
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
    """(trainable, frozen) weights that a token's forward pass multiplies by: every parameter of
    two or more dimensions (Linear, GPT-2's Conv1D, LoRA's A and B), each shared tensor once,
    embedding tables left out (a lookup, no matmul) except the output head's: a head tied to the
    token embedding is still a (hidden x vocab) matmul in forward and backward, so it counts once
    more here although its parameter is the embedding's. Biases and norm scales (1-D,
    elementwise) are left out, as the FLOP counter leaves them out.
    """
    embeddings = {id(m.weight) for m in module.modules() if isinstance(m, torch.nn.Embedding)}
    trainable = frozen = 0
    for p in module.parameters():  # yields a shared (tied) parameter once
        if id(p) in embeddings or p.dim() < 2:
            continue
        if p.requires_grad:
            trainable += p.numel()
        else:
            frozen += p.numel()
    head = _tied_head(module, embeddings)
    if head is not None:
        if head.requires_grad:
            trainable += head.numel()
        else:
            frozen += head.numel()
    return trainable, frozen


def _tied_head(module: torch.nn.Module, embeddings: set[int]) -> torch.nn.Parameter | None:
    """The output head's weight when it is an embedding table's (tie_word_embeddings), else None."""
    get_head = getattr(module, "get_output_embeddings", None)
    head = get_head() if callable(get_head) else None
    weight = getattr(head, "weight", None)
    return weight if weight is not None and id(weight) in embeddings else None


def flops_per_token(module: torch.nn.Module, config: Any, seq_len: int) -> float:
    """Training FLOPs per token (forward + backward) of a Hugging Face decoder at `seq_len`.

    6 FLOPs per trainable matmul weight (forward 2, input gradient 2, weight gradient 2), 4 per
    frozen one (no weight gradient: LoRA's base), plus attention over the sequence,
    12·L·H·Q·T: per layer and token, QK^T and AV are T·H·Q multiply-adds (2·T·H·Q FLOPs) each
    forward, twice that backward. Sources: PaLM (Chowdhery et al. 2022, appendix B: 6N + 12·L·H·Q·T, the
    estimate in nanoGPT's `estimate_mfu`); Megatron-LM (Narayanan et al. 2021, section 5.1)
    and Chinchilla (Hoffmann et al. 2022, appendix F) decompose the same way.
    What each family's shape adds is read from the built model, not a closed form:
    - SwiGLU's three matrices (gate, up, down; Llama, Mistral, Qwen) and GPT-2's two are all
      matmul weights, counted by matmul_parameters;
    - grouped-query attention: K and V projections are num_key_value_heads·head_dim wide, and
      are counted at their size; QK^T and AV run for every query head (K/V are shared, not
      fewer), so the attention term uses num_attention_heads (H) and head_dim (Q, which
      Qwen3 sets apart from hidden_size / H);
    - the output head counts once whether tied or not (matmul_parameters); the token and
      position embedding lookups do not count.
    Attention counts the full T x T scores, causal masking not subtracted, as
    torch.utils.flop_counter.FlopCounterMode counts it (eager bmm, and its SDPA formula, which
    says "we aren't accounting for causal attention"), as PaLM and the published MFU figures
    (llm-foundry, torchtitan) do. (The counter has no entry for the CPU flash kernel SDPA runs on
    CPU, torch 2.13: there it counts no attention at all; the test maps it to the counter's own
    SDPA formula.) Not counted: softmax, norms, activations, rotary (elementwise),
    and recomputation (activation checkpointing, or the QK^T a flash kernel recomputes in
    backward, which the counter adds: its SDPA count is 14·L·H·Q·T), since MFU counts the model's
    FLOPs, not the hardware's. Sliding-window attention (Mistral) is taken as full: exact for
    seq_len <= sliding_window.

    Reads num_hidden_layers, num_attention_heads and head_dim (or hidden_size / heads) from
    `config`, names every family's transformers config answers (GPT-2 maps n_layer and n_head
    to them), so it holds for every entry of architectures.ARCHITECTURES and a pretrained base.
    Checked against FlopCounterMode on a real forward+backward of each family, tied and untied,
    in tests/components/test_train_telemetry.py (within 5 %; exact with eager attention).
    Returns FLOPs per token (a float). Raises AttributeError when `config` lacks those names.
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
