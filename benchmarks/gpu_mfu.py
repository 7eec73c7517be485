"""Training throughput and MFU of our worker on GPUs: a ~350M–1B GPT at seq 2048, bf16, ZeRO-2.

    .venv/bin/python -m benchmarks.gpu_mfu --preset 760m --micro-batch 8          # one H100
    .venv/bin/python -m benchmarks.gpu_mfu --preset tiny --peak-tflops 0.05       # CPU smoke run

It runs the real training step (`train_local`: torchrun + components.train.worker) on random
tokens, so what it measures is our loop, DeepSpeed and the model, nothing else. MFU is the
worker's own (PaLM's formula, peak from its GPU table): the median of the log intervals after
the first `--skip` steps, so start-up and the first cuDNN/NCCL calls do not count.
Anchors, llm-foundry's published H100 bf16 MFU: 34.9 % (760M), 41.8 % (1B). Goal: >= 50 %.
Results: benchmarks/results/gpu_mfu.json.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

from components.manifest import Manifest, shard_info
from components.train.config import ModelConfig, TrainConfig
from components.train.launch import train_local

PRESETS = {  # GPT-2 style, untied; 760m and 1b match llm-foundry's d_model / n_layers
    "tiny": {"n_layer": 2, "n_head": 4, "n_embd": 128},
    "350m": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
    "760m": {"n_layer": 24, "n_head": 16, "n_embd": 1536},
    "1b": {"n_layer": 24, "n_head": 16, "n_embd": 2048},
}
ANCHORS = {"760m": 0.349, "1b": 0.418}  # llm-foundry, H100, bf16
VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 64 for the tensor cores
STEP_LINE = re.compile(r"\[train\] step (\d+)/\d+ .*?\| ([\d,]+) tok/s(?: \| MFU ([\d.]+)%)?")


def random_tokens(root: Path, sequences: int, seq_len: int, vocab: int) -> str:
    path = root / "train" / "part-00000.npy"
    path.parent.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(path, rng.integers(0, vocab, size=(sequences, seq_len), dtype=np.int32), allow_pickle=False)
    manifest = Manifest(kind="packed-tokens", root=str(root), shards=[shard_info(str(path), sequences)],
                        facts={"seq_len": seq_len, "vocab_size": vocab, "eos_token_id": 0})  # fmt: skip
    manifest.save(str(root / "manifest.json"))
    return str(root / "manifest.json")


class Tee(io.TextIOBase):
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
    parser.add_argument("--preset", choices=sorted(PRESETS), default="760m")
    parser.add_argument("--seq-len", type=int, default=None, help="default 2048 (128 for tiny)")
    parser.add_argument("--micro-batch", type=int, default=8)
    parser.add_argument("--accumulation", type=int, default=1)
    parser.add_argument("--gpus", type=int, default=None, help="ranks; default: every visible GPU, else 2 CPU ranks")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--skip", type=int, default=10, help="steps left out of the MFU median")
    parser.add_argument("--zero", type=int, default=2)
    parser.add_argument("--precision", default=None, help="default bf16 on GPUs, fp32 on CPU")
    parser.add_argument("--activation-checkpointing", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=None, help="peak of one device when not in the table")
    parser.add_argument("--output", type=Path, default=Path("benchmarks/results/gpu_mfu.json"))
    args = parser.parse_args(argv)

    import torch

    cuda = torch.cuda.is_available()
    ranks = args.gpus or (torch.cuda.device_count() if cuda else 2)
    seq_len = args.seq_len or (128 if args.preset == "tiny" else 2048)
    model = ModelConfig(**PRESETS[args.preset], n_positions=seq_len)
    train = TrainConfig(
        zero_stage=args.zero, nproc_per_node=ranks, micro_batch_size=args.micro_batch,
        global_batch_size=args.micro_batch * args.accumulation * ranks, max_steps=args.steps,
        learning_rate=3e-4, warmup_steps=5, log_every=5, precision=args.precision or ("bf16" if cuda else "fp32"),
        activation_checkpointing=args.activation_checkpointing, peak_tflops=args.peak_tflops, system_metrics=False,
    )  # fmt: skip
    sequences = train.global_batch_size * (args.steps + 1)
    captured = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="homegrown-mfu-") as tmp:
        manifest_uri = random_tokens(Path(tmp) / "data", sequences, seq_len, VOCAB)
        with contextlib.redirect_stdout(Tee(sys.stdout, captured)):
            result = train_local(manifest_uri, str(Path(tmp) / "out"), train, model)

    intervals = [m for m in STEP_LINE.finditer(captured.getvalue()) if int(m.group(1)) > args.skip]
    tokens_per_s = statistics.median(float(m.group(2).replace(",", "")) for m in intervals) if intervals else None
    mfus = [float(m.group(3)) / 100 for m in intervals if m.group(3)]
    mfu = statistics.median(mfus) if mfus else None
    report = {
        "preset": args.preset, "model": model.model_dump(), "parameters": result.parameters, "seq_len": seq_len,
        "ranks": ranks, "device": result.device, "precision": train.precision, "zero_stage": train.zero_stage,
        "micro_batch": args.micro_batch, "global_batch": train.global_batch_size,
        "activation_checkpointing": args.activation_checkpointing, "flops_per_token": result.flops_per_token,
        "tokens_per_s": tokens_per_s, "mfu": mfu, "mfu_whole_loop": result.mfu,
        "anchor_llm_foundry": ANCHORS.get(args.preset), "goal": 0.5,
    }  # fmt: skip
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=2) + "\n")
    shown = f"{mfu:.1%}" if mfu is not None else "n/a (peak unknown: --peak-tflops)"
    anchor = f" | llm-foundry {ANCHORS[args.preset]:.1%}" if args.preset in ANCHORS else ""
    print(f"\n{args.preset} ({result.parameters / 1e6:,.0f}M) on {ranks} x {result.device}, seq {seq_len}, "
          f"{train.precision}, ZeRO-{train.zero_stage}: {tokens_per_s or 0:,.0f} tokens/s, MFU {shown}{anchor} "
          f"| goal 50% -> {args.output}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
