"""The run's output folder: where checkpoints, the model and result.json are written.

A local output (one shared volume when there are several nodes) is written in place. An
s3:// output is staged on each node's disk under one folder named by torchrun's run id and the
node's rank: checkpoints are mirrored to S3 as they are committed (checkpoint.RemoteMirror),
the model and result.json uploaded at the end, and the staging folder removed.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch

from components import storage
from components.train.checkpoint import RemoteMirror
from components.train.config import ModelConfig, TrainConfig
from components.train.result import TrainResult

# Files a saved model directory owns; a tokenizer directory's copies of these are skipped.
MODEL_FILES = {"config.json", "generation_config.json", "model.safetensors", "model.safetensors.index.json"}


@dataclass
class Output:
    uri: str  # what the run was given: a local path or s3://
    local: Path  # where this node writes: the output itself, or its staging folder
    mirror: RemoteMirror | None  # set for an s3:// output
    local_rank: int

    @property
    def checkpoints(self) -> Path:
        return self.local / "checkpoints"

    def finish_checkpoints(self, tag: str, world: int) -> None:
        """After the last save: the mirror's uploads committed and, when several nodes wrote the
        tag, their ZeRO partitions fetched to rank 0 for consolidation (every rank calls it)."""
        if self.mirror:
            self.mirror.flush()
            if world > int(os.environ.get("LOCAL_WORLD_SIZE", world)):
                self.mirror.complete(tag)

    def save_model(
        self, module: torch.nn.Module, model: ModelConfig, tokenizer_uri: str | None,
        stop_token_ids: list[int] | None = None,
    ) -> None:  # fmt: skip
        """model/ (safetensors) with the tokenizer's files beside it (an SFT tokenizer carries its
        chat template); with LoRA, also adapter/ (if model.lora.save_adapter) and model/ holds the
        merged model. stop_token_ids (instruction tuning: eos and the template's end-of-turn,
        sft.tokenize.stop_token_ids): the generation config's eos_token_id, so generate() stops at
        the end of the assistant's turn."""
        if model.lora:
            if model.lora.save_adapter:
                module.save_pretrained(self.local / "adapter", safe_serialization=True)
            module = module.merge_and_unload()  # a plain model for evaluation and the registry
        if stop_token_ids:
            module.generation_config.eos_token_id = list(stop_token_ids)
        model_dir = self.local / "model"
        module.save_pretrained(model_dir, safe_serialization=True)
        if tokenizer_uri:
            copy_tokenizer(tokenizer_uri, model_dir)

    def write_result(self, result: TrainResult) -> None:
        """Upload model/ and adapter/ (s3:// output), then write result.json, last and atomically:
        it marks the output complete."""
        if self.mirror:
            for part in ("model", "adapter"):
                if (self.local / part).is_dir():
                    storage.upload_dir(self.local / part, storage.join(self.uri, part))
        storage.write_text(storage.join(self.uri, "result.json"), result.to_json())

    def close(self) -> None:
        """Remove this node's staging folder (s3:// output; once per node, after the last barrier)."""
        if self.mirror and self.local_rank == 0:
            shutil.rmtree(self.local, ignore_errors=True)


def open_output(uri: str, train: TrainConfig, rank: int, local_rank: int) -> Output:
    """The output folder, created; for s3:// a fresh staging folder with the committed checkpoint
    pulled in (train.resume) or the remote checkpoints removed (resume off). A collective for an
    s3:// output: every rank calls it."""
    mirror = None
    if storage.is_s3(uri):
        run_id = os.environ.get("TORCHELASTIC_RUN_ID", str(os.getpid()))
        local = Path(tempfile.gettempdir()) / f"homegrown-train-{run_id}-node{os.environ.get('GROUP_RANK', '0')}"
        if local_rank == 0:
            shutil.rmtree(local, ignore_errors=True)  # S3 holds the truth; a stale dir must not
        torch.distributed.barrier()
        mirror = RemoteMirror(storage.join(uri, "checkpoints"), local / "checkpoints", rank, local_rank,
                              train.keep_checkpoints)  # fmt: skip
    else:
        local = storage.local_path(uri)
    local.mkdir(parents=True, exist_ok=True)
    if mirror and train.resume and (pulled := mirror.pull()) and rank == 0:
        print(f"[train] fetched checkpoint {pulled} from {mirror.remote}", flush=True)
    if mirror and not train.resume and rank == 0:
        storage.remove_tree(mirror.remote)
    return Output(uri, local, mirror, local_rank)


def copy_tokenizer(tokenizer_uri: str, model_dir: Path) -> None:
    """The tokenizer's files into model_dir, but those a model directory owns (MODEL_FILES)."""
    with tempfile.TemporaryDirectory() as tmp:
        source = storage.download_dir(tokenizer_uri, tmp)
        for file in sorted(source.iterdir()):
            if file.is_file() and file.name not in MODEL_FILES:
                shutil.copy2(file, model_dir / file.name)
