"""MLflow helpers: one parent run per pipeline run, one nested run per step.

Resolution order for where to log: the tracking URI given (config or CLI), else
MLFLOW_TRACKING_URI, else the embedded SQLite store under ./runs. When MLFLOW_RUN_ID is set
(KFP's MLflow integration injects it) a step logs into that run instead of creating one.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from typing import Any, Iterator

DEFAULT_ROOT = Path("runs")
PARENT_TAG = "mlflow.parentRunId"
SECRET_MARKERS = ("password", "secret", "token", "access_key", "credential")
# MLflow retries a call that gets no answer 7 times over ~4 minutes (backoff factor 2); steps
# give up after ~7 s instead and are rerun (KFP retries them with its own backoff)
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer; the error says what to do once it does."""


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


def no_answer(exc: BaseException) -> bool:
    """Whether an MLflow failure means its server did not answer (refused, reset, timed out, 5xx
    after retries) rather than that it refused the request."""
    import requests

    outage = (requests.ConnectionError, requests.Timeout, requests.exceptions.RetryError)
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, outage):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _why(exc: BaseException) -> str:
    found = re.search(r"\[Errno -?\d+\] [^'\")]+|Read timed out|too many \d+ error responses", str(exc))
    return found.group(0) if found else type(exc).__name__


@contextlib.contextmanager
def fail_fast() -> Iterator[None]:
    """MLflow HTTP calls in the block give up after FAIL_FAST's retries; MLFLOW_HTTP_REQUEST_* set
    in the environment win. The environment is restored after, so processes the block starts
    (training ranks) keep their own settings."""
    saved = {key: os.environ.get(key) for key in FAIL_FAST}
    for key, value in FAIL_FAST.items():
        os.environ.setdefault(key, value)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@contextlib.contextmanager
def explain_outage(uri: str, doing: str, then: str) -> Iterator[None]:
    """A failure to reach the tracking server in the block becomes a TrackingUnavailable naming
    the server, what was being done and what to do (`then`)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, TrackingUnavailable) or not no_answer(exc):
            raise
        raise TrackingUnavailable(
            f"the MLflow tracking server at {uri} did not answer while {doing} ({_why(exc)}). "
            f"Once it is up ({uri.rstrip('/')}/health answers), {then}."
        ) from exc


@contextlib.contextmanager
def step_run(
    step: str,
    tracking_uri: str | None = None,
    parent_run_id: str | None = None,
    experiment: str = "homegrown",
) -> Iterator[Any]:
    """An active MLflow run for one step.

    Logs into MLFLOW_RUN_ID when set, else into a new run nested under `parent_run_id`,
    else into a new top-level run (a step run by hand). A tracking server that does not answer
    fails the step with a TrackingUnavailable (within seconds while starting or ending the run).
    """
    uri = resolve_tracking_uri(tracking_uri)
    with explain_outage(uri, f"running the {step} step", f"rerun the {step} step"):
        with fail_fast():
            run = _start_run(step, ensure_experiment(uri, experiment), parent_run_id)
        import mlflow

        try:
            yield run
        except BaseException:
            with contextlib.suppress(Exception), fail_fast():  # the server may be why it failed: keep that error
                mlflow.end_run("FAILED")
            raise
        with fail_fast():
            mlflow.end_run()


def _start_run(step: str, experiment_id: str, parent_run_id: str | None) -> Any:
    import mlflow

    injected = os.environ.get("MLFLOW_RUN_ID")
    if injected:
        return mlflow.start_run(run_id=injected)
    tags = {PARENT_TAG: parent_run_id} if parent_run_id else {}
    return mlflow.start_run(experiment_id=experiment_id, run_name=step, tags={**tags, "homegrown.step": step})
