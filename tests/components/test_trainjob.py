"""The TrainJob launcher against the real kubernetes client, its HTTP layer replaced by a fake
API server (no cluster here): what it sends, how it waits, when it deletes."""

from __future__ import annotations

import json
import os
import signal

import pytest
from kubeflow_trainer_api import models as m
from kubernetes import client, config

from components.k8s import SecretEnv, Toleration
from components.train import trainjob, trainjob_launch
from components.train.trainjob import (
    PvcMount,
    TrainJobSpec,
    TrainJobSpecError,
    build_trainjob,
    job_name,
    check_spec,
)
from components.train.trainjob_launch import (
    TrainJobCancelled,
    TrainJobError,
    TrainJobFailed,
    TrainJobTimeout,
    launch,
)
from tests import kube_api
from tests.kube_api import CRDS, api_for, crd_problems, error, reply
from tests.kube_api import crd_schema as load_crd_schema

NS = "ml"
TRAINJOBS = f"/apis/trainer.kubeflow.org/v1alpha1/namespaces/{NS}/trainjobs"
CRD = CRDS / "kubeflow-trainer-v2.3.0-trainer.kubeflow.org_trainjobs.yaml"
# the launcher pod, as the downward API gives it
POD = {trainjob.POD_NAME_ENV: "homegrown-pipeline-x7k2p-system-container-impl-2214580871",
       trainjob.POD_UID_ENV: "1b4e28ba-2fa1-11d2-883f-0016e3f5a1b2"}  # fmt: skip


def full_spec(**overrides) -> TrainJobSpec:
    values = {
        "name": "homegrown-run-7-abcde",
        "namespace": NS,
        "image": "registry.example/homegrown/trainer:0.1.0",
        "data_uri": "s3://bucket/run-7/tokenizer/manifest.json",
        "output_uri": "s3://bucket/run-7/train",
        "config_uri": "s3://bucket/run-7/train/config.json",
        "num_nodes": 4,
        "nproc_per_node": 8,
        "gpus_per_node": 8,
        "cpu": "32",
        "memory": "256Gi",
        "env": {"MLFLOW_TRACKING_URI": "http://mlflow:5000", "MLFLOW_RUN_ID": "0123abcd"},
        "secret_env": [
            SecretEnv(
                secret_name="s3-creds", keys={"access_key": "AWS_ACCESS_KEY_ID", "secret_key": "AWS_SECRET_ACCESS_KEY"}
            )
        ],
        "tolerations": [
            Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
            Toleration(key="pool", operator="Equal", value="training", effect="NoExecute"),
        ],
        "node_selector": {"nvidia.com/gpu.product": "H100"},
        "volumes": [
            PvcMount(claim_name="homegrown-data", mount_path="/data"),
            PvcMount(claim_name="hf-cache", mount_path="/cache", read_only=True),
        ],
        "service_account": "homegrown-trainer",
        "labels": {"pipeline/runid": "9f1c2d3e-0000-4000-8000-000000000001"},
        "annotations": {"homegrown/mlflow-run-id": "0123abcd"},
        "active_deadline_s": 86400,
        "runtime": "torch-distributed-h100",
        "preemption_grace_s": 120,
    }
    return TrainJobSpec(**(values | overrides))


def pod_patch(body: dict) -> dict:
    [patch] = body["spec"]["runtimePatches"]
    [job] = patch["trainingRuntimeSpec"]["template"]["spec"]["replicatedJobs"]
    assert job["name"] == "node"
    return job["template"]["spec"]["template"]


# ---- the object -------------------------------------------------------------------------


def test_every_setting_lands_at_its_trainjob_path():
    spec = full_spec()
    job = build_trainjob(spec)
    body = job.to_dict()
    # what the kubernetes client would put on the wire
    wire = json.loads(json.dumps(client.ApiClient().sanitize_for_serialization(body)))
    assert wire == body

    assert body["apiVersion"] == "trainer.kubeflow.org/v1alpha1" and body["kind"] == "TrainJob"
    assert body["metadata"] == {
        "name": "homegrown-run-7-abcde", "namespace": NS,
        "labels": {"pipeline/runid": "9f1c2d3e-0000-4000-8000-000000000001"},
        "annotations": {"homegrown/mlflow-run-id": "0123abcd"},
    }  # fmt: skip
    s = body["spec"]
    assert s["runtimeRef"] == {"name": "torch-distributed-h100", "kind": "ClusterTrainingRuntime",
                               "apiGroup": "trainer.kubeflow.org"}  # fmt: skip
    assert s["activeDeadlineSeconds"] == 86400
    t = s["trainer"]
    assert t["image"] == "registry.example/homegrown/trainer:0.1.0"
    assert t["command"] == ["torchrun", "-m", "components.train.worker"]
    assert t["args"] == ["--data", "s3://bucket/run-7/tokenizer/manifest.json", "--output", "s3://bucket/run-7/train",
                         "--config", "s3://bucket/run-7/train/config.json"]  # fmt: skip
    assert t["numNodes"] == 4 and t["numProcPerNode"] == 8
    wanted = {"nvidia.com/gpu": "8", "cpu": "32", "memory": "256Gi"}
    assert t["resourcesPerNode"] == {"requests": wanted, "limits": wanted}
    assert t["env"] == [
        {"name": "PYTHONUNBUFFERED", "value": "1"},
        {"name": "TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "value": "120"},  # torchrun gives the ranks the grace
        {"name": "MLFLOW_TRACKING_URI", "value": "http://mlflow:5000"},
        {"name": "MLFLOW_RUN_ID", "value": "0123abcd"},
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "access_key"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "secret_key"}}},
    ]

    pod = pod_patch(body)
    assert pod["metadata"] == {"labels": spec.labels, "annotations": spec.annotations}
    ps = pod["spec"]
    assert ps["serviceAccountName"] == "homegrown-trainer"
    assert ps["terminationGracePeriodSeconds"] == 120 + 15  # and the pod a little more, for torchrun itself
    assert ps["nodeSelector"] == {"nvidia.com/gpu.product": "H100"}
    assert ps["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "pool", "operator": "Equal", "value": "training", "effect": "NoExecute"},
    ]
    assert ps["volumes"] == [
        {"name": "pvc-0", "persistentVolumeClaim": {"claimName": "homegrown-data"}},
        {"name": "pvc-1", "persistentVolumeClaim": {"claimName": "hf-cache", "readOnly": True}},
    ]
    mounts = [{"name": "pvc-0", "mountPath": "/data"}, {"name": "pvc-1", "mountPath": "/cache", "readOnly": True}]
    assert ps["containers"] == [{"name": "node", "volumeMounts": mounts}]

    # it is a Trainer API object: the SDK's models read it back unchanged
    again = m.TrainerV1alpha1TrainJob.from_dict(wire)
    assert again.to_dict() == body
    assert again.spec.trainer.env == job.spec.trainer.env and again.spec.runtime_patches == job.spec.runtime_patches


def test_cpu_job_defaults_and_nothing_to_patch():
    spec = full_spec(gpus_per_node=0, nproc_per_node=2, num_nodes=2, cpu=None, memory="8Gi", tolerations=[],
                     node_selector={}, volumes=[], service_account=None, labels={}, annotations={},
                     secret_env=[], env={"OMP_NUM_THREADS": "4"}, active_deadline_s=None,
                     preemption_grace_s=None)  # fmt: skip
    body = build_trainjob(spec).to_dict()
    t = body["spec"]["trainer"]
    assert t["resourcesPerNode"] == {"requests": {"memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    assert t["numProcPerNode"] == 2  # an int: "auto" would mean one rank per CPU core
    env = {e["name"]: e["value"] for e in t["env"]}
    assert env == {"PYTHONUNBUFFERED": "1", "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "4"}  # the caller wins
    assert "runtimePatches" not in body["spec"] and "activeDeadlineSeconds" not in body["spec"]
    assert "labels" not in body["metadata"]


def test_job_name_is_a_dns_label_that_leaves_room_for_pod_names():
    assert job_name("Homegrown_Run 2024/01", suffix="x1y2z") == "homegrown-run-2024-01-x1y2z"
    assert job_name("2024-nightly", suffix="") == "train-2024-nightly"
    assert job_name("---", suffix="") == "train"
    long = job_name("a" * 100, num_nodes=1000)
    assert len(long) + len("-node-0-999-abcde") == 63 and long[-6] == "-"
    names = {job_name("run") for _ in range(5)}
    assert len(names) == 5  # a fresh suffix each call: a retried step never collides
    for name in names | {long}:
        check_spec(full_spec(name=name, num_nodes=1000))


def test_check_spec_names_every_problem_and_the_fix():
    spec = full_spec(
        name="Run_7", namespace="", num_nodes=0, nproc_per_node=4, gpus_per_node=8, image=" ",
        env={"PET_NNODES": "2", "AWS_ACCESS_KEY_ID": "x"}, volumes=[PvcMount(claim_name="d", mount_path="data")],
        tolerations=[Toleration(key="k", operator="Exists", value="v")], labels={"run": "x" * 64},
    )  # fmt: skip
    with pytest.raises(TrainJobSpecError) as caught:
        build_trainjob(spec)
    text = str(caught.value)
    for expected in (
        "num_nodes: must be >= 1 (got 0)",
        "nproc_per_node: (4) must equal gpus_per_node (8)",
        "name: 'Run_7' is not a DNS-1035 label",
        "namespace: '' is not a namespace name",
        "image: must not be empty",
        "env.PET_NNODES: is set by the torch runtime",
        "env.AWS_ACCESS_KEY_ID: is set more than once",
        "volumes[0].mount_path: 'data' must be an absolute path",
        "tolerations[0].value: must be empty when operator is Exists",
        "labels.run:",
    ):
        assert expected in text, (expected, text)

    with pytest.raises(TrainJobSpecError, match="with 1000 nodes its pod names need it <= 46"):
        check_spec(full_spec(name="a" * 47, num_nodes=1000))


@pytest.fixture(scope="module")
def crd_schema() -> dict:
    return load_crd_schema(CRD, "v1alpha1")


def test_the_trainjob_matches_the_released_crd_and_nothing_is_pruned(crd_schema, tmp_path):
    (tmp_path / "namespace").write_text(NS + "\n")
    spec = full_spec(owner=trainjob.owner_from_env(POD, tmp_path / "namespace"))
    body = json.loads(json.dumps(build_trainjob(spec).to_dict()))
    assert body["metadata"]["ownerReferences"]
    assert crd_problems(body, crd_schema) == []
    # the check sees a misplaced field, a misspelt one in metadata and a wrong type
    body["spec"]["trainer"]["ownerReferences"] = body["metadata"]["ownerReferences"]
    body["metadata"]["ownerReference"] = body["metadata"].pop("ownerReferences")
    body["spec"]["trainer"]["numNodes"] = "4"
    assert crd_problems(body, crd_schema) == [
        "spec.trainer.numNodes: '4' is not of type 'integer'",
        "metadata: Additional properties are not allowed ('ownerReference' was unexpected)",
        "pruned: .spec.trainer.ownerReferences",
    ]


def test_owner_from_the_environment_and_what_check_spec_refuses(tmp_path):
    namespace = tmp_path / "namespace"
    namespace.write_text(NS + "\n")
    owner = trainjob.owner_from_env(POD, namespace)
    assert owner == trainjob.OwnerPod(name=POD[trainjob.POD_NAME_ENV], uid=POD[trainjob.POD_UID_ENV], namespace=NS)
    assert trainjob.owner_from_env({}, namespace) is None  # not started by the pipeline: no owner
    assert trainjob.owner_from_env(POD, tmp_path / "absent").namespace is None  # not in a pod
    with pytest.raises(TrainJobSpecError, match="HOMEGROWN_POD_UID is not set but HOMEGROWN_POD_NAME is"):
        trainjob.owner_from_env({trainjob.POD_NAME_ENV: "p"}, namespace)
    bad = trainjob.OwnerPod(name="Launcher_Pod", uid="$(HOMEGROWN_POD_UID)", namespace=NS)
    with pytest.raises(TrainJobSpecError) as caught:
        build_trainjob(full_spec(owner=bad))
    assert "owner.name: 'Launcher_Pod' is not a pod name: set HOMEGROWN_POD_NAME" in str(caught.value)
    assert "owner.uid: '$(HOMEGROWN_POD_UID)' is not a pod uid (a UUID)" in str(caught.value)


# ---- the wire: a fake API server behind the client's urllib3 pool manager -------------------


def status(phase: str | None, reason: str = "", message: str = "", ready: int = 0) -> dict:
    jobs = [{"name": "node", "ready": ready, "active": ready, "succeeded": 0, "failed": 0, "suspended": 0}]
    if phase is None:
        return {"jobsStatus": jobs} if ready else {}
    condition = {"type": phase, "status": "True", "reason": reason, "message": message,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
    return {"conditions": [condition], "jobsStatus": jobs}


class FakeApiServer(kube_api.FakeApiServer):
    """Answers the requests the kubernetes client makes, from a script of TrainJob statuses."""

    def __init__(self, statuses: list[dict], pod_error: int | None = None, log_lines: list[str] | None = None):
        super().__init__()
        self.statuses = statuses
        self.pod_error = pod_error
        self.log_lines = log_lines if log_lines is not None else []
        self.job: dict | None = None
        self.gets = 0
        self.on_get = None
        self.others: dict[str, dict] = {}  # more TrainJobs in the namespace, with their status
        self.list_error: int | None = None

    def route(self, method, path, query, body):
        if path == TRAINJOBS and method == "POST":
            if self.job is not None:
                return reply(409, error(409, "AlreadyExists", f'trainjobs "{body["metadata"]["name"]}" already exists'))
            created = {"uid": "u-1", "creationTimestamp": "2026-01-01T00:00:00Z"}
            self.job = body | {"metadata": body["metadata"] | created}
            return reply(201, self.job)
        if path == TRAINJOBS and method == "GET":
            if self.list_error:
                return reply(self.list_error, error(self.list_error, "Forbidden", "trainjobs is forbidden"))
            items = ([self.job | {"status": self.statuses[-1]}] if self.job else []) + list(self.others.values())
            selector = query.get("labelSelector")
            wanted = dict(term.split("=", 1) for term in selector.split(",")) if selector else {}
            items = [i for i in items if wanted.items() <= (i["metadata"].get("labels") or {}).items()]
            return reply(200, {"apiVersion": "trainer.kubeflow.org/v1alpha1", "kind": "TrainJobList", "items": items})
        if path.startswith(TRAINJOBS + "/") and method == "GET":
            self.gets += 1
            if self.on_get:
                self.on_get(self.gets)
            if self.job is None:
                return reply(404, error(404, "NotFound", "not found"))
            current = self.statuses[min(self.gets, len(self.statuses)) - 1]
            self.log_lines.append(f"2026-01-01T00:00:{self.gets:02d}.5Z [train] poll {self.gets}")
            return reply(200, self.job | {"status": current})
        if path.startswith(TRAINJOBS + "/") and method == "DELETE":
            if self.others.pop(path.rsplit("/", 1)[1], None):
                return reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
            if self.job is None:
                return reply(404, error(404, "NotFound", "not found"))
            self.job = None
            return reply(200, {"kind": "Status", "apiVersion": "v1", "status": "Success"})
        if path == f"/api/v1/namespaces/{NS}/pods" and method == "GET":
            if self.pod_error:
                return reply(self.pod_error, error(self.pod_error, "Forbidden", "pods is forbidden"))
            pod = {"metadata": {"name": "job-node-0-0-xk2p9", "creationTimestamp": "2026-01-01T00:00:00Z"},
                   "status": {"phase": "Running"}}  # fmt: skip
            return reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]})
        if path == f"/api/v1/namespaces/{NS}/pods/job-node-0-0-xk2p9/log" and method == "GET":
            return reply(200, "\n".join(self.log_lines) + "\n", "text/plain")
        return reply(404, error(404, "NotFound", f"no route for {method} {path}"))


@pytest.fixture
def server() -> FakeApiServer:
    done = status("Complete", "JobSetCompleted", "jobset completed")
    return FakeApiServer([status(None), status(None, ready=1), done])


def run(server: FakeApiServer, spec: TrainJobSpec | None = None, lines: list[str] | None = None, **kwargs):
    lines = [] if lines is None else lines
    return launch(spec or full_spec(), api_for(server), **({"poll_s": 0.01, "log": lines.append} | kwargs)), lines


def test_launch_creates_polls_streams_and_cleans_up(server):
    outcome, lines = run(server)

    [(_, path, _, body)] = server.calls("POST")
    assert path == TRAINJOBS and body == build_trainjob(full_spec()).to_dict()
    gets = server.calls("GET", TRAINJOBS + "/homegrown-run-7-abcde")
    assert len(gets) == 3
    [(_, path, query, _)] = server.calls("DELETE")
    assert path == TRAINJOBS + "/homegrown-run-7-abcde" and query == {"propagationPolicy": "Background"}
    assert outcome.deleted and outcome.reason == "JobSetCompleted" and outcome.name == "homegrown-run-7-abcde"

    [pods, *_] = server.calls("GET", f"/api/v1/namespaces/{NS}/pods")
    assert pods[2]["labelSelector"] == (
        "jobset.sigs.k8s.io/jobset-name=homegrown-run-7-abcde,jobset.sigs.k8s.io/replicatedjob-name=node,"
        "batch.kubernetes.io/job-completion-index=0"
    )
    logs = server.calls("GET", f"/api/v1/namespaces/{NS}/pods/job-node-0-0-xk2p9/log")
    assert logs[0][2] == {"container": "node", "timestamps": "True"}
    assert "sinceSeconds" in logs[1][2]  # later reads ask only for the recent part
    # each log line once, without its timestamp, in order, interleaved with status changes
    assert [x for x in lines if x.startswith("[train]")] == ["[train] poll 1", "[train] poll 2", "[train] poll 3"]
    assert "[trainjob] ml/homegrown-run-7-abcde: Pending" in lines
    assert "[trainjob] ml/homegrown-run-7-abcde: Running; node jobs: 1 ready, 1 active, 0 succeeded, 0 failed" in lines
    assert lines[-3].startswith("[trainjob] ml/homegrown-run-7-abcde: Complete (JobSetCompleted: jobset completed)")
    assert lines[-2] == "[train] poll 3"  # the final read, after the job finished
    assert lines[-1] == "[trainjob] deleted ml/homegrown-run-7-abcde"


def test_keep_finished_leaves_a_completed_job(server):
    outcome, _ = run(server, keep_finished=True)
    assert not outcome.deleted and server.calls("DELETE") == []


def test_failed_job_raises_with_its_reason_and_is_deleted():
    server = FakeApiServer([status(None, ready=1), status("Failed", "FailedJobs", "node-0: BackoffLimitExceeded")])
    with pytest.raises(TrainJobFailed) as caught:
        run(server)
    failed = caught.value
    assert failed.reason == "FailedJobs" and failed.message == "node-0: BackoffLimitExceeded"
    assert "TrainJob ml/homegrown-run-7-abcde failed: FailedJobs: node-0: BackoffLimitExceeded" in str(failed)
    assert failed.tail[-1] == "[train] poll 2" and "[train] poll 2" in str(failed)  # rank 0's last words
    assert len(server.calls("DELETE")) == 1


def test_timeout_deletes_the_running_job():
    server = FakeApiServer([status(None, ready=1)])
    with pytest.raises(TrainJobTimeout, match="did not finish within 0.05 s"):
        run(server, timeout_s=0.05)
    assert len(server.calls("DELETE")) == 1 and server.job is None


def test_cancel_deletes_the_job_and_exits_143():
    server = FakeApiServer([status(None, ready=1)])
    server.on_get = lambda n: n == 3 and os.kill(os.getpid(), signal.SIGTERM)  # KFP cancels the run
    before = signal.getsignal(signal.SIGTERM)
    lines: list[str] = []
    with pytest.raises(TrainJobCancelled) as caught:
        run(server, lines=lines)
    assert caught.value.code == 143 and isinstance(caught.value, SystemExit)
    assert len(server.calls("DELETE")) == 1 and server.gets == 3
    assert signal.getsignal(signal.SIGTERM) is before
    assert lines[-1] == "[trainjob] deleted ml/homegrown-run-7-abcde"


def test_log_streaming_is_best_effort(server):
    server.pod_error = 403  # no RBAC for pods: the job still runs to the end
    outcome, lines = run(server)
    assert outcome.deleted
    assert [x for x in lines if "rank 0 log unavailable" in x] == [
        "[trainjob] rank 0 log unavailable (403 x); still waiting for the job"
    ]  # once, not every poll
    server = FakeApiServer(server.statuses, pod_error=404)
    outcome, lines = run(server)
    assert outcome.reason == "JobSetCompleted" and not any("unavailable" in x for x in lines)


def test_a_name_in_use_is_reported_and_not_deleted(server):
    server.job = {"metadata": {"name": "homegrown-run-7-abcde"}}
    with pytest.raises(TrainJobError, match="409.*already exists.*use job_name"):
        run(server)
    assert server.calls("DELETE") == [] and server.job is not None  # someone else's job stays


def test_a_job_deleted_by_someone_else_fails_the_step(server):
    server.on_get = lambda n: n == 2 and setattr(server, "job", None)  # `kubectl delete trainjob ...`
    with pytest.raises(TrainJobError, match="homegrown-run-7-abcde was deleted while it ran"):
        run(server)
    assert len(server.calls("DELETE")) == 1  # tried, got 404, no harm


def test_the_created_trainjob_is_owned_by_the_launchers_pod(server, tmp_path):
    (tmp_path / "namespace").write_text(NS)
    _, lines = run(server, full_spec(owner=trainjob.owner_from_env(POD, tmp_path / "namespace")))
    [(_, _, _, body)] = server.calls("POST")
    assert body["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": "homegrown-pipeline-x7k2p-system-container-impl-2214580871",
        "uid": "1b4e28ba-2fa1-11d2-883f-0016e3f5a1b2", "controller": False, "blockOwnerDeletion": False,
    }]  # fmt: skip
    assert lines[0].endswith(", owned by pod homegrown-pipeline-x7k2p-system-container-impl-2214580871")


@pytest.mark.parametrize("pod_namespace", [None, "kubeflow-user-example-com", "no pod"])
def test_no_owner_without_the_pod_or_across_namespaces(pod_namespace, server, tmp_path):
    environ = {} if pod_namespace is None else POD
    if pod_namespace and pod_namespace != "no pod":
        (tmp_path / "namespace").write_text(pod_namespace)
    _, lines = run(server, full_spec(owner=trainjob.owner_from_env(environ, tmp_path / "namespace")))
    [(_, _, _, body)] = server.calls("POST")
    assert "ownerReferences" not in body["metadata"]
    notes = [x for x in lines if "note: no ownerReference" in x]
    where = {None: None, "no pod": "in an unknown namespace", "kubeflow-user-example-com":
             "in namespace kubeflow-user-example-com"}[pod_namespace]  # fmt: skip
    assert notes == ([] if where is None else [
        f"[trainjob] note: no ownerReference to pod {POD[trainjob.POD_NAME_ENV]}: it is {where}, the TrainJob in ml; "
        "if this launcher is killed, only the exit handler's delete_unfinished removes the TrainJob"
    ])  # fmt: skip


@pytest.mark.parametrize("finished", [False, True])
def test_an_exit_handler_deletes_what_a_killed_launcher_left_running(finished):
    server = FakeApiServer([status("Complete" if finished else None, ready=1)])
    run_7, run_8 = {trainjob.RUN_LABEL: "homegrown-run-7"}, {trainjob.RUN_LABEL: "homegrown-run-8"}
    server.job = build_trainjob(full_spec(labels=run_7 | {"app.kubernetes.io/part-of": "homegrown"})).to_dict()
    # the run's earlier job that failed, and another run's job still running
    earlier = build_trainjob(full_spec(name="homegrown-run-7-first", labels=run_7)).to_dict()
    other = build_trainjob(full_spec(name="homegrown-run-8-abcde", labels=run_8)).to_dict()
    server.others = {"homegrown-run-7-first": earlier | {"status": status("Failed", "FailedJobs", "node-0 failed")},
                     "homegrown-run-8-abcde": other | {"status": status(None, ready=1)}}  # fmt: skip
    deleted = trainjob_launch.delete_unfinished(NS, run_7, api_for(server), log=lambda _: None)
    [(_, _, query, _)] = server.calls("GET", TRAINJOBS)
    assert query == {"labelSelector": "homegrown/pipeline-run=homegrown-run-7"}
    assert deleted == ([] if finished else ["homegrown-run-7-abcde"])
    deletes = [path for _, path, _, _ in server.calls("DELETE")]
    assert deletes == ([] if finished else [TRAINJOBS + "/homegrown-run-7-abcde"])
    assert set(server.others) == {"homegrown-run-7-first", "homegrown-run-8-abcde"}


def test_an_exit_handler_never_deletes_by_an_empty_or_broken_selector(server):
    with pytest.raises(TrainJobSpecError, match="labels: empty, which would select every TrainJob in ml"):
        trainjob_launch.delete_unfinished(NS, {}, api_for(server))
    with pytest.raises(TrainJobSpecError, match="labels.homegrown/pipeline-run: 'run 7' is not a label value"):
        trainjob_launch.delete_unfinished(NS, {trainjob.RUN_LABEL: "run 7"}, api_for(server))
    assert server.requests == []
    server.list_error = 403
    with pytest.raises(TrainJobError, match=r"cannot list TrainJobs in ml \(homegrown/pipeline-run=r7\): 403 .*"
                       r"`kubectl delete trainjob -n ml -l homegrown/pipeline-run=r7`"):  # fmt: skip
        trainjob_launch.delete_unfinished(NS, {trainjob.RUN_LABEL: "r7"}, api_for(server))


# ---- credentials ---------------------------------------------------------------------------


def test_client_from_kubeconfig_and_a_clear_error_without_one(tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(TrainJobError, match="no Kubernetes credentials.*KUBECONFIG"):
        trainjob_launch.load_client()

    kubeconfig = tmp_path / "config"
    kubeconfig.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "c",
        "clusters": [{"name": "k", "cluster": {"server": "https://k8s.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
    }))  # fmt: skip
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    api = trainjob_launch.load_client()
    assert api.configuration.host == "https://k8s.example:6443"
    assert api.configuration.api_key["authorization"] == "Bearer t0ken"


def test_client_in_a_pod_uses_its_service_account(tmp_path, monkeypatch):
    token, ca = tmp_path / "token", tmp_path / "ca.crt"
    token.write_text("sa-token")
    ca.write_text("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    monkeypatch.setattr(config.incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(config.incluster_config, "SERVICE_CERT_FILENAME", str(ca))
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    api = trainjob_launch.load_client()
    assert api.configuration.host == "https://10.96.0.1:443"
    assert api.configuration.api_key["authorization"].lower() == "bearer sa-token"
