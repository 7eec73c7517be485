"""Run a TrainJob (components/train/trainjob.py) and wait for it: create it, poll its
conditions, stream rank 0's log, delete it.

    outcome = launch(spec)   # raises TrainJobFailed / TrainJobTimeout; result.json is under output_uri

Lifecycle: check_spec -> create -> poll the conditions (Complete / Failed), printing status
changes and rank 0's log -> return, or raise. The TrainJob is deleted whenever launch() leaves
while it may still be running -- SIGTERM from a cancelled KFP run, a timeout, any error -- which
frees its GPUs (the workers get SIGTERM and checkpoint). A finished job is deleted too unless
`keep_finished`: rank 0's log is already in the KFP step's log and the reason in the exception.

A launcher killed outright (SIGKILL, OOM, its node lost) cleans nothing up itself; two things do:
- the TrainJob's ownerReference to the launcher's pod (`TrainJobSpec.owner`, from the downward-API
  variables POD_NAME_ENV / POD_UID_ENV via `owner_from_env`): when that pod object is deleted
  (Argo's pod GC, the run deleted, an evicted pod removed) Kubernetes' garbage collector deletes
  the TrainJob, and with it its JobSet and pods;
- the pipeline's exit handler (its finish step, which runs however the run ended, while the dead
  launcher's pod object may still exist) calls `delete_unfinished(namespace, {RUN_LABEL: run name})`:
  every TrainJob of that run that is neither Complete nor Failed is deleted.
"""

from __future__ import annotations

import collections
import json
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from kubernetes import client, config

from components.train.trainjob import (
    GROUP,
    LABEL_VALUE,
    NODE,
    PLURAL,
    RUN_LABEL,
    VERSION,
    TrainJobSpec,
    TrainJobSpecError,
    build_trainjob,
)

# Labels JobSet and the Job controller put on each pod; completion index 0 of `node` is node rank 0.
RANK0_SELECTOR = (
    "jobset.sigs.k8s.io/jobset-name={name},jobset.sigs.k8s.io/replicatedjob-name=" + NODE
    + ",batch.kubernetes.io/job-completion-index=0"
)  # fmt: skip
TAIL_LINES = 40
LOG_OVERLAP_S = 10  # re-read this much of rank 0's log each poll; lines already printed are skipped


@dataclass(frozen=True)
class TrainJobOutcome:
    name: str
    namespace: str
    reason: str
    message: str
    duration_s: float
    deleted: bool


class TrainJobError(RuntimeError):
    """The TrainJob could not be created or watched, or it failed (see TrainJobFailed)."""

    def __init__(self, text: str, name: str = "", namespace: str = "", reason: str = "", message: str = "",
                 tail: list[str] | None = None):  # fmt: skip
        self.name, self.namespace, self.reason, self.message = name, namespace, reason, message
        self.tail = tail or []
        last = "\nrank 0's last output:\n" + "\n".join(self.tail) if self.tail else ""
        super().__init__(text + last)


class TrainJobFailed(TrainJobError):
    """The TrainJob's Failed condition became True; `reason` / `message` are the condition's."""


class TrainJobTimeout(TrainJobError, TimeoutError):
    pass


class TrainJobCancelled(SystemExit):
    """SIGTERM / SIGINT arrived while waiting (a cancelled KFP run); exits 128 + signal number."""

    def __init__(self, signum: int):
        self.signum = signum
        super().__init__(128 + signum)


def load_client() -> client.ApiClient:
    """In a pod: its service account. Elsewhere: the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        config.load_incluster_config(client_configuration=configuration)
    except config.ConfigException as in_cluster:
        try:
            # KUBECONFIG is read here, not when kubernetes was imported
            config.load_kube_config(os.environ.get("KUBECONFIG"), client_configuration=configuration)
        except (config.ConfigException, OSError) as kubeconfig:
            raise TrainJobError(
                "no Kubernetes credentials: not running in a pod with a service account "
                f"({in_cluster}) and no usable kubeconfig ({kubeconfig}); run the step in the cluster "
                "or point KUBECONFIG at a kubeconfig"
            ) from None
    return client.ApiClient(configuration)


def _state(obj: dict[str, Any]) -> tuple[str, str, str, str]:
    """(phase, reason, message, jobs summary) from a TrainJob's status."""
    status = obj.get("status") or {}
    true = {c.get("type"): c for c in status.get("conditions") or [] if c.get("status") == "True"}
    jobs = status.get("jobsStatus") or []
    summary = ", ".join(
        f"{j.get('name')} jobs: {j.get('ready', 0)} ready, {j.get('active', 0)} active, "
        f"{j.get('succeeded', 0)} succeeded, {j.get('failed', 0)} failed"
        for j in jobs
    )
    for phase in ("Failed", "Complete", "Suspended"):
        if phase in true:
            return phase, true[phase].get("reason") or "", true[phase].get("message") or "", summary
    running = any(j.get("ready") or j.get("succeeded") for j in jobs)
    return ("Running" if running else "Pending"), "", "", summary


class _Rank0Log:
    """Best effort: print rank 0's new log lines each poll; a missing pod or an error never fails
    the launch (the first error of a kind is reported once)."""

    def __init__(self, core: client.CoreV1Api, name: str, namespace: str, log: Callable[[str], None]):
        self.core, self.name, self.namespace, self.log = core, name, namespace, log
        self.pod: str | None = None
        self.seen: set[str] = set()
        self.last_read = 0.0
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.reported: set[str] = set()

    def poll(self) -> None:
        try:
            self._poll()
        except client.ApiException as exc:
            if exc.status in (400, 404):  # container not started yet / pod replaced: look again next poll
                self.pod = None
                return
            self._report(f"{exc.status} {exc.reason}")
        except Exception as exc:  # noqa: BLE001 -- logs are a convenience, the job is what matters
            self._report(f"{type(exc).__name__}: {exc}")

    def _report(self, why: str) -> None:
        if why not in self.reported:
            self.reported.add(why)
            self.log(f"[trainjob] rank 0 log unavailable ({why}); still waiting for the job")

    def _poll(self) -> None:
        if self.pod is None:
            pods = self.core.list_namespaced_pod(self.namespace, label_selector=RANK0_SELECTOR.format(name=self.name))
            started = [p for p in pods.items if p.status and p.status.phase in ("Running", "Succeeded", "Failed")]
            if not started:
                return
            never = datetime.min.replace(tzinfo=timezone.utc)
            newest = max(started, key=lambda p: p.metadata.creation_timestamp or never)
            self.pod, self.seen, self.last_read = newest.metadata.name, set(), 0.0
        kwargs: dict[str, Any] = {"container": NODE, "timestamps": True, "_preload_content": False}
        now = time.monotonic()
        if self.last_read:
            kwargs["since_seconds"] = math.ceil(now - self.last_read) + LOG_OVERLAP_S
        response = self.core.read_namespaced_pod_log(self.pod, self.namespace, **kwargs)
        self.last_read = now
        lines = response.data.decode("utf-8", "replace").splitlines()
        response.release_conn()
        for line in lines:
            if line not in self.seen:
                text = line.split(" ", 1)[1] if " " in line else line  # drop the timestamp
                self.tail.append(text)
                self.log(text)
        self.seen = set(lines)


@dataclass
class _Signals:
    """Turn SIGTERM / SIGINT into TrainJobCancelled while waiting (main thread only)."""

    previous: dict[int, Any]
    fired: bool = False

    @classmethod
    def install(cls, enabled: bool) -> _Signals:
        self = cls(previous={})
        if not enabled or threading.current_thread() is not threading.main_thread():
            return self
        for signum in (signal.SIGTERM, signal.SIGINT):
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if not self.fired:  # a second signal must not interrupt the delete
            self.fired = True
            raise TrainJobCancelled(signum)

    def restore(self) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)


def launch(
    spec: TrainJobSpec,
    api: client.ApiClient | None = None,
    poll_s: float = 15.0,
    timeout_s: float | None = None,
    log: Callable[[str], None] = print,
    keep_finished: bool = False,
    handle_signals: bool = True,
) -> TrainJobOutcome:
    """Create the TrainJob, wait for Complete and return; raise TrainJobFailed (Failed),
    TrainJobTimeout (timeout_s), TrainJobCancelled (SIGTERM/SIGINT) or TrainJobError."""
    body = build_trainjob(spec, log).to_dict()
    api = api if api is not None else load_client()
    custom, core = client.CustomObjectsApi(api), client.CoreV1Api(api)
    where = f"{spec.namespace}/{spec.name}"
    rank0 = _Rank0Log(core, spec.name, spec.namespace, log)
    started = time.monotonic()
    submitted = finished = deleted = False
    reason = message = ""
    signals = _Signals.install(handle_signals)
    try:
        submitted = True  # from here on a cancel may land after the server created it
        try:
            custom.create_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, body)
        except client.ApiException as exc:
            submitted = exc.status >= 500  # a 4xx created nothing (a 409 is someone else's job)
            raise TrainJobError(_create_error(exc, spec), spec.name, spec.namespace, str(exc.status)) from None
        owned = [f"pod {o['name']}" for o in body["metadata"].get("ownerReferences") or []]
        log(f"[trainjob] created {where}: {spec.num_nodes} node(s) x {spec.nproc_per_node} rank(s), "
            f"runtime {spec.runtime}, image {spec.image}" + (f", owned by {owned[0]}" if owned else ""))  # fmt: skip
        last = None
        while True:
            obj = _get(custom, spec)
            phase, reason, message, jobs = _state(obj)
            if (phase, reason, jobs) != last:
                last = (phase, reason, jobs)
                detail = f" ({reason}: {message})" if reason or message else ""
                log(f"[trainjob] {where}: {phase}{detail}" + (f"; {jobs}" if jobs else ""))
            rank0.poll()
            if phase == "Complete":
                finished = True
                break
            if phase == "Failed":
                finished = True
                raise TrainJobFailed(f"TrainJob {where} failed: {reason or 'no reason'}: {message or 'no message'}",
                                     spec.name, spec.namespace, reason, message, list(rank0.tail))  # fmt: skip
            waited = time.monotonic() - started
            if timeout_s is not None and waited >= timeout_s:
                raise TrainJobTimeout(f"TrainJob {where} did not finish within {timeout_s:g} s (last: {phase})",
                                      spec.name, spec.namespace, "Timeout", "", list(rank0.tail))  # fmt: skip
            time.sleep(poll_s if timeout_s is None else max(0.0, min(poll_s, timeout_s - waited)))
    finally:
        signals.fired = True  # a signal now must not interrupt the delete
        try:
            if submitted and not (finished and keep_finished):
                deleted = _delete(custom, spec.namespace, spec.name, log)
        finally:
            signals.restore()
    return TrainJobOutcome(spec.name, spec.namespace, reason, message, round(time.monotonic() - started, 3), deleted)


def _get(custom: client.CustomObjectsApi, spec: TrainJobSpec) -> dict[str, Any]:
    where = f"{spec.namespace}/{spec.name}"
    try:
        return custom.get_namespaced_custom_object(GROUP, VERSION, spec.namespace, PLURAL, spec.name)
    except client.ApiException as exc:
        if exc.status == 404:
            raise TrainJobError(f"TrainJob {where} was deleted while it ran", spec.name, spec.namespace,
                                "NotFound") from None  # fmt: skip
        raise TrainJobError(f"cannot read TrainJob {where}: {exc.status} {exc.reason}: {_message(exc)}",
                            spec.name, spec.namespace, str(exc.status)) from None  # fmt: skip


def _create_error(exc: client.ApiException, spec: TrainJobSpec) -> str:
    where = f"{spec.namespace}/{spec.name}"
    hints = {
        403: "the step's service account needs RBAC to create/get/delete trainjobs.trainer.kubeflow.org",
        404: "is Kubeflow Trainer installed (trainjobs.trainer.kubeflow.org CRD) and does the namespace exist?",
        409: "a TrainJob with this name exists: delete it or use job_name() for a fresh name",
        422: f"rejected by the Trainer API: does runtime {spec.runtime!r} exist?",
    }
    hint = f" ({hints[exc.status]})" if exc.status in hints else ""
    return f"cannot create TrainJob {where}: {exc.status} {exc.reason}: {_message(exc)}{hint}"


def _message(exc: client.ApiException) -> str:
    try:
        return json.loads(exc.body or "{}").get("message") or ""
    except (ValueError, AttributeError):
        return str(exc.body or "")[:500]


def _delete(custom: client.CustomObjectsApi, namespace: str, name: str, log: Callable[[str], None]) -> bool:
    where = f"{namespace}/{name}"
    try:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, propagation_policy="Background")
    except client.ApiException as exc:
        if exc.status == 404:
            return False
        log(f"[trainjob] could not delete {where} ({exc.status} {exc.reason}): "
            f"`kubectl delete trainjob -n {namespace} {name}` frees its GPUs")  # fmt: skip
        return False
    except Exception as exc:  # noqa: BLE001 -- never mask the error that brought us here
        log(f"[trainjob] could not delete {where} ({exc}): `kubectl delete trainjob -n {namespace} {name}`")
        return False
    log(f"[trainjob] deleted {where}")
    return True


def delete_unfinished(
    namespace: str, labels: dict[str, str], api: client.ApiClient | None = None, log: Callable[[str], None] = print
) -> list[str]:
    """Delete the TrainJobs in `namespace` carrying all `labels` that are neither Complete nor
    Failed; their names. For the pipeline's exit handler, with {RUN_LABEL: run name}: a run whose
    launcher was killed (no SIGTERM, or its pod object still there) must not leave GPUs allocated.
    Raises TrainJobSpecError for no labels (that would select every TrainJob in the namespace) or a
    label that is not a valid selector term, TrainJobError when the TrainJobs cannot be listed."""
    problems = [f"  labels.{k}: {v!r} is not a label value (<= 63 of A-Z a-z 0-9 - _ .)"
                for k, v in labels.items() if not LABEL_VALUE.match(v) or len(v) > 63]  # fmt: skip
    if not labels:
        problems.append(f"  labels: empty, which would select every TrainJob in {namespace}: "
                        f"pass {{{RUN_LABEL!r}: run name}}")
    if problems:
        raise TrainJobSpecError("delete_unfinished: invalid labels\n" + "\n".join(problems))
    custom = client.CustomObjectsApi(api if api is not None else load_client())
    selector = ",".join(f"{k}={v}" for k, v in sorted(labels.items()))
    try:
        listed = custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, label_selector=selector)
    except client.ApiException as exc:
        raise TrainJobError(f"cannot list TrainJobs in {namespace} ({selector}): {exc.status} {exc.reason}: "
                            f"{_message(exc)}; `kubectl delete trainjob -n {namespace} -l {selector}` frees "
                            "their GPUs", namespace=namespace, reason=str(exc.status)) from None  # fmt: skip
    deleted = []
    for obj in listed.get("items") or []:
        name = obj["metadata"]["name"]
        if _state(obj)[0] not in ("Complete", "Failed") and _delete(custom, namespace, name, log):
            deleted.append(name)
    return deleted
