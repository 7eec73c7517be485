"""Checks before a training job asks for GPUs: each problem named with what to do, all at once.

- the output (checkpoints) can be written: a probe file written and removed;
- the base model, if any, exists and is loadable (safetensors, no remote code) or, for
  models:/, its registry alias or version resolves;
- the data is the tokenizer step's packed-tokens manifest or sft-tokenize's sft-packed one (not,
  say, the clean step's documents);
- the MLflow tracking server answers (HTTP(S) tracking URIs: GET /health, with the URI's
  user:password sent as HTTP Basic auth, as MLflow's client sends it; never printed);
- LoRA target modules name layers the base has (local and s3:// bases: built from its
  config.json on the meta device, no weights read).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
import uuid
from urllib.parse import unquote, urlsplit, urlunsplit

from components import storage
from components.mlflow_runs import redact_uri



class PreflightError(RuntimeError):
    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("training preflight failed:\n" + "\n".join(f"  - {p}" for p in problems))


def check_output(output_uri: str) -> str | None:
    probe = storage.join(output_uri, f".preflight-{uuid.uuid4().hex[:8]}")
    try:
        storage.write_text(probe, "ok")
        storage.remove_file(probe)
    except (storage.StorageError, OSError) as exc:
        return f"cannot write checkpoints under {output_uri}: {exc}; check the path, credentials and free space"
    return None


def check_base(base: str, tracking_uri: str | None) -> str | None:
    from components.hf_model import WEIGHTS, ModelDirError, check_model_dir

    if base.startswith("models:/"):
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        name, _, ref = base[len("models:/") :].partition("@")
        try:
            client = MlflowClient(tracking_uri)
            if ref:
                client.get_model_version_by_alias(name, ref)
            else:
                name, _, version = name.rpartition("/")
                client.get_model_version(name, version)
        except MlflowException as exc:
            return f"model.base {base}: not found in the registry ({exc.message}); register it or fix the name"
        return None
    if base.startswith("runs:/"):
        return None  # resolved when downloaded; a run's artifacts have no cheaper existence check
    if storage.is_s3(base):
        if not storage.exists(storage.join(base, "config.json")):
            return f"model.base {base}: no config.json under that prefix"
        if not any(storage.exists(storage.join(base, name)) for name in WEIGHTS):
            return f"model.base {base}: no model.safetensors under that prefix (pickled weights are not loaded)"
        return None
    try:
        check_model_dir(storage.local_path(base), base)
    except ModelDirError as exc:
        return f"model.base {exc}"
    return None


def check_data(manifest_uri: str) -> str | None:
    """The training data must be the tokenizer step's manifest (kind 'packed-tokens') or the
    sft-tokenize step's ('sft-packed'); the clean step's documents or a held-out set would only be
    refused by the worker, after torchrun or a TrainJob has started."""
    from components.manifest import Manifest
    from components.train.data import KINDS

    try:
        manifest = Manifest.load(manifest_uri)
    except (storage.StorageError, OSError, ValueError) as exc:  # pydantic's ValidationError is a ValueError
        return f"training data {manifest_uri}: cannot read it as a manifest ({exc}); pass the tokenizer step's manifest.json"
    if manifest.kind not in KINDS:
        return (f"training data {manifest_uri}: a {manifest.kind!r} manifest, not one of {', '.join(map(repr, KINDS))} "
                "the worker trains on; pass the manifest.json `homegrown tokenize --output DIR` (or `homegrown "
                "sft-tokenize`) writes (DIR/manifest.json), not the clean step's or a held-out DIR/eval/manifest.json")  # fmt: skip
    return None


def health_request(tracking_uri: str) -> urllib.request.Request:
    """GET TRACKING_URI/health, with the URI's user:password (percent-decoded) moved into an HTTP
    Basic Authorization header: urllib does not read credentials from a URL (it takes
    'user:pass@host' for a host with a port named 'pass@host')."""
    parts = urlsplit(tracking_uri)
    headers = {}
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, netloc = netloc.rpartition("@")
        user, _, password = userinfo.partition(":")
        token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode("ascii")
        headers["Authorization"] = f"Basic {token}"
    url = urlunsplit(parts._replace(netloc=netloc)).rstrip("/") + "/health"
    return urllib.request.Request(url, headers=headers)


def check_tracking(tracking_uri: str | None) -> str | None:
    """An HTTP(S) tracking server must answer 200 on /health; other URIs (sqlite:) are not checked.
    The problem names the server with its credentials masked (mlflow_runs.redact_uri)."""
    if not tracking_uri or not tracking_uri.startswith(("http://", "https://")):
        return None
    shown = redact_uri(tracking_uri)
    try:
        with urllib.request.urlopen(health_request(tracking_uri), timeout=10) as response:
            if response.status == 200:
                return None
            return f"MLflow at {shown} answered {response.status} on /health"
    except urllib.error.HTTPError as exc:  # an answer, not an outage: 401/403 mean the credentials
        hint = "; check the user and password in the tracking URI" if exc.code in (401, 403) else ""
        return f"MLflow at {shown} answered {exc.code} on /health{hint}"
    except (urllib.error.URLError, OSError, ValueError) as exc:  # ValueError: a malformed URL (http.client.InvalidURL)
        return f"MLflow at {shown} is not reachable ({exc}); check MLFLOW_TRACKING_URI and the server"


def adaptable_layers(config: dict) -> list[str]:
    """Dotted names of the layers LoRA can adapt (linear, embedding, convolution) in the model a
    config.json's contents describe."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM
    from transformers.pytorch_utils import Conv1D

    with torch.device("meta"):  # shapes only, nothing allocated; known model types only: no remote code
        model = AutoModelForCausalLM.from_config(AutoConfig.for_model(**config))
    kinds = (torch.nn.Linear, torch.nn.Embedding, torch.nn.Conv1d, torch.nn.Conv2d, Conv1D)
    return [name for name, module in model.named_modules() if isinstance(module, kinds)]


def check_lora_targets(base: str, targets: list[str]) -> str | None:
    """Each target must match a layer as peft matches them: the full name or its last parts."""
    if base.startswith(("models:/", "runs:/")):
        return None  # checked by peft once the worker has the model
    try:
        config = json.loads(storage.read_text(storage.join(base, "config.json")))
    except storage.StorageError:
        return None  # check_base reports a missing or unreadable base
    try:
        names = adaptable_layers(config)
    except Exception as exc:  # an unknown model_type, a malformed config
        return f"model.base {base}: config.json: {exc}"
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if not missing:
        return None
    layers = sorted({name.rsplit(".", 1)[-1] for name in names})
    return (f"model.lora.target_modules {missing}: no layer of {base} that LoRA can adapt is named so; "
            f"its layers are {', '.join(layers)} (or use all-linear)")  # fmt: skip


def check_train_inputs(
    output_uri: str, base: str | None = None, tracking_uri: str | None = None,
    lora_targets: list[str] | str | None = None, data_uri: str | None = None,
) -> None:  # fmt: skip
    """Run every check above that applies (data_uri: the training manifest; base, lora_targets:
    model.base and model.lora.target_modules) and raise PreflightError listing every problem, or
    return None when there is none."""
    problems = [check_output(output_uri), check_tracking(tracking_uri)]
    if data_uri:
        problems.append(check_data(data_uri))
    if base:
        problems.append(check_base(base, tracking_uri))
        if isinstance(lora_targets, list):  # "all-linear" matches any base
            problems.append(check_lora_targets(base, lora_targets))
    if found := [p for p in problems if p]:
        raise PreflightError(found)
