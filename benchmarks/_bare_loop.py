"""The baseline of benchmarks.train_loop: a bare `deepspeed.initialize` loop, run by torchrun.

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 \
        -m benchmarks._bare_loop --data TOK/manifest.json --config train.json

Same model (build_model), same packed sequences in the same micro batch order (micro_batches),
same DeepSpeed config (deepspeed_config), same torch AdamW param groups and LambdaLR, same
number of steps as components.train.worker. What it leaves out is everything the worker adds
to a step: the cross-rank mean loss (all_reduce + .item()), the memory-mapped gather of rows,
the SIGTERM agreement, metrics and MLflow. The sequences are read into one tensor up front and
indexed per micro batch. Rank 0 prints one line per step, `[bare] step N/M | X ms/step`, and at
the end what those worker extras cost per step, timed alone: `[bare] worker extras X ms/step ...`.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

from components.manifest import Manifest
from components.train.ds_config import deepspeed_config
from components.train.data import micro_batches
from components.train.model import build_model
from components.train.optim import lr_lambda, make_optimizer
from components.train.run_config import read_worker_config


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks._bare_loop")
    parser.add_argument("--data", required=True)
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])

    import deepspeed

    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # as the worker: build nothing
    deepspeed.init_distributed(dist_backend="gloo", verbose=False)

    train, model_cfg = read_worker_config(args.config)
    manifest = Manifest.load(args.data)
    tokens = torch.from_numpy(np.concatenate([np.load(s.uri) for s in manifest.shards]).astype(np.int64))
    model = build_model(model_cfg, int(manifest.facts["vocab_size"]), train.seed, manifest.facts.get("eos_token_id"))
    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train))
    ds_config = deepspeed_config(train, world, "cpu")
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    accum = ds_config["gradient_accumulation_steps"]
    torch.manual_seed(train.seed + rank)

    batches = micro_batches(len(tokens), train.micro_batch_size, rank, world, train.seed)
    for step in range(1, train.max_steps + 1):
        started = time.perf_counter()
        for _ in range(accum):
            batch = tokens[next(batches)]
            loss = engine(input_ids=batch, labels=batch).loss
            engine.backward(loss)
            engine.step()
        if rank == 0:
            print(
                f"[bare] step {step}/{train.max_steps} | {(time.perf_counter() - started) * 1000:.1f} ms/step",
                flush=True,
            )
    extras(manifest, tokens, train, accum, rank, world)
    torch.distributed.destroy_process_group()


def extras(manifest: Manifest, tokens: torch.Tensor, train, accum: int, rank: int, world: int, n: int = 300) -> None:
    """Time, alone, what the worker's loop does per step beyond this one: read each micro batch
    from the memory-mapped shards (PackedSequences.take) instead of indexing a tensor, all-reduce
    the mean loss and .item() it, and all-reduce the SIGTERM flag (Preemption.agreed)."""
    from components.train.data import PackedSequences
    from components.train.preemption import Preemption

    data, preemption = PackedSequences(manifest), Preemption()
    batches = micro_batches(len(tokens), train.micro_batch_size, rank, world, train.seed)
    timings = {}
    for name in ("index", "take", "all_reduce"):
        torch.distributed.barrier()
        started = time.perf_counter()
        for _ in range(n):
            if name == "all_reduce":
                mean_loss = torch.full((), 2.0)
                torch.distributed.all_reduce(mean_loss)
                (mean_loss / world).item()
                preemption.agreed()
                continue
            for _ in range(accum):
                data.take(next(batches)) if name == "take" else tokens[next(batches)]
        timings[name] = (time.perf_counter() - started) * 1000 / n
    if rank == 0:
        added = timings["take"] - timings["index"] + timings["all_reduce"]
        print(
            f"[bare] worker extras {added:.3f} ms/step: take {timings['take']:.3f} - index {timings['index']:.3f}"
            f" + 2 scalar all-reduces {timings['all_reduce']:.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
