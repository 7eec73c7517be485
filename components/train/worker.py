"""The training recipe: one process per rank, launched by torchrun (or any launcher that sets
RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT).

    DS_ACCELERATOR=cpu OMP_NUM_THREADS=1 torchrun --standalone --nproc_per_node=2 \\
        -m components.train.worker --data TOK/manifest.json --output OUT --config train.json

`train.json` holds {"train": TrainConfig, "model": ModelConfig} (run_config.write_worker_config).
Read top to bottom: set-up, resume, loop, checkpoint, consolidation, result. Rank 0 alone
prints, logs to MLflow (only when MLFLOW_RUN_ID is set) and writes the model and result.json.

One loop for pretraining and instruction tuning: --data is the tokenizer step's packed-tokens
manifest or the SFT tokenize step's sft-packed one (data.training_data); a batch becomes the
model's kwargs in model.model_inputs (packed conversations: a block-diagonal causal mask and
restarting position ids). The loss of a micro batch is the HF causal-LM loss, the mean over its
labelled tokens (all next tokens in pretraining; the assistant's in SFT). Under gradient
accumulation DeepSpeed scales each micro batch's loss by 1/accumulation steps and averages the
gradients over ranks, so a step's gradient is the plain mean over its micro batches of those
per-micro-batch means: each micro batch weighs the same, whatever its number of labelled tokens
(in SFT, a token of a micro batch with few assistant tokens weighs more than one of a micro batch
with many; pretraining's micro batches all label the same number). The logged loss is that same
mean of means. An sft-packed model is saved with the manifest's tokenizer (its chat template) and
generation stopping at the end-of-turn token.

Output layout under OUT (an s3:// OUT is staged on each node's disk: checkpoints are uploaded
in the background as they are committed, the rest at the end; see output.py):
    checkpoints/latest, checkpoints/step-N/...   DeepSpeed ZeRO checkpoint (all ranks), every
                                                 `checkpoint_every` steps and at the end; the
                                                 newest `keep_checkpoints` tags are kept
    model/                                       consolidated fp32 model (safetensors) + tokenizer
    result.json                                  losses, throughput, fixed-batch loss check (result.py)
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

from components import storage
from components.hf_model import context_length
from components.manifest import Manifest
from components.sft.tokenize import KIND as SFT_KIND
from components.sft.tokenize import stop_token_ids
from components.train.checkpoint import Checkpointer
from components.train.consolidate import consolidated_state_dict
from components.train.data import labelled_tokens, micro_batches, to_device, training_data
from components.train.ds_config import deepspeed_config
from components.train.metrics_shipper import MetricsShipper
from components.train.model import (
    build_or_load,
    compute_dtype,
    fetch_base,
    fixed_batch_loss,
    load_consolidated,
    model_inputs,
    parameter_count,
)
from components.train.optim import lr_lambda, make_optimizer
from components.train.output import open_output
from components.train.preemption import PREEMPTED_EXIT, Preemption
from components.train.result import TrainResult
from components.train.resume import Resumed, load_resume, pick_resume
from components.train.run_config import read_worker_config
from components.train.telemetry import StepMeter, device_name, flops_per_token, mfu, peak_flops


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m components.train.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True,
                        help="URI of the tokenizer step's manifest.json (packed-tokens) or the SFT tokenize step's "
                        "(sft-packed)")  # fmt: skip
    parser.add_argument("--output", required=True, help="URI to write checkpoints/, model/ and result.json under")
    parser.add_argument("--config", required=True, help='JSON file: {"train": TrainConfig, "model": ModelConfig}')
    return parser.parse_args(argv)


def rank_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from the launcher's environment; a lone rank run by hand
    gets rank 0 of 1 on 127.0.0.1 (no mpi4py lookup)."""
    rank = int(os.environ.setdefault("RANK", "0"))
    world = int(os.environ.setdefault("WORLD_SIZE", "1"))
    local_rank = int(os.environ.setdefault("LOCAL_RANK", "0"))
    os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    os.environ.setdefault("MASTER_PORT", "29500")
    return rank, world, local_rank


def init_distributed(local_rank: int) -> str:
    """Start DeepSpeed's process group (gloo on CPU, NCCL on GPUs); returns the accelerator name."""
    import deepspeed
    from deepspeed.accelerator import get_accelerator

    accelerator = get_accelerator().device_name()
    if accelerator == "cpu":
        # DeepSpeed compiles a shared-memory all-reduce op (~40 s, needs g++) when its comm
        # backend starts; only inference_all_reduce uses it, training runs on gloo. Mark it
        # unavailable so a fresh (or compiler-less) container trains without building anything.
        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    deepspeed.init_distributed(dist_backend="gloo" if accelerator == "cpu" else "nccl", verbose=False)
    if accelerator != "cpu":
        get_accelerator().set_device(local_rank)
    return accelerator


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    started = time.perf_counter()

    # ---- set-up: ranks, backend, config, data, output ------------------------------------------
    rank, world, local_rank = rank_env()
    master = rank == 0
    preemption = Preemption()
    accelerator = init_distributed(local_rank)
    train, model_cfg = read_worker_config(args.config)
    preemption.grace_s = train.preemption_grace_s
    manifest = Manifest.load(args.data)
    data = training_data(manifest)
    seq_len = data.seq_len
    dtype = compute_dtype(train.precision)  # the engine's forward; the attention mask of packed conversations
    tokens_per_step = train.global_batch_size * seq_len
    output = open_output(args.output, train, rank, local_rank)
    ckpt_dir = output.checkpoints

    # ---- which checkpoint to resume from (rank 0 decides, every rank loads it) -----------------
    # a universal conversion runs once per folder: each node's staging, or the shared output
    point = pick_resume(ckpt_dir, train, model_cfg, rank, world, converts=local_rank == 0 if output.mirror else master)
    ds_config = deepspeed_config(train, world, accelerator, load_universal=bool(point and point.universal))
    accum = ds_config["gradient_accumulation_steps"]

    # ---- model, optimizer, schedule, engine ----------------------------------------------------
    import deepspeed

    eos = manifest.facts.get("eos_token_id")
    vocab_size = int(manifest.facts["vocab_size"])
    base_dir = fetch_base(model_cfg.base, local_rank) if model_cfg.base else None
    model = build_or_load(model_cfg, vocab_size, train.seed, eos, base_dir)
    data.check(manifest.facts, train, context_length(model), model.config.vocab_size, world)
    n_params = parameter_count(model)
    if train.activation_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    # Before deepspeed.initialize: ZeRO-3 empties the parameters it partitions.
    per_token_flops = flops_per_token(model, model.config, seq_len)
    device_label = device_name(accelerator)
    peak = peak_flops(device_label, train.precision, train.peak_tflops)
    if accelerator == "cuda" and not train.offload_params:
        model.to(torch.device("cuda", local_rank))  # on the GPU first, so AdamW can be the fused kernel
    optimizer = make_optimizer(model, train)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(train))
    weight_decays = [group["weight_decay"] for group in optimizer.param_groups]
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config)
    device = engine.device
    torch.manual_seed(train.seed + rank)  # dropout differs per rank, reproducibly

    # ---- resume: model, optimizer, schedule, step, data position, RNG, loss history ------------
    resumed = Resumed()
    if point:
        resumed = load_resume(engine, scheduler, point, ckpt_dir, train, model_cfg, weight_decays, rank, world)
    done_steps, losses = resumed.step, resumed.losses
    checkpointer = Checkpointer(engine, ckpt_dir, output.mirror, train, model_cfg, len(data), accum, rank, world)

    shipper = MetricsShipper(enabled=master, system_metrics=train.system_metrics)
    ok = False
    try:
        if master:
            print(
                f"[train] world_size={world} zero_stage={train.zero_stage} precision={train.precision} "
                f"accelerator={accelerator} model={model.config.model_type} params={n_params:,} "
                f"sequences={len(data):,} seq_len={seq_len}{data.summary}",
                flush=True,
            )
            print(
                f"[train] tokens per step: {tokens_per_step:,} = {train.global_batch_size} sequences "
                f"({train.micro_batch_size} micro x {accum} accumulation x {world} ranks) x {seq_len}",
                flush=True,
            )
        shipper.params(
            {
                "world_size": world,
                "tokens_per_step": tokens_per_step,
                "parameters": n_params,
                "gradient_accumulation_steps": accum,
                "accelerator": accelerator,
                "device": device_label,
                "flops_per_token": per_token_flops,
                "peak_flops_per_device": peak or "unknown",
            },
            ds_config,
        )
        if point:  # tags, not params: MLflow params cannot change, and a retried step logs into its run
            changed = {f"resume.changed.{key}": f"{old!r} -> {new!r}" for key, (old, new) in resumed.changed.items()}
            shipper.tags({"resume.from_step": str(done_steps), **changed})

        # ---- the loop --------------------------------------------------------------------------
        batches = micro_batches(len(data), train.micro_batch_size, rank, world, train.seed, *resumed.position)
        saved_step = done_steps if point else -1
        meter = StepMeter(tokens_per_step, per_token_flops, world, peak, accelerator, train.max_steps)
        loop_started = time.perf_counter()
        for step in range(done_steps + 1, train.max_steps + 1):
            step_started = time.perf_counter()
            lr = engine.get_lr()[0]  # the rate this step's update uses
            # [sum of micro-batch losses, labelled tokens]: one all-reduce for both
            figures = torch.zeros(2, dtype=torch.float64, device=device)
            for _ in range(accum):
                batch = to_device(data.take(next(batches)), device)
                loss = engine(**model_inputs(batch, dtype)).loss  # HF shifts labels inside
                engine.backward(loss)
                engine.step()  # updates only on the accumulation boundary
                figures[0] += loss.detach().double()
                figures[1] += labelled_tokens(batch)
            torch.distributed.all_reduce(figures)
            loss_sum, labelled = figures.tolist()
            mean_loss = loss_sum / accum / world
            losses.append(mean_loss)
            step_s = time.perf_counter() - step_started
            meter.stepped()

            if master and (step % train.log_every == 0 or step in (1, train.max_steps)):
                line, metrics = meter.report(step, mean_loss, lr, engine.get_global_grad_norm())
                metrics["train/labelled_share"] = labelled / tokens_per_step  # of the step's token slots
                print(f"{line} | labelled {labelled / tokens_per_step:.1%}", flush=True)
                shipper.metrics(metrics, step=step)

            if train.checkpoint_every and step % train.checkpoint_every == 0:
                save_s = checkpointer.save(step, losses)
                saved_step = step
                if master:  # a preempted run must also upload the tag it saves before the grace ends
                    preemption.warn_if_too_slow(step_s, save_s + (output.mirror.upload_s if output.mirror else 0.0))
            if preemption.agreed():
                if master:
                    left = preemption.left_s()
                    print(f"[train] SIGTERM: checkpointing step {step}"
                          + (f", {left:.0f} s of the {train.preemption_grace_s} s grace left" if left is not None else ""),
                          flush=True)  # fmt: skip
                if saved_step != step:
                    checkpointer.save(step, losses)
                if output.mirror:
                    output.mirror.flush()
                if master:
                    where = output.mirror.remote if output.mirror else ckpt_dir
                    print(f"[train] preempted at step {step}, checkpoint step-{step} written to {where}; "
                          "run again with the same output to resume", flush=True)  # fmt: skip
                torch.distributed.barrier()
                torch.distributed.destroy_process_group()
                return PREEMPTED_EXIT  # the finally below marks the MLflow run FAILED
        train_s = time.perf_counter() - loop_started
        steps_run = train.max_steps - done_steps

        # ---- checkpoint, then consolidate on rank 0 ---------------------------------------------
        fixed = to_device(data.take(np.arange(train.micro_batch_size)), device)
        engine_loss = fixed_batch_loss(engine, fixed, dtype)  # every rank: ZeRO-3 gathers weights in forward
        tag = f"step-{train.max_steps}"
        if saved_step != train.max_steps:
            checkpointer.save(train.max_steps, losses)
        output.finish_checkpoints(tag, world)
        torch.distributed.barrier()

        if master:
            consolidated = build_or_load(model_cfg, vocab_size, train.seed, eos, base_dir)
            load_consolidated(consolidated, consolidated_state_dict(ckpt_dir / tag, consolidated),
                              trained_only=model_cfg.lora is not None)  # the frozen base stays fp32 as loaded
            consolidated_loss = fixed_batch_loss(consolidated, to_device(fixed, "cpu"))  # fp32
            stops = stop_token_ids(manifest.facts) if manifest.kind == SFT_KIND else None
            output.save_model(consolidated, model_cfg, manifest.facts.get("tokenizer_uri"), stops)

            # ---- the result ---------------------------------------------------------------------
            tokens_per_s = steps_run * tokens_per_step / train_s if steps_run else 0.0
            result = TrainResult(
                final_loss=losses[-1],
                losses=losses,
                steps=train.max_steps,
                tokens=train.max_steps * tokens_per_step,
                tokens_per_s=tokens_per_s,  # of the steps this process ran (all of them unless it resumed)
                mfu=mfu(tokens_per_s, per_token_flops, world, peak),
                flops_per_token=per_token_flops,
                device=device_label,
                steps_per_s=steps_run / train_s if steps_run else 0.0,
                resumed_from_step=done_steps if point else None,
                world_size=world,
                zero_stage=train.zero_stage,
                precision=train.precision,
                accelerator=accelerator,
                parameters=n_params,
                tokens_per_step=tokens_per_step,
                gradient_accumulation_steps=accum,
                fixed_batch_loss_engine=engine_loss,
                fixed_batch_loss_consolidated=consolidated_loss,
                checkpoint_uri=storage.join(args.output, "checkpoints"),
                checkpoint_tag=tag,
                model_uri=storage.join(args.output, "model"),
                data_digest=manifest.digest,
                duration_s=time.perf_counter() - started,
            )
            summary = {"train/final_loss": result.final_loss, "train/fixed_batch_loss": consolidated_loss}
            if result.mfu is not None:
                summary["train/mfu_overall"] = result.mfu
            shipper.metrics(summary, step=train.max_steps)
            output.write_result(result)  # last: result.json marks the output complete
            print(
                f"[train] done: final loss {result.final_loss:.4f}, {result.tokens_per_s:,.0f} tok/s, "
                f"fixed-batch loss engine {engine_loss:.6f} / consolidated {consolidated_loss:.6f} -> {args.output}",
                flush=True,
            )
        torch.distributed.barrier()
        output.close()
        ok = True
    finally:
        # preempted: what is left of the grace, less a margin (close() may wait 5 s past it) to exit first
        left = preemption.left_s()
        shipper.close(ok, drain_s=None if left is None else max(1.0, left - 10.0))
    torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skip interpreter teardown: gloo's worker threads can still hold tensors whose release during
    # finalization aborts the process ("terminate called without an active exception", SIGABRT)
    # after a run that finished and wrote everything (pytorch/pytorch#179291).
    os._exit(status)
