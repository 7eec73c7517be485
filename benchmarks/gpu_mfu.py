"""Training throughput and MFU on a GPU: Llama-style presets (~350M, 1B, 3B) and GPT-2 style ones
at seq 2048, bf16, SDPA (flash) attention, one JSON line per preset.

    python -m benchmarks.gpu_mfu --preset llama-350m llama-1b llama-3b               # worker, DeepSpeed ZeRO-2
    python -m benchmarks.gpu_mfu --no-deepspeed --preset llama-350m llama-1b llama-3b  # plain torch
    python -m benchmarks.gpu_mfu --device cpu --preset tiny                              # CPU smoke run

Two ways to run the same model and optimizer step on random tokens:
  default         our training step: `train_local` (torchrun + components.train.worker), DeepSpeed
                  ZeRO-2, bf16 weights with fp32 master weights, AdamW (fused on GPU), grad clip 1.0
  --no-deepspeed  the same model (transformers, attn_implementation="sdpa") in a plain torch loop
                  on one device: fp32 weights under bf16 autocast, torch.optim.AdamW(fused=True)
                  on GPU, grad clip 1.0, the SDPA flash backend forced on GPU (an error instead of
                  a silent fallback to the math kernel). It imports only torch, transformers and
                  components.train.telemetry (torch only): for a machine without DeepSpeed,
                  pydantic or MLflow. The DeepSpeed path imports those lazily.
What is measured: optimizer steps after the first `--skip` are timed (CUDA synchronised), tokens/s
over them; MFU = tokens/s x telemetry.flops_per_token / the device's peak (telemetry.PEAK_FLOPS_16BIT
by GPU name, or --peak-tflops); model TFLOP/s per device; peak allocated memory.

Anchors (bf16, H100 SXM peak 989 TFLOP/s, all counting 6N + 12.L.H.Q.T with full T x T attention):
  llm-foundry (mosaicml/llm-foundry scripts/train/benchmarking, 8 x H100, seq 2048): 34.9 % MFU
    at 760M, 41.8 % at 1B (MPT: d_model 2048, 24 layers, vocab 50368)
  torchtitan (docs/performance.md, Llama 3.1 8B, 8 x H100 96GB at 500 W, FSDP, local batch 2,
    seq 8192, selective activation checkpointing): 5,762 tokens/s/GPU, 6,667 with torch.compile;
    "33 % to 39 % MFU" (their peak is the SXM one, above what their H100s reach)
  our goal: >= 50 %
Results: benchmarks/results/gpu_mfu.json (a list, one entry per preset).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

# name -> (model.architecture, the Hugging Face config keys, vocabulary, default micro batch).
# The Llama shapes are the published models' config.json: SmolLM2-360M (model.preset
# smollm2-360m), Llama 3.2 1B (model.preset llama-1b) and Llama 3.2 3B, each with its own
# vocabulary and tied head, RoPE without the long-context scaling. GPT-2 style: untied, its
# 50257-token vocabulary rounded up to 50304 (a multiple of 64, for the tensor cores); 760m and
# 1b match llm-foundry's d_model / n_layers.
PRESETS: dict[str, tuple[str, dict[str, Any], int, int]] = {
    "tiny": ("gpt2", {"n_layer": 2, "n_head": 4, "n_embd": 128}, 50304, 8),
    "llama-tiny": ("llama", {"hidden_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4,
                             "num_key_value_heads": 2, "intermediate_size": 384, "tie_word_embeddings": True}, 4096, 8),
    "350m": ("gpt2", {"n_layer": 24, "n_head": 16, "n_embd": 1024}, 50304, 8),
    "760m": ("gpt2", {"n_layer": 24, "n_head": 16, "n_embd": 1536}, 50304, 8),
    "1b": ("gpt2", {"n_layer": 24, "n_head": 16, "n_embd": 2048}, 50304, 8),
    "llama-350m": ("llama", {"hidden_size": 960, "num_hidden_layers": 32, "num_attention_heads": 15,
                             "num_key_value_heads": 5, "intermediate_size": 2560, "rope_theta": 100_000.0,
                             "rms_norm_eps": 1e-5, "tie_word_embeddings": True}, 49152, 16),
    "llama-1b": ("llama", {"hidden_size": 2048, "num_hidden_layers": 16, "num_attention_heads": 32,
                           "num_key_value_heads": 8, "head_dim": 64, "intermediate_size": 8192,
                           "rope_theta": 500_000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}, 128256, 8),
    "llama-3b": ("llama", {"hidden_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 24,
                           "num_key_value_heads": 8, "head_dim": 128, "intermediate_size": 8192,
                           "rope_theta": 500_000.0, "rms_norm_eps": 1e-5, "tie_word_embeddings": True}, 128256, 4),
}  # fmt: skip
ANCHORS = {"760m": 0.349, "1b": 0.418, "llama-1b": 0.418}  # llm-foundry, 8 x H100, bf16, seq 2048
TORCHTITAN_8B = {"tokens_per_s_per_gpu": 5762, "with_compile": 6667, "mfu": "33-39 %"}
GOAL = 0.5


def context_key(architecture: str) -> str:
    return "n_positions" if architecture == "gpt2" else "max_position_embeddings"


def hf_config(preset: str, seq_len: int) -> Any:
    """The transformers config of `preset` (SDPA attention, no dropout)."""
    import transformers

    architecture, shape, vocab, _ = PRESETS[preset]
    shape = {**shape, context_key(architecture): seq_len}
    if architecture == "gpt2":
        shape.update(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, tie_word_embeddings=False)
    config_class = {"gpt2": transformers.GPT2Config, "llama": transformers.LlamaConfig}[architecture]
    return config_class(vocab_size=vocab, attn_implementation="sdpa", **shape)


def plain_torch(preset: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One preset in a plain torch loop on one device (see the module docstring)."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    from components.train.telemetry import device_name, flops_per_token, peak_flops

    cuda = device == "cuda"
    precision = args.precision or ("bf16" if cuda else "fp32")
    seq_len = args.seq_len or (128 if "tiny" in preset else 2048)
    micro = args.micro_batch or PRESETS[preset][3]
    config = hf_config(preset, seq_len)
    torch.manual_seed(0)
    with torch.device(device):  # initialise on the device: a 3B model's CPU init takes minutes
        model = AutoModelForCausalLM.from_config(config)
    model.train()
    if args.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    per_token = flops_per_token(model, model.config, seq_len)
    parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1, fused=cuda)
    step_model = torch.compile(model) if args.compile else model
    generator = torch.Generator(device=device).manual_seed(0)
    vocab = config.vocab_size
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    def attention_kernels():
        if not cuda or args.sdpa_backend == "any":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel(SDPBackend.FLASH_ATTENTION)

    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=precision == "bf16")
    times: list[float] = []
    losses: list[float] = []
    for step in range(args.steps):
        started = time.perf_counter()
        for _ in range(args.accumulation):
            ids = torch.randint(0, vocab, (micro, seq_len), device=device, generator=generator)
            with autocast, attention_kernels():
                loss = step_model(input_ids=ids, labels=ids).loss / args.accumulation
            loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0, foreach=True)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
        losses.append(float(loss.detach()) * args.accumulation)
    timed = times[args.skip :] or times
    tokens_per_step = micro * args.accumulation * seq_len
    tokens_per_s = tokens_per_step * len(timed) / sum(timed)
    name = device_name(device)
    peak = peak_flops(name, precision, args.peak_tflops)
    report = {
        "preset": preset, "mode": "torch", "architecture": PRESETS[preset][0], "parameters": parameters,
        "vocab_size": vocab, "seq_len": seq_len, "micro_batch": micro, "accumulation": args.accumulation,
        "device": name, "precision": precision, "optimizer": f"torch.optim.AdamW(fused={cuda})",
        "attention": f"sdpa ({'flash' if cuda and args.sdpa_backend == 'flash' else 'any backend'})",
        "compile": args.compile, "activation_checkpointing": args.activation_checkpointing,
        "flops_per_token": per_token, "steps": args.steps, "timed_steps": len(timed),
        "step_s": sum(timed) / len(timed), "tokens_per_s": tokens_per_s,
        "model_tflops_per_s": tokens_per_s * per_token / 1e12,
        "mfu": tokens_per_s * per_token / peak if peak else None, "peak_tflops": peak / 1e12 if peak else None,
        "peak_memory_gib": torch.cuda.max_memory_allocated() / 1024**3 if cuda else None,
        "first_loss": losses[0], "last_loss": losses[-1],
    }  # fmt: skip
    del step_model, model, optimizer
    if cuda:
        torch.cuda.empty_cache()
    return report


def with_deepspeed(preset: str, args: argparse.Namespace, device: str) -> dict[str, Any]:
    """One preset through our worker (train_local: torchrun, DeepSpeed); figures from its step lines."""
    import contextlib
    import re
    import statistics
    import tempfile

    import numpy as np

    from components.manifest import Manifest, shard_info
    from components.train.config import ModelConfig, TrainConfig
    from components.train.launch import train_local

    step_line = re.compile(r"\[train\] step (\d+)/\d+ .*?\| ([\d,]+) tok/s(?: \| MFU ([\d.]+)%)?")
    cuda = device == "cuda"
    ranks = args.gpus or 2
    seq_len = args.seq_len or (128 if "tiny" in preset else 2048)
    micro = args.micro_batch or PRESETS[preset][3]
    architecture, shape, vocab, _ = PRESETS[preset]
    model = ModelConfig(architecture=architecture, **shape, **{context_key(architecture): seq_len})
    train = TrainConfig(
        zero_stage=args.zero, nproc_per_node=ranks, micro_batch_size=micro,
        global_batch_size=micro * args.accumulation * ranks, max_steps=args.steps, learning_rate=3e-4,
        warmup_steps=5, log_every=5, precision=args.precision or ("bf16" if cuda else "fp32"),
        activation_checkpointing=args.activation_checkpointing, peak_tflops=args.peak_tflops, system_metrics=False,
    )  # fmt: skip
    sequences = train.global_batch_size * (args.steps + 1)
    captured = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="homegrown-mfu-") as tmp:
        path = Path(tmp) / "data" / "train" / "part-00000.npy"
        path.parent.mkdir(parents=True)
        tokens = np.random.default_rng(0).integers(0, vocab, size=(sequences, seq_len), dtype=np.int32)
        np.save(path, tokens, allow_pickle=False)
        manifest = Manifest(kind="packed-tokens", root=str(path.parent.parent), shards=[shard_info(str(path), sequences)],
                            facts={"seq_len": seq_len, "vocab_size": vocab, "eos_token_id": 0})  # fmt: skip
        manifest.save(str(path.parent.parent / "manifest.json"))
        env = {} if cuda else {"CUDA_VISIBLE_DEVICES": ""}
        with contextlib.redirect_stdout(Tee(sys.stdout, captured)):
            result = train_local(str(path.parent.parent / "manifest.json"), str(Path(tmp) / "out"), train, model, env)
    intervals = [m for m in step_line.finditer(captured.getvalue()) if int(m.group(1)) > args.skip]
    tokens_per_s = statistics.median(float(m.group(2).replace(",", "")) for m in intervals) if intervals else None
    mfus = [float(m.group(3)) / 100 for m in intervals if m.group(3)]
    return {
        "preset": preset, "mode": "deepspeed", "architecture": architecture, "parameters": result.parameters,
        "vocab_size": vocab, "seq_len": seq_len, "micro_batch": micro, "accumulation": args.accumulation,
        "ranks": ranks, "device": result.device, "precision": train.precision, "zero_stage": train.zero_stage,
        "activation_checkpointing": args.activation_checkpointing, "flops_per_token": result.flops_per_token,
        "steps": args.steps, "tokens_per_s": tokens_per_s,
        "model_tflops_per_s": tokens_per_s * result.flops_per_token / ranks / 1e12 if tokens_per_s else None,
        "mfu": statistics.median(mfus) if mfus else None, "mfu_whole_loop": result.mfu,
        "first_loss": result.losses[0], "last_loss": result.final_loss,
    }  # fmt: skip


class Tee(io.TextIOBase):
    """A text stream writing to several (not a terminal: train_local shows no progress bar)."""

    def __init__(self, *streams):
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", nargs="+", choices=list(PRESETS), default=["llama-1b"])
    parser.add_argument("--no-deepspeed", action="store_true", help="plain torch loop on one device (no DeepSpeed, "
                        "pydantic or MLflow needed)")  # fmt: skip
    parser.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    parser.add_argument("--seq-len", type=int, default=None, help="default 2048 (128 for the tiny presets)")
    parser.add_argument("--micro-batch", type=int, default=None, help="default: the preset's")
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=None, help="DeepSpeed ranks; default 1 GPU, or 2 CPU ranks")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--skip", type=int, default=10, help="steps left out of the timing (warm-up)")
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--precision", default=None, help="default bf16 on GPUs, fp32 on CPU")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model (--no-deepspeed only)")
    parser.add_argument("--sdpa-backend", choices=("flash", "any"), default=None,
                        help="on GPU, --no-deepspeed: force SDPA's flash kernel, or let SDPA choose; default flash, "
                        "any with --compile (torch 2.11 fails to trace the forced flash kernel)")  # fmt: skip
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak of one device when not in the table")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu_mfu.json"))
    args = parser.parse_args(argv)

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is visible")
    if device == "cuda" and args.gpus is None:
        args.gpus = 1
    args.sdpa_backend = args.sdpa_backend or ("any" if args.compile else "flash")
    if args.skip >= args.steps:
        raise SystemExit(f"--skip ({args.skip}) must be below --steps ({args.steps})")
    args.output.parent.mkdir(parents=True, exist_ok=True)
    reports = []
    for preset in args.preset:
        try:
            report = plain_torch(preset, args, device) if args.no_deepspeed else with_deepspeed(preset, args, device)
        except (torch.OutOfMemoryError, RuntimeError) as exc:  # OOM, or no flash kernel for this shape
            report = {"preset": preset, "error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        anchor = ANCHORS.get(preset)
        report.update(anchor_llm_foundry=anchor, anchor_torchtitan_llama3_8b=TORCHTITAN_8B, goal=GOAL)
        reports.append(report)
        print(json.dumps(report), flush=True)
        args.output.write_text(json.dumps(reports, indent=2) + "\n")  # after each: a later preset may time out
    return 0


if __name__ == "__main__":
    sys.exit(main())
