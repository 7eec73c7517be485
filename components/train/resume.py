"""What a resumed run may change: each TrainConfig key is either applied from the resumed step
on, or must match the checkpoint (the run is refused, naming the key). Nothing is ignored.

The checkpoint's client state holds the config it was written with ("train", "model").
"""

from __future__ import annotations

from typing import Any

from components.train.config import ModelConfig, TrainConfig

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
        before, now = flat(saved_model), flat(model.model_dump())
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
