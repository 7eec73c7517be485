"""The worker's config file: one writer (the launchers) and one reader (the worker).

The file is JSON, {"train": TrainConfig, "model": ModelConfig}, at a storage URI (a local path
or s3://): `train_local` writes it to a temporary folder, the pipeline's TrainJob wiring beside
the run's output, and every rank of `components.train.worker` reads it with `--config`.
"""

from __future__ import annotations

import json

from pydantic import ValidationError

from components import storage
from components.train.config import ModelConfig, TrainConfig

SECTIONS = ("train", "model")


def write_worker_config(uri: str, train: TrainConfig, model: ModelConfig) -> None:
    """Write {"train": ..., "model": ...} as indented JSON to uri (local path or s3://; atomic
    as storage.write_text is). Raises storage.StorageError when uri cannot be written."""
    data = {"train": train.model_dump(mode="json"), "model": model.model_dump(mode="json")}
    storage.write_text(uri, json.dumps(data, indent=2) + "\n")


def read_worker_config(path_or_uri: str) -> tuple[TrainConfig, ModelConfig]:
    """(TrainConfig, ModelConfig) from a file write_worker_config wrote.

    Raises ValueError naming the file and what is wrong: not JSON, a missing or unknown top-level
    key, or a section the config classes refuse (an unknown or invalid key, named by its path
    such as model.n_head).
    """
    text = storage.read_text(path_or_uri)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path_or_uri}: not a JSON worker config ({exc})") from exc
    if not isinstance(data, dict):
        raise ValueError(f"{path_or_uri}: expected a JSON object with keys {list(SECTIONS)}, got {type(data).__name__}")
    if unknown := sorted(set(data) - set(SECTIONS)):
        raise ValueError(f"{path_or_uri}: unknown key(s) {unknown}; a worker config holds only {list(SECTIONS)}")
    if missing := [key for key in SECTIONS if key not in data]:
        raise ValueError(f"{path_or_uri}: missing key(s) {missing}; write it with write_worker_config")
    try:
        return TrainConfig.model_validate(data["train"]), ModelConfig.model_validate(data["model"])
    except ValidationError as exc:
        section = "train" if exc.title == TrainConfig.__name__ else "model"
        problems = "; ".join(
            ".".join([section, *(str(p) for p in err["loc"])]) + ": "
            + ("unknown key" if err["type"] == "extra_forbidden" else err["msg"])
            for err in exc.errors()
        )
        raise ValueError(f"{path_or_uri}: invalid worker config: {problems}") from exc
