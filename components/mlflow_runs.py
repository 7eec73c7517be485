"""MLflow helpers: one parent run per pipeline run, one nested run per step.

Resolution order for where to log: the tracking URI given (config or CLI), else
MLFLOW_TRACKING_URI, else the embedded SQLite store under ./runs. When MLFLOW_RUN_ID is set
(KFP's MLflow integration injects it) a step logs into that run instead of creating one.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import posixpath
import re
import tempfile
from pathlib import Path
from typing import Any, Iterator

DEFAULT_ROOT = Path("runs")
PARENT_TAG = "mlflow.parentRunId"
SECRET_MARKERS = ("password", "secret", "token", "access_key", "credential")
# MLflow retries a call that gets no answer 7 times over ~4 minutes (backoff factor 2); steps
# give up after ~7 s instead and are rerun (KFP retries them with its own backoff)
FAIL_FAST = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


# MLflow 3's limits (mlflow/utils/validation.py: MAX_ENTITY_KEY_LENGTH, MAX_PARAM_VAL_LENGTH,
# MAX_TAG_VAL_LENGTH; mlflow/store/model_registry/dbmodels/models.py: the description column)
KEY_MAX = 250
PARAM_VALUE_MAX = 6000
TAG_VALUE_MAX = 8000
MODEL_VERSION_TAG_VALUE_MAX = 100_000
DESCRIPTION_MAX = 5000
NAMES_ARTIFACT = "mlflow_names.json"
# A subset of what MLflow accepts ([/\w.\- :], \w Unicode): no colon (refused on Windows), no space
# (filters need backticks), ASCII only (MySQL utf8mb3 columns refuse 4-byte characters). KFP v2
# stores Metrics keys in a protobuf Struct, which takes any string, so the same key serves there.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
_HASH_CHARS = 8
_recorded: dict[str, dict[str, str]] = {}  # run id -> {MLflow key: original} already in its artifact


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer; the error says what to do once it does."""


def redact_uri(uri: str) -> str:
    """`uri` as it may be printed or logged: a password in its userinfo becomes ***
    (http://admin:***@host:5000), a user name alone too (a token: https://***@host), and so do
    the values of query parameters named like a credential (SECRET_MARKERS). Anything that is
    not a URI with such parts comes back unchanged."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced [ in the host: not a URI
        return uri
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else f"***@{host}"
    if query and any(marker in query.lower() for marker in SECRET_MARKERS):
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode([(k, "***" if any(m in k.lower() for m in SECRET_MARKERS) else v) for k, v in pairs], safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return uri
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def default_tracking_uri(root: Path = DEFAULT_ROOT) -> str:
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


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
    valid, renamed = run_tags(tags)
    run = client.create_run(experiment_id, run_name=run_name, tags=valid)
    record_names(client, run.info.run_id, renamed)
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
    """Flattened params as strings (original names, values capped at MLflow's 6000 characters),
    with anything that looks like a credential left out: keys named like one (SECRET_MARKERS), and
    credentials inside URI values (redact_uri: mlflow.tracking_uri=http://admin:***@host)."""
    return {
        k: fit_value(redact_uri(v) if isinstance(v, str) else v, PARAM_VALUE_MAX)
        for k, v in flatten(params).items()
        if not any(marker in k.lower() for marker in SECRET_MARKERS)
    }


def _path_not_unique(name: str) -> bool:
    """MLflow's rule (validation.path_not_unique): a key must stay itself as a normalised path."""
    norm = posixpath.normpath(name)
    return norm != name or norm == "." or norm.startswith("..") or norm.startswith("/")


def mlflow_key(name: str) -> str:
    """The MLflow metric, param or tag key (also the KFP Metrics key) for `name`, a name that may
    come from data or config: `name` itself when it is already valid, else a valid key readable
    as the original plus `-` and the first 8 hex digits of the original's sha256.

    Valid means: only ASCII letters, digits and `_ . - /`; not changed by posix path
    normalisation and not starting with `/` or `..` (MLflow's path_not_unique); at most 250
    characters (MLflow's MAX_ENTITY_KEY_LENGTH). Deterministic; two different originals get
    different keys unless their hashes agree in 32 bits. Never raises."""
    if len(name) <= KEY_MAX and not _UNSAFE.search(name) and not _path_not_unique(name):
        return name
    cleaned = _UNSAFE.sub("_", name)
    if _path_not_unique(cleaned):  # "a/../b", "x/", "//", "..": the slashes go, a leading dot is guarded
        cleaned = cleaned.replace("/", "_")
        if cleaned.startswith(".") or not cleaned:
            cleaned = "_" + cleaned
    digest = hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:_HASH_CHARS]
    return f"{cleaned[: KEY_MAX - _HASH_CHARS - 1]}-{digest}"


def mlflow_keys(names: Any) -> dict[str, str]:
    """{original: MLflow key} for each name (see mlflow_key)."""
    return {name: mlflow_key(name) for name in names}


def fit_value(value: Any, limit: int) -> str:
    """`value` as a string of at most `limit` characters; a longer one is cut and ends with a
    note of how many characters it had (MLflow refuses, or with MLFLOW_TRUNCATE_LONG_VALUES cuts
    silently, param values over 6000 and run tag values over 8000 characters)."""
    text = str(value)
    if len(text) <= limit:
        return text
    note = f"... [cut: {len(text)} characters]"
    return text[: limit - len(note)] + note


def record_names(client, run_id: str, renamed: dict[str, str]) -> None:
    """Add {MLflow key: original} rows for keys that differ from their original to the run's
    `mlflow_names.json` table artifact (columns mlflow_key, original); rows it holds already are
    not repeated. Costs no call when nothing was renamed."""
    known = _recorded.setdefault(run_id, {})
    new = {key: original for key, original in renamed.items() if key != original and known.get(key) != original}
    if not new:
        return
    known.update(read_names(client, run_id))
    new = {key: original for key, original in new.items() if known.get(key) != original}
    if new:
        # log_table appends to the table the run already has (MlflowClient.log_table)
        client.log_table(run_id, {"mlflow_key": list(new), "original": list(new.values())}, NAMES_ARTIFACT)
        known.update(new)


def read_names(client, run_id: str) -> dict[str, str]:
    """{MLflow key: original name} for every key of the run that was renamed to be valid (the
    run's name table); {} when it has none."""
    import json

    if NAMES_ARTIFACT not in {f.path for f in client.list_artifacts(run_id)}:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        table = json.loads(Path(client.download_artifacts(run_id, NAMES_ARTIFACT, tmp)).read_text())
    column = {name: i for i, name in enumerate(table["columns"])}
    return {row[column["mlflow_key"]]: row[column["original"]] for row in table["data"]}


def log_metrics(client, run_id: str, metrics: dict[str, float], step: int | None = None) -> dict[str, str]:
    """Log metrics under valid keys (mlflow_key), renamed ones into the run's name table;
    returns {original: MLflow key}. Sent in batches of MLflow's 1000."""
    import time

    from mlflow.entities import Metric

    keys = mlflow_keys(metrics)
    stamp = int(time.time() * 1000)
    items = [Metric(keys[name], float(value), stamp, step or 0) for name, value in metrics.items()]
    for start in range(0, len(items), 1000):
        client.log_batch(run_id, metrics=items[start : start + 1000])
    record_names(client, run_id, {key: name for name, key in keys.items()})
    return keys


def log_params(client, run_id: str, params: dict[str, Any]) -> dict[str, str]:
    """Log (nested) params flattened to dotted names under valid keys, credentials left out,
    values capped at 6000 characters; renamed keys go into the run's name table. Returns
    {original: MLflow key}."""
    from mlflow.entities import Param

    values = safe_params(params)
    keys = mlflow_keys(values)
    items = [Param(keys[name], value) for name, value in values.items()]
    for start in range(0, len(items), 100):  # the REST API caps a batch at 100 params
        client.log_batch(run_id, params=items[start : start + 100])
    record_names(client, run_id, {key: name for name, key in keys.items()})
    return keys


def run_tags(tags: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """(valid run tags, {MLflow key: original} of the renamed ones): keys through mlflow_key,
    values capped at 8000 characters."""
    keys = mlflow_keys(tags)
    return ({keys[k]: fit_value(v, TAG_VALUE_MAX) for k, v in tags.items()},
            {key: name for name, key in keys.items()})  # fmt: skip


def set_tags(client, run_id: str, tags: dict[str, Any]) -> dict[str, str]:
    """Set run tags under valid keys with values capped at 8000 characters (one batch call);
    renamed keys go into the run's name table. Returns {original: MLflow key}."""
    from mlflow.entities import RunTag

    valid, renamed = run_tags(tags)
    items = [RunTag(k, v) for k, v in valid.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[start : start + 100])
    record_names(client, run_id, renamed)
    return {name: key for key, name in renamed.items()}


def model_version_tags(tags: dict[str, Any]) -> dict[str, str]:
    """Model-version tags with valid keys (mlflow_key) and values capped at MLflow's 100,000
    characters; the keys are the code's own, so nothing needs a name table."""
    return {mlflow_key(k): fit_value(v, MODEL_VERSION_TAG_VALUE_MAX) for k, v in tags.items()}


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
    the server (credentials masked: redact_uri), what was being done and what to do (`then`)."""
    try:
        yield
    except Exception as exc:
        if isinstance(exc, TrackingUnavailable) or not no_answer(exc):
            raise
        raise TrackingUnavailable(
            f"the MLflow tracking server at {redact_uri(uri)} did not answer while {doing} ({_why(exc)}). "
            f"Once it is up ({redact_uri(uri).rstrip('/')}/health answers), {then}."
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
