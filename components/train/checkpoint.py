"""Atomic DeepSpeed checkpoints, picking the one to resume from, and world-size changes.

DeepSpeed's save_checkpoint(save_latest=True) has rank 0 write `latest` as soon as rank 0's
own files are written (other ranks may still be writing) and not atomically. So the worker
saves with save_latest=False, then every rank writes its own `rank-R-of-W.pt` (RNG states,
data position) atomically, then a barrier, then rank 0 writes `latest` atomically. A tag is
complete when every `rank-R-of-W.pt` is there; `latest` only ever names a complete tag.
Rank 0 also writes `run-config.json` (the run's train and model sections) before its rank
file, so a complete tag has it: a resume compares it with its own config before DeepSpeed
loads any weights (resume.pick_resume).

A tag written by W ranks resumes on another world size through DeepSpeed's universal
checkpoint: rank 0 converts `step-N` to `step-N-universal` (into a temporary folder, renamed
when done) and the engine loads it with `checkpoint.load_universal`.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from deepspeed.checkpoint.constants import (
    UNIVERSAL_CHECKPOINT_INFO,
    UNIVERSAL_CHECKPOINT_VERSION_KEY,
    UNIVERSAL_CHECKPOINT_VERSION_VALUE,
)

from components import storage
from components.train.config import ModelConfig, TrainConfig
from components.train.data import data_position

STEP_TAG = re.compile(r"^step-(\d+)$")
RANK_FILE = re.compile(r"^rank-(\d+)-of-(\d+)\.pt$")
UNIVERSAL_SUFFIX = "-universal"
RUN_CONFIG = "run-config.json"  # {"train": TrainConfig dump, "model": ModelConfig dump}
# ds_to_universal refuses a checkpoint whose client state lacks this (Megatron-DeepSpeed writes it).
UNIVERSAL_INFO = {UNIVERSAL_CHECKPOINT_INFO: {UNIVERSAL_CHECKPOINT_VERSION_KEY: UNIVERSAL_CHECKPOINT_VERSION_VALUE}}


def rank_file(tag_dir: Path, rank: int, world: int) -> Path:
    return tag_dir / f"rank-{rank}-of-{world}.pt"


def tag_world(tag_dir: Path) -> int | None:
    """The world size that wrote a complete tag, or None if the tag is incomplete."""
    if not tag_dir.is_dir() or not list(tag_dir.glob("*model_states.pt")):
        return None
    found: dict[int, set[int]] = {}
    for path in tag_dir.iterdir():
        if m := RANK_FILE.match(path.name):
            found.setdefault(int(m.group(2)), set()).add(int(m.group(1)))
    complete = [world for world, ranks in found.items() if ranks == set(range(world))]
    return max(complete) if complete else None


def step_tags(ckpt_dir: Path) -> list[tuple[int, str]]:
    """(step, tag) of the step-N directories under ckpt_dir, oldest first."""
    if not ckpt_dir.is_dir():
        return []
    found = [(int(m.group(1)), p.name) for p in ckpt_dir.iterdir() if p.is_dir() and (m := STEP_TAG.match(p.name))]
    return sorted(found)


def find_resume_tag(ckpt_dir: Path) -> tuple[str, int] | None:
    """(tag, world size that wrote it): the tag `latest` names if complete, else the newest
    complete step-N tag, else None."""
    latest = ckpt_dir / "latest"
    candidates = [latest.read_text().strip()] if latest.is_file() else []
    candidates += [tag for _, tag in reversed(step_tags(ckpt_dir))]
    for tag in candidates:
        if tag and (world := tag_world(ckpt_dir / tag)):
            return tag, world
    return None


def remove_tag(ckpt_dir: Path, tag: str) -> None:
    shutil.rmtree(ckpt_dir / tag, ignore_errors=True)
    shutil.rmtree(ckpt_dir / f"{tag}{UNIVERSAL_SUFFIX}", ignore_errors=True)


def rng_states() -> dict[str, Any]:
    """RNG states as tensors and plain values only, so they load with weights_only=True."""
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, torch.tensor(internal, dtype=torch.int64), gauss],
        "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
    }


def set_rng_states(states: dict[str, Any]) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal.tolist()), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])


def save_checkpoint(
    engine, ckpt_dir: Path, step: int, client_state: dict[str, Any], keep: int, rank: int, world: int
) -> str:
    """Save tag step-N on every rank, then point `latest` at it and prune old tags (rank 0).
    Rank 0 writes RUN_CONFIG (client_state's "train" and "model") into the tag before its rank file."""
    tag = f"step-{step}"
    tag_dir = ckpt_dir / tag
    state = {**client_state, **UNIVERSAL_INFO}
    engine.save_checkpoint(str(ckpt_dir), tag=tag, client_state=state, save_latest=False)  # ends in a barrier
    if rank == 0:
        write_run_config(tag_dir, client_state["train"], client_state["model"])
    mine = {"rng": rng_states(), "step": step, "data_position": client_state["data_position"]}
    final = rank_file(tag_dir, rank, world)
    partial = final.with_suffix(".pt.partial")
    torch.save(mine, partial)
    os.replace(partial, final)
    torch.distributed.barrier()  # every rank's files are in place
    if rank == 0:
        storage.write_text(str(ckpt_dir / "latest"), tag)  # atomic: the commit point
        for _, old in step_tags(ckpt_dir)[:-keep]:
            if old != tag:
                remove_tag(ckpt_dir, old)
    return tag


def write_run_config(tag_dir: Path, train: dict[str, Any], model: dict[str, Any]) -> None:
    """Write tag_dir/RUN_CONFIG atomically (a partial file renamed into place)."""
    final = tag_dir / RUN_CONFIG
    partial = final.with_suffix(".json.partial")
    partial.write_text(json.dumps({"train": train, "model": model}, indent=1, sort_keys=True))
    os.replace(partial, final)


def read_run_config(tag_dir: Path) -> dict[str, Any] | None:
    """The {"train": ..., "model": ...} a tag was written with, or None for a tag written before
    tags recorded it (its config is then read from DeepSpeed's client state, after loading).

    Raises ValueError naming the file when it is there but not such a JSON object."""
    path = tag_dir / RUN_CONFIG
    if not path.is_file():
        return None
    try:
        recorded = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON ({exc}); remove the tag or set train.resume=false") from None
    if not isinstance(recorded, dict) or not isinstance(recorded.get("train"), dict) or not isinstance(
        recorded.get("model"), dict
    ):
        raise ValueError(f"{path}: expected an object with 'train' and 'model' objects; remove the tag or set "
                         "train.resume=false")  # fmt: skip
    return recorded


def load_rank_state(tag_dir: Path, rank: int, saved_world: int) -> dict[str, Any] | None:
    """This rank's RNG states and data position, if the tag was written with this rank in it."""
    path = rank_file(tag_dir, rank, saved_world)
    return torch.load(path, weights_only=True) if path.is_file() else None


def to_universal_tag(tag: str) -> str:
    return f"{tag}{UNIVERSAL_SUFFIX}"


def to_universal(ckpt_dir: Path, tag: str) -> str:
    """Convert tag to a universal checkpoint (once per directory); returns the universal tag."""
    universal = to_universal_tag(tag)
    target = ckpt_dir / universal
    if (target / "zero").is_dir():
        return universal
    partial = ckpt_dir / f"{universal}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    command = [
        sys.executable, "-m", "deepspeed.checkpoint.ds_to_universal",
        "--input_folder", str(ckpt_dir / tag), "--output_folder", str(partial),
        "--num_extract_workers", "1", "--num_merge_workers", "1",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-20:])
        raise RuntimeError(f"{ckpt_dir / tag}: converting to a universal checkpoint failed:\n{tail}")
    os.replace(partial, target)
    (ckpt_dir / "latest_universal").unlink(missing_ok=True)  # the converter's pointer (to .partial); unused
    return universal


class Checkpointer:
    """Saves the run's tag step-N (every rank calls `save`) with the client state a resume needs:
    the step, the data position, the loss history, the world size and the run's config; with a
    mirror, uploads it in the background."""

    def __init__(
        self, engine, ckpt_dir: Path, mirror: RemoteMirror | None, train: TrainConfig, model: ModelConfig,
        sequences: int, accum: int, rank: int, world: int,
    ) -> None:  # fmt: skip
        self.engine, self.ckpt_dir, self.mirror = engine, ckpt_dir, mirror
        self.train, self.model = train, model
        self.sequences, self.accum, self.rank, self.world = sequences, accum, rank, world

    def client_state(self, step: int, losses: list[float]) -> dict[str, Any]:
        micro = self.train.micro_batch_size
        return {
            "step": step,
            "data_position": list(data_position(step * self.accum, self.sequences, micro, self.world)),
            "losses": list(losses),
            "world_size": self.world,
            "train": self.train.model_dump(),
            "model": self.model.model_dump(),
        }

    def save(self, step: int, losses: list[float]) -> float:
        """Save (and start mirroring) tag step-N after `step` optimizer steps; the seconds the save took."""
        if self.mirror:
            self.mirror.flush()  # the previous upload is done before its local files can be pruned
        started = time.perf_counter()
        state = self.client_state(step, losses)
        keep = self.train.keep_checkpoints
        tag = save_checkpoint(self.engine, self.ckpt_dir, step, state, keep, self.rank, self.world)
        save_s = time.perf_counter() - started
        if self.mirror:
            self.mirror.push(tag)
        return save_s


class RemoteMirror:
    """Checkpoints staged on each node's disk, mirrored to an s3:// prefix.

    Every node's local rank 0 uploads the files its node wrote for a tag, in a background
    thread, so training goes on while it uploads. The tag is committed remotely -- `latest`
    written, old tags pruned, by global rank 0 -- once every node's upload has finished: at the
    next checkpoint, or at `flush()` (end of run, preemption). A run killed before that resumes
    from the previous committed tag. `pull()` brings the committed tag (all nodes' files) back.
    """

    def __init__(self, remote: str, local: Path, rank: int, local_rank: int, keep: int):
        self.remote, self.local = remote, local
        self.rank, self.local_rank, self.keep = rank, local_rank, keep
        self.pending: str | None = None
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        self.upload_s = 0.0  # how long this node's last upload took

    def pull(self) -> str | None:
        """Download the remote committed tag into the local dir (local rank 0 of each node)."""
        tag = None
        if self.local_rank == 0 and storage.exists(storage.join(self.remote, "latest")):
            tag = storage.read_text(storage.join(self.remote, "latest")).strip()
            storage.download_dir(storage.join(self.remote, tag), self.local / tag, skip_existing=True)
            storage.write_text(str(self.local / "latest"), tag)
        torch.distributed.barrier()
        return tag

    def complete(self, tag: str) -> None:
        """Fetch the files other nodes wrote for tag to rank 0, which consolidates them."""
        if self.rank == 0:
            storage.download_dir(storage.join(self.remote, tag), self.local / tag, skip_existing=True)
        torch.distributed.barrier()

    def push(self, tag: str) -> None:
        """Start uploading this node's files of a tag committed locally (call on every rank)."""
        self.flush()
        if self.local_rank == 0:
            self.thread = threading.Thread(target=self._upload, args=(tag,), name=f"upload-{tag}", daemon=True)
            self.thread.start()
        self.pending = tag

    def flush(self) -> None:
        """Wait for the running upload on every node, then commit it remotely (call on every rank)."""
        if self.pending is None:
            return
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        failed = torch.tensor([1 if self.error else 0], dtype=torch.int32)
        torch.distributed.all_reduce(failed, op=torch.distributed.ReduceOp.MAX)
        if failed.item():
            raise RuntimeError(f"uploading checkpoint {self.pending} to {self.remote} failed: {self.error}")
        if self.rank == 0:
            storage.write_text(storage.join(self.remote, "latest"), self.pending)  # the commit point
            committed = {tag for _, tag in step_tags(self.local)[-self.keep :]} | {self.pending}
            for old in self.remote_tags():
                if old not in committed:
                    storage.remove_tree(storage.join(self.remote, old))
        self.pending = None

    def remote_tags(self) -> list[str]:
        try:
            files = storage.list_files(self.remote)
        except storage.StorageError:
            return []
        prefix = self.remote.rstrip("/") + "/"
        return sorted({f[len(prefix) :].split("/", 1)[0] for f in files if "/" in f[len(prefix) :]})

    def _upload(self, tag: str) -> None:
        started = time.perf_counter()
        try:
            storage.upload_dir(self.local / tag, storage.join(self.remote, tag))
        except BaseException as exc:  # reported by flush() on every rank
            self.error = exc
        self.upload_s = time.perf_counter() - started
