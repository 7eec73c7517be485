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

from pydantic import BaseModel, SecretBytes, SecretStr

DEFAULT_ROOT = Path("runs")
PARENT_TAG = "mlflow.parentRunId"
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
# MLflow 3's UI opens an experiment as GenAI (traces, evaluations) or model training (runs, charts):
# 3.17 decides by the page's `workflowType` query parameter, else the browser's last choice (GenAI
# first); earlier 3.x releases by the experiment tag mlflow.experimentKind. Both are set.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING_KIND = "custom_model_development"
UI_VIEW = "workflowType=machine_learning"
# A subset of what MLflow accepts ([/\w.\- :], \w Unicode): no colon (refused on Windows), no space
# (filters need backticks), ASCII only (MySQL utf8mb3 columns refuse 4-byte characters). KFP v2
# stores Metrics keys in a protobuf Struct, which takes any string, so the same key serves there.
_UNSAFE = re.compile(r"[^A-Za-z0-9_.\-/]")
_HASH_CHARS = 8
_recorded: dict[str, dict[str, str]] = {}  # run id -> {MLflow key: original} already in its artifact


class TrackingUnavailable(RuntimeError):
    """The tracking server did not answer; the error says what to do once it does."""


# ---- credentials -------------------------------------------------------------------------
# What never reaches MLflow is recognised by what it is, never by a substring of a name (a rule
# that hid every key containing "token" hid tokenizer.* and evaluate.max_new_tokens):
#   declared  a config field typed pydantic SecretStr / SecretBytes: its key is left out
#             (declared_secrets lists them; RunConfig declares none today: its credentials come
#             from the environment, cluster.secrets names Kubernetes Secrets, never their values)
#   named     a key whose last dotted segment is a credential's name: credential_name
#   shaped    text that looks like a key, or equals a credential-named environment variable's
#             value, in any value: mask_secrets (and redact_uri for a URI's userinfo and query)
MASK = "***"
_PYDANTIC_MASK = "**********"  # what model_dump(mode="json") writes for a SecretStr
# a name's last word alone names a credential
_CREDENTIAL_WORDS = frozenset({
    "password", "passwd", "pwd", "passphrase", "secret", "credential", "credentials", "auth", "authorization",
    "bearer", "apikey", "accesskey", "secretkey", "privatekey", "accesstoken", "authtoken", "refreshtoken",
})  # fmt: skip
# <kind>_key and <kind>_key_id name one (secret_access_key, api_key, access_key_id); a bare `key` does not
_KEY_KINDS = frozenset({"secret", "access", "api", "private", "signing", "encryption", "master", "account", "client", "ssh"})
# <kind>_token names one (hf_token, access_token, aws_session_token); pad_token, max_new_tokens do not
_TOKEN_KINDS = frozenset({
    "hf", "hub", "access", "refresh", "auth", "api", "bearer", "id", "session", "security", "oauth", "github", "gh",
    "gitlab", "slack", "bot", "tracking", "client", "service", "personal", "pat", "jwt", "csrf", "sas", "sts",
    "secret", "registry", "npm", "pypi", "upload", "read", "write",
})  # fmt: skip
# text shaped like a key, whatever it is called
_KEY_SHAPES = re.compile(
    r"\bhf_[A-Za-z0-9]{16,}"                                     # Hugging Face
    r"|\bsk-[A-Za-z0-9_\-]{20,}"                                  # OpenAI, Anthropic (sk-proj-, sk-ant-)
    r"|\b(?:gh[pousr]_[A-Za-z0-9]{20,}|github_pat_[A-Za-z0-9_]{20,})"  # GitHub
    r"|\b(?:AKIA|ASIA)[A-Z0-9]{16}\b"                             # AWS access key id
    r"|\bxox[abposr]-[A-Za-z0-9\-]{10,}"                          # Slack
    r"|\bAIza[A-Za-z0-9_\-]{35}"                                  # Google API key
    r"|\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"  # JWT: {"...}.{"...}.signature
    r"|-----BEGIN[A-Z ]*PRIVATE KEY-----(?:.*?-----END[A-Z ]*PRIVATE KEY-----|.*)",  # PEM (a cut one too)
    re.DOTALL,
)
_BEARER = re.compile(r"\b(bearer\s+)[A-Za-z0-9._~+/\-]{8,}=*", re.IGNORECASE)
# 40 characters of base64 standing alone, as an AWS secret access key: scored by _aws_secret_like
_AWS_SECRET = re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9][A-Za-z0-9/+]{39}(?![A-Za-z0-9/+=])")
_URI_PASSWORD = re.compile(r"\b([A-Za-z][A-Za-z0-9+.\-]*://[^\s/?#@:'\"]+):[^\s/?#@'\"]+@")
_ENV_VALUE_MIN = 6  # a credential env var's shorter value is too likely an ordinary word to mask everywhere


def _words(name: str) -> list[str]:
    """`name`'s words, lowercase: AWS_SECRET_ACCESS_KEY, secretAccessKey -> [.., secret, access, key]."""
    return [w for w in re.split(r"[^a-z0-9]+", re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).lower()) if w]


def credential_name(name: str) -> bool:
    """Whether `name` (a dotted param key, a tag key, an environment variable, a query parameter)
    names a credential, judged on its last dotted segment's words: ends in password, secret,
    credentials, auth, bearer, apikey ... (_CREDENTIAL_WORDS); in <kind>_key or <kind>_key_id
    for kind secret, access, api, private ... (aws_secret_access_key, AWS_ACCESS_KEY_ID);
    in <kind>_token for kind hf, access, refresh, auth, session ... or is `token` alone;
    or in connection_string. tokenizer.vocab_size, max_new_tokens, special_tokens, pad_token,
    secret_name, num_key_value_heads are not credentials."""
    words = _words(name.rsplit(".", 1)[-1])
    if not words:
        return False
    last, before = words[-1], words[:-1]
    if last in _CREDENTIAL_WORDS:
        return True
    if last == "token":
        return not before or before[-1] in _TOKEN_KINDS
    if last == "key":
        return bool(before) and before[-1] in _KEY_KINDS
    if last == "id":
        return len(before) >= 2 and before[-1] == "key" and before[-2] in _KEY_KINDS
    return words[-2:] == ["connection", "string"]


def declared_secrets(model: type[BaseModel], prefix: str = "") -> set[str]:
    """Dotted keys (as flatten writes them) of the fields `model` declares secret by typing them
    SecretStr or SecretBytes (optional or not), nested sections walked; the keys safe_params
    leaves out of a dump of such a model. Fields inside lists are not walked: a list is one
    param, and pydantic writes its secrets as **********."""
    import typing

    found: set[str] = set()
    for name, field in model.model_fields.items():
        kinds = typing.get_args(field.annotation) or (field.annotation,)
        for kind in kinds:
            if kind in (SecretStr, SecretBytes):
                found.add(f"{prefix}{name}")
            elif isinstance(kind, type) and issubclass(kind, BaseModel):
                found |= declared_secrets(kind, f"{prefix}{name}.")
    return found


def _declared(value: Any) -> bool:
    """Whether a dumped value is a declared secret: pydantic's SecretStr/SecretBytes, or its mask."""
    return isinstance(value, (SecretStr, SecretBytes)) or (isinstance(value, str) and value == _PYDANTIC_MASK)


def _env_secrets() -> list[str]:
    """Values of the credential-named environment variables (AWS_SECRET_ACCESS_KEY, HF_TOKEN,
    MLFLOW_TRACKING_PASSWORD ...) long enough to mask, longest first."""
    values = {v for k, v in os.environ.items() if len(v) >= _ENV_VALUE_MIN and credential_name(k)}
    return sorted(values, key=len, reverse=True)


def _aws_secret_like(match: re.Match) -> str:
    text = match.group(0)
    mixed = any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)
    return MASK if mixed and text.count("/") <= 2 else text  # a hex digest is one case; a path has many /


def mask_secrets(text: str) -> str:
    """`text` with what looks like a credential replaced by ***: the value of any credential-named
    environment variable (credential_name, at least 6 characters); keys by their shape (hf_...,
    sk-..., ghp_..., AKIA..., xox.-..., AIza..., JWTs, PEM private keys, 40-character mixed-case
    base64 as an AWS secret key); a Bearer token (Bearer ***); a password in a URI's userinfo
    anywhere in the text (user:***@host). Text with none comes back unchanged."""
    for value in _env_secrets():
        text = text.replace(value, MASK)
    text = _KEY_SHAPES.sub(MASK, text)
    text = _BEARER.sub(lambda m: m.group(1) + MASK, text)
    text = _AWS_SECRET.sub(_aws_secret_like, text)
    return _URI_PASSWORD.sub(lambda m: f"{m.group(1)}:{MASK}@", text)


def shown(value: Any) -> str:
    """`value` as it may reach MLflow (a param, a tag, a description): a string (str()), a URI's
    credentials masked (redact_uri), then anything shaped like a credential (mask_secrets)."""
    return mask_secrets(redact_uri(value) if isinstance(value, str) else str(value))


def redact_uri(uri: str) -> str:
    """`uri` as it may be printed or logged: a password in its userinfo becomes ***
    (http://admin:***@host:5000), a user name alone too (a token: https://***@host), and so do
    the values of query parameters named like a credential (credential_name: api_token,
    X-Amz-Security-Token) or a signature (sig, X-Amz-Signature). Anything that is not a URI with
    such parts comes back unchanged."""
    from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

    try:
        parts = urlsplit(uri)
    except ValueError:  # e.g. an unbalanced [ in the host: not a URI
        return uri
    netloc, query = parts.netloc, parts.query
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    if query and "=" in query:
        pairs = parse_qsl(query, keep_blank_values=True)
        masked = [(k, MASK if credential_name(k) or _words(k)[-1:] in (["sig"], ["signature"]) else v) for k, v in pairs]
        if masked != pairs:
            query = urlencode(masked, safe="*")
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
    """The experiment's id, creating it (with local artifacts beside a SQLite store) if needed,
    marked a model-training experiment (EXPERIMENT_KIND_TAG) unless someone chose another kind."""
    configure(tracking_uri)
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        if EXPERIMENT_KIND_TAG not in experiment.tags:
            from mlflow.exceptions import MlflowException

            with contextlib.suppress(MlflowException):  # a user who may log runs but not tag the experiment
                client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING_KIND)
        return experiment.experiment_id
    location = None
    if tracking_uri.startswith("sqlite:"):
        location = (Path(tracking_uri.removeprefix("sqlite:///")).parent / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING_KIND})


def run_link(experiment_id: str, run_id: str, ui: str = "") -> str:
    """The MLflow UI page of a run in its model-training view (metrics, params, artifacts, not
    MLflow 3's GenAI pages): `ui` (e.g. http://127.0.0.1:5000, no trailing /) + the hash route
    #/experiments/<id>/runs/<run id>?workflowType=machine_learning. With ui="" the link is relative,
    as a model version's description (Markdown shown by the UI itself) needs it."""
    route = f"#/experiments/{experiment_id}/runs/{run_id}?{UI_VIEW}"
    return f"{ui.rstrip('/')}/{route}" if ui else route


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
    credentials left out: declared secrets (SecretStr, SecretBytes: declared_secrets) and keys
    named like a credential (credential_name: s3.secret_key, not tokenizer.vocab_size) are
    dropped; values are shown masked (shown: mlflow.tracking_uri=http://admin:***@host, hf_... ->
    ***). Every other key is kept."""
    return {
        k: fit_value(shown(v), PARAM_VALUE_MAX)
        for k, v in flatten(params).items()
        if not (credential_name(k) or _declared(v))
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
    values masked (shown) and capped at 8000 characters; a tag named like a credential
    (credential_name) is left out."""
    tags = {k: shown(v) for k, v in tags.items() if not credential_name(k)}
    keys = mlflow_keys(tags)
    return ({keys[k]: fit_value(v, TAG_VALUE_MAX) for k, v in tags.items()},
            {key: name for name, key in keys.items()})  # fmt: skip


def set_tags(client, run_id: str, tags: dict[str, Any]) -> dict[str, str]:
    """Set run tags as run_tags makes them (one batch call per 100); renamed keys go into the
    run's name table. Returns {original: MLflow key} of the tags set."""
    from mlflow.entities import RunTag

    valid, renamed = run_tags(tags)
    items = [RunTag(k, v) for k, v in valid.items()]
    for start in range(0, len(items), 100):
        client.log_batch(run_id, tags=items[start : start + 100])
    record_names(client, run_id, renamed)
    return {name: key for key, name in renamed.items()}


def model_version_tags(tags: dict[str, Any]) -> dict[str, str]:
    """Model-version tags with valid keys (mlflow_key) and values masked (shown) and capped at
    MLflow's 100,000 characters, credential-named ones left out (credential_name); the keys are
    the code's own, so nothing needs a name table."""
    return {mlflow_key(k): fit_value(shown(v), MODEL_VERSION_TAG_VALUE_MAX) for k, v in tags.items()
            if not credential_name(k)}  # fmt: skip


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
    start_time: float | None = None,
) -> Iterator[Any]:
    """An active MLflow run for one step.

    Logs into MLFLOW_RUN_ID when set, else into a new run nested under `parent_run_id`,
    else into a new top-level run (a step run by hand). `start_time` (seconds since the epoch):
    when the step's work began, if before now (a step whose phases ran as other tasks and is
    tracked only by its last), so the run's duration is the step's. A tracking server that does
    not answer fails the step with a TrackingUnavailable (within seconds while starting or
    ending the run).
    """
    uri = resolve_tracking_uri(tracking_uri)
    with explain_outage(uri, f"running the {step} step", f"rerun the {step} step"):
        with fail_fast():
            run = _start_run(step, ensure_experiment(uri, experiment), parent_run_id, start_time)
        import mlflow

        try:
            yield run
        except BaseException:
            with contextlib.suppress(Exception), fail_fast():  # the server may be why it failed: keep that error
                mlflow.end_run("FAILED")
            raise
        with fail_fast():
            mlflow.end_run()


def _start_run(step: str, experiment_id: str, parent_run_id: str | None, start_time: float | None = None) -> Any:
    import mlflow

    injected = os.environ.get("MLFLOW_RUN_ID")
    if injected:
        return mlflow.start_run(run_id=injected)
    tags = {PARENT_TAG: parent_run_id} if parent_run_id else {}
    tags = {**tags, "homegrown.step": step}
    if start_time is None:
        return mlflow.start_run(experiment_id=experiment_id, run_name=step, tags=tags)
    from mlflow.tracking import MlflowClient

    # fluent start_run takes no start time; a run created with one is then made the active run
    created = MlflowClient().create_run(experiment_id, start_time=int(start_time * 1000), tags=tags, run_name=step)
    return mlflow.start_run(run_id=created.info.run_id)
