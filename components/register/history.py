"""A registered model's life after the gate, kept as model-version tags: which version was champion
before (rollback), where the version's servable files are (the serving copy KServe reads), and where
it was deployed.

    record_previous("homegrown", "8", "7")          # promote: 8 becomes champion after 7
    uri = serving_copy("homegrown", "8", "s3://b/runs")   # s3://b/runs/serving/homegrown/v8
    mark_deployed("homegrown", "8", "ml/homegrown", url)
    back = rollback("homegrown")                    # champion -> 7; Rollback(from_version="8", to_version="7")

The serving copy exists because the transformers flavor stores the model under model/ and its
tokenizer under components/tokenizer/, which KServe's Hugging Face runtime cannot load as one
directory: it is the flattened directory (config.json, safetensors, generation config, tokenizer
files with the chat template), written once per version and reused while its files are there.
All functions use the configured tracking URI (mlflow_runs.configure).
"""

from __future__ import annotations

import contextlib
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Iterator

from components import mlflow_runs, storage

CHAMPION = "champion"
PREVIOUS_TAG = "homegrown.previous_champion"  # on a champion version: the version that was champion before it
SERVING_TAG = "homegrown.serving_uri"  # the version's flat HF model directory (storageUri)
DEPLOYED_TAG = "deployed"  # "<UTC time> <namespace>/<InferenceService> <url>" of its last deployment
REQUIRED_FILES = ("config.json",)
WEIGHTS = ("model.safetensors", "model.safetensors.index.json")


class HistoryError(RuntimeError):
    """The registry lacks what the operation needs; the message says what to do."""


@dataclass(frozen=True)
class Rollback:
    name: str
    from_version: str
    to_version: str


@contextlib.contextmanager
def _server(doing: str) -> Iterator[None]:
    import mlflow

    with mlflow_runs.explain_outage(mlflow.get_tracking_uri(), doing, "rerun the command"), mlflow_runs.fail_fast():
        yield


def _client():
    from mlflow.tracking import MlflowClient

    return MlflowClient()


def champion(name: str):
    """The champion's model version, or None (no model of that name, or no champion yet)."""
    from mlflow.exceptions import MlflowException

    with _server(f"looking up the {CHAMPION} of {name!r}"):
        try:
            return _client().get_model_version_by_alias(name, CHAMPION)
        except MlflowException as exc:
            if mlflow_runs.no_answer(exc):
                raise
            return None


def record_previous(name: str, version: str, previous: str | None) -> None:
    """Tag `version` with the champion it replaces; nothing when there was none or it is itself."""
    if previous is None or str(previous) == str(version):
        return
    with _server(f"tagging version {version} of {name!r}"):
        _client().set_model_version_tag(name, str(version), PREVIOUS_TAG, str(previous))


def previous_champion(name: str) -> tuple[str, str]:
    """(current champion version, the one before it). Raises HistoryError when there is no champion,
    or it records no predecessor, or that version was deleted."""
    from mlflow.exceptions import MlflowException

    current = champion(name)
    if current is None:
        raise HistoryError(f"{name!r} has no {CHAMPION}: nothing to roll back")
    previous = (current.tags or {}).get(PREVIOUS_TAG)
    if not previous:
        raise HistoryError(f"{CHAMPION} of {name!r} (version {current.version}) records no previous champion "
                           f"(tag {PREVIOUS_TAG}): it was the first, or promoted before homegrown recorded it; "
                           f"move the alias by hand: MlflowClient().set_registered_model_alias({name!r}, "
                           f"{CHAMPION!r}, VERSION)")  # fmt: skip
    with _server(f"reading version {previous} of {name!r}"):
        try:
            _client().get_model_version(name, previous)
        except MlflowException as exc:
            if mlflow_runs.no_answer(exc):
                raise
            raise HistoryError(f"the previous champion of {name!r}, version {previous}, is gone from the "
                               "registry (deleted?): nothing to roll back to") from None  # fmt: skip
    return str(current.version), str(previous)


def rollback(name: str) -> Rollback:
    """Move `champion` back to the previous champion (previous_champion). The version rolled back
    from keeps its tags; the one restored keeps its own PREVIOUS_TAG, so a second rollback goes
    one further back. Raises HistoryError (previous_champion)."""
    current, previous = previous_champion(name)
    with _server(f"moving {CHAMPION} of {name!r} to version {previous}"):
        _client().set_registered_model_alias(name, CHAMPION, previous)
    return Rollback(name, current, previous)


def serving_root(data_root: str, name: str) -> str:
    return storage.join(data_root, "serving", name)


def has_files(uri: str) -> bool:
    """Whether a serving copy's config and weights are at `uri`."""
    return all(storage.exists(storage.join(uri, f)) for f in REQUIRED_FILES) and any(
        storage.exists(storage.join(uri, w)) for w in WEIGHTS
    )


def serving_copy(name: str, version: str, data_root: str, log=print) -> str:
    """The URI of `version`'s flat HF model directory, `<data_root>/serving/<name>/v<version>`:
    the one its SERVING_TAG names when its files are there, else downloaded from the registry,
    flattened, uploaded and tagged (the tag last, so it never names a partial copy). Raises
    HistoryError when the version is not a transformers-flavor model, StorageError on S3 failures."""
    from components.hf_model import ModelDirError, fetch_model_dir

    with _server(f"reading version {version} of {name!r}"):
        tagged = (_client().get_model_version(name, str(version)).tags or {}).get(SERVING_TAG)
    if tagged and has_files(tagged):
        log(f"[serve] version {version} of {name}: serving copy {tagged} (reused)")
        return tagged
    uri = storage.join(serving_root(data_root, name), f"v{version}")
    with tempfile.TemporaryDirectory(prefix="homegrown-serving-") as tmp:
        try:
            local = fetch_model_dir(f"models:/{name}/{version}", Path(tmp))
        except ModelDirError as exc:
            raise HistoryError(str(exc)) from exc
        storage.upload_dir(local, uri)
    with _server(f"tagging version {version} of {name!r}"):
        _client().set_model_version_tag(name, str(version), SERVING_TAG, uri)
    log(f"[serve] version {version} of {name}: serving copy written to {uri}")
    return uri


def mark_deployed(name: str, version: str, where: str, url: str, when: datetime | None = None) -> str:
    """Tag `version` as deployed at `where` (namespace/InferenceService) answering at `url`; the tag's value."""
    stamp = (when or datetime.now(timezone.utc)).strftime("%Y-%m-%dT%H:%M:%SZ")
    value = f"{stamp} {where} {url}".strip()
    with _server(f"tagging version {version} of {name!r}"):
        _client().set_model_version_tag(name, str(version), DEPLOYED_TAG, value)
    return value
