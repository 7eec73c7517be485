"""MLflow helpers: one parent run per pipeline run, one nested run per step.

Resolution order for where to log: the tracking URI given (config or CLI), else
MLFLOW_TRACKING_URI, else the embedded SQLite store under ./runs. When MLFLOW_RUN_ID is set
(KFP's MLflow integration injects it) a step logs into that run instead of creating one.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path
from typing import Any, Iterator

DEFAULT_ROOT = Path("runs")
PARENT_TAG = "mlflow.parentRunId"
SECRET_MARKERS = ("password", "secret", "token", "access_key", "credential")


def default_tracking_uri(root: Path = DEFAULT_ROOT) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def default_artifact_location(root: Path = DEFAULT_ROOT) -> str:
    return (root / "mlartifacts").resolve().as_uri()


def resolve_tracking_uri(configured: str | None = None) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or default_tracking_uri()


def configure(tracking_uri: str) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    # air-gapped by design: the transformers flavor otherwise probes the HF hub for model
    # cards and licenses, retrying for ~45 s when it is unreachable
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri)
    if tracking_uri.startswith("sqlite:"):
        Path(tracking_uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


def ensure_experiment(tracking_uri: str, name: str) -> str:
    """The experiment's id, creating it (with local artifacts beside a SQLite store) if needed."""
    configure(tracking_uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def start_pipeline_run(
    tracking_uri: str, experiment: str, run_name: str, tags: dict[str, str], params: dict[str, Any]
) -> str:
    """Create the parent run of a pipeline run (left RUNNING until `end_pipeline_run`)."""
    experiment_id = ensure_experiment(tracking_uri, experiment)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    run = client.create_run(experiment_id, run_name=run_name, tags=tags)
    log_params(client, run.info.run_id, params)
    return run.info.run_id


def end_pipeline_run(tracking_uri: str, run_id: str, status: str = "FINISHED") -> None:
    configure(tracking_uri)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri).set_terminated(run_id, status=status)


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def safe_params(params: dict[str, Any]) -> dict[str, str]:
    """Flattened params as strings, with anything that looks like a credential left out."""
    return {
        k: str(v)[:6000]
        for k, v in flatten(params).items()
        if not any(marker in k.lower() for marker in SECRET_MARKERS)
    }


def log_params(client, run_id: str, params: dict[str, Any]) -> None:
    from mlflow.entities import Param

    items = [Param(k, v) for k, v in safe_params(params).items()]
    for start in range(0, len(items), 100):  # the REST API caps a batch at 100 params
        client.log_batch(run_id, params=items[start : start + 100])


@contextlib.contextmanager
def step_run(
    step: str,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    experiment: str = "homegrown",
) -> Iterator[Any]:
    """An active MLflow run for one step.

    Logs into MLFLOW_RUN_ID when set, else into a new run nested under `parent_run_id`,
    else into a new top-level run (a step run by hand).
    """
    uri = resolve_tracking_uri(tracking_uri)
    experiment_id = ensure_experiment(uri, experiment)
    import mlflow

    injected = os.environ.get("MLFLOW_RUN_ID")
    if injected:
        with mlflow.start_run(run_id=injected) as run:
            yield run
        return
    tags = {PARENT_TAG: parent_run_id} if parent_run_id else {}
    with mlflow.start_run(experiment_id=experiment_id, run_name=step, tags={**tags, "homegrown.step": step}) as run:
        yield run
