"""Resuming a run: which checkpoint (`pick_resume`), loading it into the engine with this run's
config (`load_resume`), and what a resumed run may change (`resume_changes`): each
TrainConfig key is either applied from the resumed step on, or must match the checkpoint (the
run is refused, naming the key). Nothing is ignored.

The config a tag was written with ("train", "model") is in its run-config.json
(checkpoint.RUN_CONFIG), compared before the engine loads anything: a changed model shape is
refused by name rather than by DeepSpeed's state-dict size mismatch. Tags written before that
file existed are compared from DeepSpeed's client state, after loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from components.train.checkpoint import (
    find_resume_tag,
    load_rank_state,
    read_run_config,
    remove_tag,
    set_rng_states,
    step_tags,
    to_universal,
    to_universal_tag,
)
from components.train.config import FROM_SCRATCH, ModelConfig, TrainConfig
from components.train.data import remap_position
from components.train.optim import apply_config_after_load

# Applied from the resumed step on: the optimizer/schedule values through
# optim.apply_config_after_load (the schedule is recomputed at the resumed step), the rest are
# read afresh each step or by the launcher.
APPLIED_ON_RESUME = {
    "learning_rate": "peak of the recomputed schedule",
    "min_lr_ratio": "floor of the recomputed schedule",
    "warmup_steps": "the recomputed schedule",
    "max_steps": "end of the recomputed schedule (must be >= the resumed step)",
    "weight_decay": "set on the optimizer's decayed group",
    "grad_clip": "set on the optimizer",
    "log_every": "read each step",
    "checkpoint_every": "read each step",
    "keep_checkpoints": "read at each save",
    "nproc_per_node": "the checkpoint is re-sharded (universal checkpoint) for the new world size",
    "preemption_grace_s": "read by the launcher",
    "activation_checkpointing": "compute/memory only, same arithmetic",
    "peak_tflops": "MFU reporting only",
    "system_metrics": "MLflow reporting only",
    "resume": "true whenever a run resumes",
}
# The resumed trajectory or the checkpoint's layout depends on these: another value cannot
# continue the same run.
MUST_MATCH = {
    "seed": "initialisation, data order and dropout",
    "micro_batch_size": "the data position and each step's batch",
    "global_batch_size": "the data position and each step's batch",
    "zero_stage": "the checkpoint's partitioning",
    "precision": "the optimizer's master weights and the checkpoint's layout",
    "offload_optimizer": "where the optimizer state lives (not tried on resume)",
    "offload_params": "where the parameters live (not tried on resume)",
}
# model.* must match: the weights in the checkpoint have its shapes. Output-only keys may change.
MODEL_MAY_CHANGE = {"lora.save_adapter"}


def flat(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def recorded_model(saved: dict[str, Any]) -> dict[str, Any]:
    """The model section a checkpoint was written with, as ModelConfig reads it today: a key the
    checkpoint does not record (written before the key existed) takes the default ModelConfig
    fills in (gpt2's tie_word_embeddings: false). A checkpoint written before the model
    families recorded GPT-2's default shape beside model.base; those keys are dropped."""
    from pydantic import ValidationError

    if saved.get("base") and "hidden_size" not in saved:
        saved = {key: value for key, value in saved.items() if key not in FROM_SCRATCH}
    try:
        return ModelConfig.model_validate(saved).model_dump()
    except ValidationError:  # refused today: compared as recorded, so the run is refused naming the keys
        return {key: saved.get(key, info.default) for key, info in ModelConfig.model_fields.items()}


def resume_changes(
    saved_train: dict[str, Any], saved_model: dict[str, Any] | None, train: TrainConfig, model: ModelConfig, where: str
) -> dict[str, tuple[Any, Any]]:
    """{"train.KEY": (checkpoint's value, this run's)} for the keys changed since the checkpoint
    was written; all of them in APPLIED_ON_RESUME.

    A key the checkpoint does not record (written before the key existed) counts as its default.
    Raises ValueError naming every changed key that must match, with both values and what to do.
    """
    fields = TrainConfig.model_fields
    saved = {key: saved_train.get(key, fields[key].default) for key in fields}
    changed = {f"train.{k}": (saved[k], v) for k, v in train.model_dump().items() if saved[k] != v}
    refused = {k: values for k, values in changed.items() if k.removeprefix("train.") in MUST_MATCH}
    if saved_model is not None:
        before, now = flat(recorded_model(saved_model)), flat(model.model_dump())
        for key in sorted(set(before) | set(now)):
            if key not in MODEL_MAY_CHANGE and before.get(key) != now.get(key):
                refused[f"model.{key}"] = (before.get(key), now.get(key))
    if refused:
        raise ValueError(
            f"cannot resume from {where}: it was written with "
            + ", ".join(f"{k}={old!r} (now {new!r})" for k, (old, new) in refused.items())
            + "; restore those settings, use a fresh output dir, or set train.resume=false"
        )
    unknown = [k for k in changed if k.removeprefix("train.") not in APPLIED_ON_RESUME]
    if unknown:  # a TrainConfig key nobody classified: refuse rather than ignore it
        raise ValueError(f"cannot resume from {where}: {', '.join(unknown)} changed and is not known to be safe to "
                         "change on resume; restore it or set train.resume=false")  # fmt: skip
    return changed


@dataclass
class ResumePoint:
    """The checkpoint a run resumes from."""

    tag: str  # step-N
    saved_world: int  # ranks that wrote it
    load_tag: str  # what the engine loads: tag, or its universal conversion when the world size changed

    @property
    def universal(self) -> bool:
        return self.load_tag != self.tag


@dataclass
class Resumed:
    """Where training goes on from: nothing done yet, or a loaded checkpoint's state."""

    step: int = 0  # optimizer steps done
    losses: list[float] = field(default_factory=list)  # mean loss of each step done
    position: tuple[int, int] = (0, 0)  # data position (epoch, micro batch index per rank), this world size
    changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)  # resume_changes
    point: ResumePoint | None = None


def pick_resume(
    ckpt_dir: Path, train: TrainConfig, model: ModelConfig, rank: int, world: int, converts: bool
) -> ResumePoint | None:
    """The checkpoint under ckpt_dir to resume from (rank 0 decides, every rank gets its answer),
    or None: train.resume is off (rank 0 then removes the earlier run's tags, which would be
    pruned against and mixed with this run's) or there is no complete tag.

    The tag's recorded config (checkpoint.RUN_CONFIG) is compared with this run's first
    (resume_changes): a setting that must match is refused before any weights are loaded.
    A tag written by another number of ranks is converted to a universal checkpoint once per
    directory, by the rank where `converts` is true. A collective: every rank calls it.

    Raises ValueError on every rank (rank 0's message) when resume_changes refuses the tag or
    its RUN_CONFIG is malformed.
    """
    point, refused = None, None
    if rank == 0 and train.resume and (found := find_resume_tag(ckpt_dir)):
        tag, saved_world = found
        try:
            if recorded := read_run_config(ckpt_dir / tag):
                resume_changes(recorded["train"], recorded["model"], train, model, str(ckpt_dir / tag))
        except ValueError as exc:
            refused = str(exc)
        # Optimizer state partitioned over another number of ranks: re-shard through DeepSpeed's
        # universal checkpoint format.
        partitioned = saved_world != world and list((ckpt_dir / tag).glob("*optim_states.pt"))
        point = ResumePoint(tag, saved_world, to_universal_tag(tag) if partitioned else tag)
    if rank == 0 and not train.resume and step_tags(ckpt_dir):
        print(f"[train] resume=false: removing the checkpoints under {ckpt_dir}", flush=True)
        for _, tag in step_tags(ckpt_dir):
            remove_tag(ckpt_dir, tag)
        (ckpt_dir / "latest").unlink(missing_ok=True)
    picked = [point, refused]
    torch.distributed.broadcast_object_list(picked, src=0)
    point, refused = picked
    if refused:  # every rank raises alike, before the engine or a universal conversion
        raise ValueError(refused)
    if point and point.universal:
        if converts:
            print(f"[train] {point.tag} was written by {point.saved_world} ranks, this run has {world}: "
                  "converting it to a universal checkpoint", flush=True)  # fmt: skip
            to_universal(ckpt_dir, point.tag)
        torch.distributed.barrier()
    return point


def load_resume(
    engine, scheduler: torch.optim.lr_scheduler.LambdaLR, point: ResumePoint, ckpt_dir: Path, train: TrainConfig,
    model: ModelConfig, weight_decays: list[float], rank: int, world: int,
) -> Resumed:  # fmt: skip
    """Load point into the engine: weights, optimizer, then this run's learning rate, schedule,
    weight decay and clipping (optim.apply_config_after_load), the data position on this world
    size, this rank's RNG states. Rank 0 removes tags past the one resumed and prints what
    changed. A collective: every rank calls it.

    Raises RuntimeError when DeepSpeed cannot load the tag, ValueError when the checkpoint is
    past train.max_steps or a setting that must match changed (resume_changes: pick_resume
    compared it already unless the tag predates checkpoint.RUN_CONFIG).
    """
    _, state = engine.load_checkpoint(str(ckpt_dir), tag=point.load_tag)
    if state is None:
        raise RuntimeError(f"{ckpt_dir / point.load_tag}: DeepSpeed could not load this checkpoint")
    step = int(state["step"])
    changed = resume_changes(state.get("train", {}), state.get("model"), train, model, str(ckpt_dir / point.tag))
    if step > train.max_steps:
        raise ValueError(f"checkpoint {point.tag} is past max_steps={train.max_steps}: raise max_steps")
    losses = [float(x) for x in state["losses"]]
    # DeepSpeed restored the checkpoint's lr, schedule, weight decay and clipping: this run's config rules.
    next_lr = apply_config_after_load(engine.optimizer, scheduler, train, step, weight_decays)[0]
    position, skipped = remap_position(tuple(state["data_position"]), point.saved_world, world, train.micro_batch_size)
    if mine := load_rank_state(ckpt_dir / point.tag, rank, point.saved_world):
        set_rng_states(mine["rng"])  # a rank the saved run did not have keeps its fresh seed
    if rank == 0:
        # Tags past the one resumed (cut short, or not yet named by `latest`) would mix with
        # the ones this run writes: drop them.
        for step_n, later in step_tags(ckpt_dir):
            if step_n > step:
                remove_tag(ckpt_dir, later)
        moved = f", {skipped} sequences skipped to re-deal the batch over {world} ranks" if skipped else ""
        print(f"[train] resumed from {ckpt_dir / point.tag} ({point.saved_world} ranks): step {step}, data position "
              f"epoch {position[0]} micro batch {position[1]}{moved}", flush=True)  # fmt: skip
        for key, (old, new) in changed.items():
            print(f"[train] resume: {key} changed since {point.tag}: {old!r} -> {new!r}, applied from step "
                  f"{step + 1}", flush=True)  # fmt: skip
        print(f"[train] resume: learning rate for step {step + 1}: {next_lr:.6g} (schedule from this "
              "run's config)", flush=True)  # fmt: skip
    torch.distributed.barrier()
    return Resumed(step, losses, position, changed, point)
