"""Serve a model version on the cluster: create or update its KServe InferenceService
(components/serve/inference_service.py), wait for Ready, send one completion, report.

    outcome = deploy(spec)        # raises DeployError (refused, failed, no answer) / DeployTimeout
    outcome = repoint("homegrown", "ml", "s3://b/serving/homegrown/v6", "6")   # rollback: all traffic
    outcome = promote_canary("homegrown", "ml")                                # the canary takes all

Lifecycle of `deploy`: no InferenceService of that name → create it (all traffic to it). One exists
→ merge-patch it: a new storage URI makes a new revision, which gets `spec.canary_traffic_percent`
of the traffic while the previous rolled-out revision keeps the rest (None: all of it); the same URI
(a rerun) changes no traffic. Then poll until the InferenceService has seen this generation, its
Ready condition is True and the newest revision is the ready one; KServe's own failure report
(modelStatus FailedToLoad, a RevisionFailed condition) fails at once, anything else at `timeout_s`.
Then one OpenAI completion (COMPLETIONS_PATH, the HF runtime's) goes to the new revision's own URL
when a canary splits traffic (tag routing), else to the service's in-cluster address. Every failure
raises with the InferenceService's conditions and the predictor pod's last log lines.

A merge patch replaces lists (args, tolerations) but merges maps: a node-selector key removed from
the config stays on the object until removed by hand.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import httpx
from kserve import constants
from kubernetes import client

from components.serve.inference_service import (
    PART_OF,
    URI_ANNOTATION,
    VERSION_LABEL,
    InferenceServiceSpec,
    build_inference_service,
    to_body,
)

GROUP, VERSION, PLURAL = constants.KSERVE_GROUP, constants.KSERVE_V1BETA1_VERSION, constants.KSERVE_PLURAL_INFERENCESERVICE
COMPLETIONS_PATH = "/openai/v1/completions"  # the HF runtime's OpenAI routes sit under /openai
POD_SELECTOR = "serving.kserve.io/inferenceservice={name}"
REVISION_LABEL = "serving.knative.dev/revision"
CONTAINERS = ("kserve-container", "storage-initializer")  # the model server; else the download that failed
TAIL_LINES = 40
MANAGED_BY = "app.kubernetes.io/managed-by"
RETRY_STATUS = (404, 502, 503, 504)  # Knative's activator / the route while a revision comes up


@dataclass(frozen=True)
class Smoke:
    """The one request sent once Ready."""

    prompt: str = "Hello"
    max_tokens: int = 8
    timeout_s: float = 120.0


@dataclass(frozen=True)
class DeployOutcome:
    name: str
    namespace: str
    url: str  # status.url: where clients call it (base_url = url + "/openai/v1")
    revision: str  # the newest ready revision (serving the new model)
    previous_revision: str  # the revision the rest of the traffic goes to ("" when none)
    traffic_percent: int  # the newest revision's share of traffic
    model_version: str
    storage_uri: str
    action: str  # "created" | "updated" | "unchanged"
    answer: str  # the smoke completion's text


class DeployError(RuntimeError):
    """The InferenceService could not be written, did not become Ready, or did not answer."""

    def __init__(self, text: str, conditions: list[str] | None = None, tail: list[str] | None = None):
        self.conditions, self.tail = conditions or [], tail or []
        extra = ""
        if self.conditions:
            extra += "\nconditions:\n" + "\n".join(f"  {c}" for c in self.conditions)
        if self.tail:
            extra += "\npredictor's last log lines:\n" + "\n".join(self.tail)
        super().__init__(text + extra)


class DeployTimeout(DeployError, TimeoutError):
    pass


def load_client() -> client.ApiClient:
    """The pod's service account, else the kubeconfig (see trainjob_launch.load_client)."""
    from components.train.trainjob_launch import TrainJobError
    from components.train.trainjob_launch import load_client as load

    try:
        return load()
    except TrainJobError as exc:
        raise DeployError(str(exc)) from None


def get(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    """The InferenceService, or None when there is none. Raises DeployError on any other answer."""
    try:
        return client.CustomObjectsApi(api).get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    except client.ApiException as exc:
        if exc.status == 404:
            return None
        raise DeployError(f"cannot read InferenceService {namespace}/{name}: {_api_error(exc)}") from None


def deploy(
    spec: InferenceServiceSpec,
    api: client.ApiClient | None = None,
    http: httpx.Client | None = None,
    smoke: Smoke = Smoke(),
    poll_s: float = 5.0,
    timeout_s: float = 1800.0,
    log: Callable[[str], None] = print,
) -> DeployOutcome:
    """Create or update the InferenceService, wait for Ready, send the smoke request (see the
    module docstring). Raises InferenceServiceSpecError, DeployError, DeployTimeout."""
    body = to_body(build_inference_service(spec))
    api = api if api is not None else load_client()
    custom = client.CustomObjectsApi(api)
    where = f"{spec.namespace}/{spec.name}"
    existing = get(api, spec.namespace, spec.name)
    predictor = body["spec"]["predictor"]
    if existing is None:
        predictor.pop("canaryTrafficPercent", None)  # the first revision takes all traffic
        written = _write(lambda: custom.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, body),
                         f"create InferenceService {where}")  # fmt: skip
        action = "created"
        log(f"[deploy] created InferenceService {where}: model version {spec.model_version}, {spec.storage_uri}")
    else:
        labels = (existing.get("metadata") or {}).get("labels") or {}
        if labels.get(MANAGED_BY) != PART_OF[MANAGED_BY]:
            raise DeployError(f"InferenceService {where} exists but homegrown did not create it (no label "
                              f"{MANAGED_BY}={PART_OF[MANAGED_BY]}): set serve.name to another name, or delete it")  # fmt: skip
        current = (((existing.get("spec") or {}).get("predictor") or {}).get("model") or {}).get("storageUri")
        if current == spec.storage_uri:
            predictor.pop("canaryTrafficPercent", None)  # a rerun: same revision, traffic as it is
            action = "unchanged"
        else:
            predictor["canaryTrafficPercent"] = spec.canary_traffic_percent or 100
            action = "updated"
        _null_what_was_removed(((existing.get("spec") or {}).get("predictor") or {}), predictor)
        patch = {"metadata": {k: body["metadata"][k] for k in ("labels", "annotations")}, "spec": body["spec"]}
        written = _patch(custom, spec.namespace, spec.name, patch)
        share = predictor.get("canaryTrafficPercent")
        log(f"[deploy] updated InferenceService {where}: model version {spec.model_version} ({spec.storage_uri}), "
            + (f"canary at {share} %" if share and share < 100 else "all traffic" if share else "traffic unchanged"))
    return _settle(api, http, spec.namespace, spec.name, written, spec.model_version, spec.storage_uri, action,
                   smoke, poll_s, timeout_s, log)  # fmt: skip


# Predictor fields the spec sets; a merge patch keeps an old key the new body leaves out, so one
# left out now (no GPUs any more, no tolerations, no service account) is sent as null, which removes it.
_OWNED = (("tolerations",), ("nodeSelector",), ("serviceAccountName",), ("minReplicas",), ("maxReplicas",),
          ("model", "runtime"), ("model", "args"), ("model", "env"), ("model", "resources", "requests"),
          ("model", "resources", "limits"))  # fmt: skip


def _null_what_was_removed(old: dict[str, Any], new: dict[str, Any]) -> None:
    """Set to None, in `new` (a predictor body for a JSON merge patch), each owned field or map key
    that `old` (the predictor as it is) has and `new` leaves out."""
    for path in _OWNED:
        before, after = old, new
        for key in path[:-1]:
            before = (before or {}).get(key) if isinstance(before, dict) else None
            after = after.setdefault(key, {}) if isinstance(after, dict) and isinstance(before, dict) else None
        leaf = path[-1]
        if not isinstance(before, dict) or leaf not in before or after is None:
            continue
        if leaf not in after or after[leaf] is None:
            after[leaf] = None
        elif isinstance(before[leaf], dict) and isinstance(after[leaf], dict):
            for key in before[leaf]:
                after[leaf].setdefault(key, None)


def repoint(
    name: str, namespace: str, storage_uri: str, model_version: str, api: client.ApiClient | None = None,
    http: httpx.Client | None = None, smoke: Smoke = Smoke(), poll_s: float = 5.0, timeout_s: float = 1800.0,
    log: Callable[[str], None] = print,
) -> DeployOutcome:  # fmt: skip
    """Point an existing InferenceService at another model version's files with all traffic (a
    rollback), wait for Ready and send the smoke request. Raises DeployError when there is none."""
    api = api if api is not None else load_client()
    if get(api, namespace, name) is None:
        raise DeployError(f"no InferenceService {namespace}/{name} to point at version {model_version}")
    patch = {
        "metadata": {"labels": {VERSION_LABEL: model_version}, "annotations": {URI_ANNOTATION: storage_uri}},
        "spec": {"predictor": {"canaryTrafficPercent": 100, "model": {"storageUri": storage_uri}}},
    }
    written = _patch(client.CustomObjectsApi(api), namespace, name, patch)
    log(f"[deploy] pointed InferenceService {namespace}/{name} at model version {model_version} ({storage_uri}), "
        "all traffic")  # fmt: skip
    return _settle(api, http, namespace, name, written, model_version, storage_uri, "updated", smoke, poll_s,
                   timeout_s, log)  # fmt: skip


def promote_canary(
    name: str, namespace: str, api: client.ApiClient | None = None, http: httpx.Client | None = None,
    smoke: Smoke = Smoke(), poll_s: float = 5.0, timeout_s: float = 600.0, log: Callable[[str], None] = print,
) -> DeployOutcome:  # fmt: skip
    """Give the newest revision all traffic (end a canary). Raises DeployError when there is none."""
    api = api if api is not None else load_client()
    existing = get(api, namespace, name)
    if existing is None:
        raise DeployError(f"no InferenceService {namespace}/{name}: nothing to promote")
    written = _patch(client.CustomObjectsApi(api), namespace, name, {"spec": {"predictor": {"canaryTrafficPercent": 100}}})
    model = existing["spec"]["predictor"].get("model") or {}
    version = (existing["metadata"].get("labels") or {}).get(VERSION_LABEL, "")
    return _settle(api, http, namespace, name, written, version, model.get("storageUri", ""), "updated", smoke,
                   poll_s, timeout_s, log)  # fmt: skip


# ---- waiting, reporting ---------------------------------------------------------------------


def _settle(api: client.ApiClient, http: httpx.Client | None, namespace: str, name: str, written: dict[str, Any],
            model_version: str, storage_uri: str, action: str, smoke: Smoke, poll_s: float, timeout_s: float,
            log: Callable[[str], None]) -> DeployOutcome:  # fmt: skip
    generation = (written.get("metadata") or {}).get("generation")
    obj = wait_ready(api, namespace, name, generation, poll_s, timeout_s, log)
    status = obj.get("status") or {}
    predictor = (status.get("components") or {}).get("predictor") or {}
    revision = predictor.get("latestReadyRevision", "")
    traffic = predictor.get("traffic") or []
    newest = [t for t in traffic if t.get("revisionName") == revision or t.get("latestRevision")]
    share = int(newest[0].get("percent", 100)) if newest else 100
    previous = next((t.get("revisionName", "") for t in traffic if t.get("tag") == "prev" and t.get("percent")), "")
    tagged = next((_cluster_local(t["url"], namespace) for t in traffic if t.get("tag") == "latest" and t.get("url")), None)
    base = (tagged if share < 100 else None) or (status.get("address") or {}).get("url") or status.get("url")
    if not base:
        raise DeployError(f"InferenceService {namespace}/{name} is Ready but has no URL in its status",
                          conditions(obj), pod_tail(api, namespace, name, revision))  # fmt: skip
    answer = smoke_test(base, name, smoke, http, api, namespace, obj, poll_s, log)
    log(f"[deploy] {namespace}/{name} answers at {status.get('url') or base}: revision {revision} has {share} % "
        f"of traffic" + (f", {previous} the rest" if previous and share < 100 else ""))  # fmt: skip
    return DeployOutcome(name, namespace, status.get("url") or base, revision, previous if share < 100 else "", share,
                         model_version, storage_uri, action, answer)  # fmt: skip


def _cluster_local(url: str, namespace: str) -> str:
    """A Knative tag URL (http://latest-<name>-predictor.<ns>.<external domain>) on the cluster's own
    domain: the deploy step runs in the cluster, where the external domain may not resolve."""
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host.split('.')[0]}.{namespace}.svc.cluster.local{slash}{path}"


def conditions(obj: dict[str, Any]) -> list[str]:
    """The status conditions as 'Type=Status (Reason: message)' lines, and KServe's model failure."""
    status = obj.get("status") or {}
    lines = []
    for c in status.get("conditions") or []:
        why = ": ".join(x for x in (c.get("reason"), c.get("message")) if x)
        lines.append(f"{c.get('type')}={c.get('status')}" + (f" ({why})" if why else ""))
    failure = (status.get("modelStatus") or {}).get("lastFailureInfo") or {}
    if failure:
        lines.append(f"model: {failure.get('reason', '')}: {failure.get('message', '')}")
    return lines


def _failed(obj: dict[str, Any]) -> bool:
    """KServe's own verdict that waiting longer will not help."""
    status = obj.get("status") or {}
    model = status.get("modelStatus") or {}
    if (model.get("states") or {}).get("targetModelState") == "FailedToLoad":
        return True
    return any(c.get("status") == "False" and c.get("reason") == "RevisionFailed" for c in status.get("conditions") or [])


def _ready(obj: dict[str, Any], generation: int | None) -> bool:
    status = obj.get("status") or {}
    if generation is not None and (status.get("observedGeneration") or 0) < generation:
        return False  # the status still describes the spec before our write
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    predictor = (status.get("components") or {}).get("predictor") or {}
    created, latest = predictor.get("latestCreatedRevision"), predictor.get("latestReadyRevision")
    return ready and bool(latest) and (created is None or created == latest)


def wait_ready(api: client.ApiClient, namespace: str, name: str, generation: int | None = None, poll_s: float = 5.0,
               timeout_s: float = 1800.0, log: Callable[[str], None] = print) -> dict[str, Any]:  # fmt: skip
    """Poll until Ready for `generation` (see _ready); the object. Raises DeployError (KServe reports
    a failure, the object vanished) or DeployTimeout, each with conditions and the pod's log tail."""
    where = f"{namespace}/{name}"
    started, last = time.monotonic(), None
    while True:
        obj = get(api, namespace, name)
        if obj is None:
            raise DeployError(f"InferenceService {where} was deleted while it rolled out")
        shown = conditions(obj)
        if shown != last:
            last = shown
            log(f"[deploy] {where}: " + ("; ".join(shown) if shown else "no status yet"))
        if _ready(obj, generation):
            return obj
        revision = (((obj.get("status") or {}).get("components") or {}).get("predictor") or {}).get("latestCreatedRevision")
        if _failed(obj):
            raise DeployError(f"InferenceService {where} failed to roll out", shown, pod_tail(api, namespace, name, revision))
        waited = time.monotonic() - started
        if waited >= timeout_s:
            raise DeployTimeout(f"InferenceService {where} was not Ready within {timeout_s:g} s", shown,
                                pod_tail(api, namespace, name, revision))  # fmt: skip
        time.sleep(max(0.0, min(poll_s, timeout_s - waited)))


def pod_tail(api: client.ApiClient, namespace: str, name: str, revision: str | None = None) -> list[str]:
    """The last TAIL_LINES log lines of the newest predictor pod (of `revision` when given): the
    model server's, else the storage initializer's. Best effort: a line saying why when unavailable."""
    core = client.CoreV1Api(api)
    selector = POD_SELECTOR.format(name=name) + (f",{REVISION_LABEL}={revision}" if revision else "")
    try:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    except client.ApiException as exc:
        return [f"(no predictor log: cannot list pods {selector}: {exc.status} {exc.reason})"]
    if not pods:
        return [f"(no predictor log: no pod matches {selector})"]
    never = datetime.min.replace(tzinfo=timezone.utc)
    pod = max(pods, key=lambda p: p.metadata.creation_timestamp or never).metadata.name
    why = ""
    for container in CONTAINERS:
        try:
            text = core.read_namespaced_pod_log(pod, namespace, container=container, tail_lines=TAIL_LINES)
        except client.ApiException as exc:
            why = f"{exc.status} {exc.reason}"
            continue  # not started yet (400): the initializer's log says why
        lines = text.splitlines()[-TAIL_LINES:]
        return [f"[{pod}/{container}] {line}" for line in lines] or [f"({pod}/{container}: empty log)"]
    return [f"(no predictor log from pod {pod}: {why})"]


def smoke_test(base_url: str, model: str, smoke: Smoke, http: httpx.Client | None, api: client.ApiClient,
               namespace: str, obj: dict[str, Any], poll_s: float = 5.0,
               log: Callable[[str], None] = print) -> str:  # fmt: skip
    """One completion against the endpoint; its text. Answers Knative gives while a revision comes
    up (RETRY_STATUS, connection errors) are retried until smoke.timeout_s; anything else, or no
    answer by then, raises DeployError with the conditions and the pod's log tail."""
    url = base_url.rstrip("/") + COMPLETIONS_PATH
    request = {"model": model, "prompt": smoke.prompt, "max_tokens": smoke.max_tokens, "temperature": 0}
    own = http is None
    http = http or httpx.Client(timeout=smoke.timeout_s)
    started, why = time.monotonic(), ""
    revision = (((obj.get("status") or {}).get("components") or {}).get("predictor") or {}).get("latestReadyRevision")
    try:
        while True:
            try:
                response = http.post(url, json=request, timeout=smoke.timeout_s)
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if response.status_code == 200:
                    try:
                        text = response.json()["choices"][0]["text"]
                    except (ValueError, KeyError, IndexError, TypeError):
                        why = f"200 but not a completion: {response.text[:300]}"
                        break
                    log(f"[deploy] smoke request to {url}: {text!r}")
                    return text
                why = f"{response.status_code}: {response.text[:300]}"
                if response.status_code not in RETRY_STATUS:
                    break
            if time.monotonic() - started + poll_s >= smoke.timeout_s:
                break
            time.sleep(poll_s)
    finally:
        if own:
            http.close()
    raise DeployError(f"InferenceService {namespace}/{model} is Ready but did not answer a completion at {url} "
                      f"({why})", conditions(obj), pod_tail(api, namespace, model, revision))  # fmt: skip


def _write(call: Callable[[], dict[str, Any]], doing: str) -> dict[str, Any]:
    try:
        return call()
    except client.ApiException as exc:
        raise DeployError(f"cannot {doing}: {_api_error(exc)}") from None


def _patch(custom: client.CustomObjectsApi, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    return _write(lambda: custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch),
                  f"update InferenceService {namespace}/{name}")  # fmt: skip


HINTS = {
    403: "the step's service account needs RBAC to get/create/patch inferenceservices.serving.kserve.io",
    404: "is KServe installed (inferenceservices.serving.kserve.io CRD) and does the namespace exist?",
    422: "rejected by KServe's webhook: does the runtime exist, and is the spec valid for it?",
}


def _api_error(exc: client.ApiException) -> str:
    try:
        message = json.loads(exc.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        message = str(exc.body or "")[:500]
    hint = f" ({HINTS[exc.status]})" if exc.status in HINTS else ""
    return f"{exc.status} {exc.reason}: {message}{hint}"

