"""The deploy step's rollout against the real kubernetes client, its HTTP layer replaced by a fake
KServe API server (tests/kube_api.py), and the smoke request against an httpx mock transport:
create, canary on update, wait for Ready, answer, fail with the reason, time out, roll back."""

from __future__ import annotations

import copy
import json

import httpx
import pytest

from components.k8s import Toleration
from components.serve import deploy
from components.serve.deploy import DeployError, DeployTimeout, Smoke
from components.serve.inference_service import InferenceServiceSpec, build_inference_service, to_body
from tests.kube_api import FakeApiServer, api_for, error, reply

NS, NAME = "ml", "homegrown"
ISVCS = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
ISVC = f"{ISVCS}/{NAME}"
PODS = f"/api/v1/namespaces/{NS}/pods"
URL = f"http://{NAME}.{NS}.example.com"
ADDRESS = f"http://{NAME}.{NS}.svc.cluster.local"
LATEST_URL = f"http://latest-{NAME}-predictor.{NS}.example.com"
LATEST_LOCAL = f"http://latest-{NAME}-predictor.{NS}.svc.cluster.local"  # the tag's name on the cluster's domain


def merge_patch(target: object, patch: object) -> object:
    """RFC 7386, what the API server does with application/merge-patch+json."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = copy.deepcopy(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


class KServeApi(FakeApiServer):
    """An InferenceService and its predictor pods. Each write with a new storageUri makes a revision;
    each GET after a write advances `script` one step: "pending" (status of the last generation),
    "creating" (this generation seen, not Ready), "ready", "failed" (FailedToLoad)."""

    def __init__(self, script: list[str], logs: dict[str, list[str]] | None = None):
        super().__init__()
        self.script = script
        self.isvc: dict | None = None
        self.revisions: list[str] = []
        self.rolled_out: str | None = None  # the last revision that had all traffic
        self.step = 0
        self.logs = logs if logs is not None else {"kserve-container": ["INFO loading model", "INFO ready"]}
        self.create_error: int | None = None

    def _revision(self, spec: dict) -> None:
        uri = spec["predictor"]["model"]["storageUri"]
        if not self.revisions or self.uris[-1] != uri:
            self.revisions.append(f"{NAME}-predictor-{len(self.revisions) + 1:05d}")
            self.uris.append(uri)

    def route(self, method, path, query, body):
        if path == ISVCS and method == "POST":
            if self.create_error:
                return reply(self.create_error, error(self.create_error, "Forbidden", "inferenceservices is forbidden"))
            self.isvc = body | {"metadata": body["metadata"] | {"generation": 1, "uid": "u-1"}}
            self.uris: list[str] = []
            self._revision(body["spec"])
            self.step, self.status = 0, {}
            return reply(201, self.isvc)
        if path == ISVC and method == "PATCH":
            if self.isvc is None:
                return reply(404, error(404, "NotFound", "not found"))
            before = self.isvc["spec"]
            self.isvc = merge_patch(self.isvc, body)
            if self.isvc["spec"] != before:
                self.isvc["metadata"]["generation"] += 1
                self._revision(self.isvc["spec"])
            self.step = 0
            return reply(200, self.isvc)
        if path == ISVC and method == "GET":
            if self.isvc is None:
                return reply(404, error(404, "NotFound", 'inferenceservices.serving.kserve.io "homegrown" not found'))
            if not self.revisions:  # not ours: no status to script
                return reply(200, self.isvc)
            phase = self.script[min(self.step, len(self.script) - 1)]
            self.step += 1
            return reply(200, self.isvc | {"status": self.make_status(phase)})
        if path == PODS and method == "GET":
            pod = {"metadata": {"name": f"{self.revisions[-1]}-deployment-7d9f-x2k4p",
                                "creationTimestamp": "2026-01-01T00:00:00Z"}, "status": {"phase": "Running"}}  # fmt: skip
            return reply(200, {"kind": "PodList", "apiVersion": "v1", "metadata": {}, "items": [pod]})
        if path.startswith(PODS + "/") and path.endswith("/log") and method == "GET":
            lines = self.logs.get(query.get("container"))
            if lines is None:
                return reply(400, error(400, "BadRequest", "container is waiting to start: PodInitializing"))
            return reply(200, "\n".join(lines) + "\n", "text/plain")
        return super().route(method, path, query, body)

    def make_status(self, phase: str) -> dict:
        generation = self.isvc["metadata"]["generation"]
        latest = self.revisions[-1]
        if phase == "pending":  # the status still describes the last generation: Ready, the old revision
            if generation == 1:
                return {}
            stale = self.make_status("ready") if len(self.revisions) > 1 else {}
            if stale:
                predictor = stale["components"]["predictor"]
                predictor["latestCreatedRevision"] = predictor["latestReadyRevision"] = self.revisions[-2]
            return stale | {"observedGeneration": generation - 1}
        ready = phase == "ready"
        reason = {"creating": ("RevisionMissing", "Configuration is waiting for a Revision to become ready."),
                  "failed": ("RevisionFailed", "Revision failed: container exited with code 1"),
                  "ready": (None, None)}[phase]  # fmt: skip
        condition = {"type": "Ready", "status": "True" if ready else ("False" if phase == "failed" else "Unknown"),
                     "lastTransitionTime": "2026-01-01T00:00:00Z"}  # fmt: skip
        if reason[0]:
            condition |= {"reason": reason[0], "message": reason[1]}
        predictor = {"latestCreatedRevision": latest}
        status = {"observedGeneration": generation, "conditions": [
            {"type": "IngressReady", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            condition | {"type": "PredictorReady"}, condition,
        ]}  # fmt: skip
        if phase == "failed":
            status["modelStatus"] = {"states": {"activeModelState": "", "targetModelState": "FailedToLoad"},
                                     "lastFailureInfo": {"reason": "ModelLoadFailed",
                                                         "message": "config.json: no such file"}}  # fmt: skip
        if ready:
            canary = self.isvc["spec"]["predictor"].get("canaryTrafficPercent")
            previous = self.rolled_out
            predictor["latestReadyRevision"] = latest
            if canary is not None and canary < 100 and previous and previous != latest:
                predictor["previousRolledoutRevision"] = previous
                predictor["traffic"] = [
                    {"revisionName": latest, "percent": canary, "latestRevision": True, "tag": "latest",
                     "url": LATEST_URL},
                    {"revisionName": previous, "percent": 100 - canary, "latestRevision": False, "tag": "prev",
                     "url": f"http://prev-{NAME}-predictor.{NS}.example.com"},
                ]  # fmt: skip
            else:
                self.rolled_out = latest
                predictor["traffic"] = [{"revisionName": latest, "percent": 100, "latestRevision": True}]
            status |= {"url": URL, "address": {"url": ADDRESS}}
        status["components"] = {"predictor": predictor}
        return status


def spec(version: str = "7", **overrides) -> InferenceServiceSpec:
    values = {"name": NAME, "namespace": NS, "storage_uri": f"s3://b/runs/serving/homegrown/v{version}",
              "model_name": "homegrown", "model_version": version, "canary_traffic_percent": 10}  # fmt: skip
    return InferenceServiceSpec(**(values | overrides))


class Endpoint:
    """The model server behind the URLs: answers from a script of status codes, records requests."""

    def __init__(self, codes: list[int] | None = None):
        self.codes = codes or [200]
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        code = self.codes[min(len(self.requests), len(self.codes)) - 1]
        if code == 200:
            return httpx.Response(200, json={"id": "cmpl-1", "object": "text_completion", "model": NAME,
                                             "choices": [{"index": 0, "text": " world", "finish_reason": "length"}],
                                             "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}})  # fmt: skip
        return httpx.Response(code, text=f"upstream answered {code}")

    def client(self) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(self))


def run(server: KServeApi, endpoint: Endpoint, the_spec: InferenceServiceSpec | None = None,
        smoke: Smoke = Smoke("Hello", 4, 5.0), **kwargs):
    lines: list[str] = []
    outcome = deploy.deploy(the_spec or spec(), api_for(server), endpoint.client(), smoke,
                            **({"poll_s": 0.0, "timeout_s": 5.0, "log": lines.append} | kwargs))  # fmt: skip
    return outcome, lines


def test_first_deploy_creates_it_with_all_traffic_waits_and_answers():
    server, endpoint = KServeApi(["pending", "creating", "ready"]), Endpoint()
    outcome, lines = run(server, endpoint)

    [(_, path, _, body)] = server.calls("POST")
    expected = to_body(build_inference_service(spec()))
    del expected["spec"]["predictor"]["canaryTrafficPercent"]  # the first revision takes all traffic
    assert path == ISVCS and body == expected
    assert server.calls("PATCH") == []
    assert len(server.calls("GET", ISVC)) == 1 + 3  # the existence check, then until Ready
    [request] = endpoint.requests
    assert str(request.url) == ADDRESS + "/openai/v1/completions"  # in-cluster, all traffic: the service
    assert json.loads(request.content) == {"model": NAME, "prompt": "Hello", "max_tokens": 4, "temperature": 0}
    assert outcome == deploy.DeployOutcome(
        name=NAME, namespace=NS, url=URL, revision="homegrown-predictor-00001", previous_revision="",
        traffic_percent=100, model_version="7", storage_uri="s3://b/runs/serving/homegrown/v7", action="created",
        answer=" world",
    )  # fmt: skip
    assert lines[0] == "[deploy] created InferenceService ml/homegrown: model version 7, s3://b/runs/serving/homegrown/v7"
    assert "[deploy] ml/homegrown: IngressReady=True; PredictorReady=Unknown (RevisionMissing: Configuration is " \
           "waiting for a Revision to become ready.); Ready=Unknown (RevisionMissing: Configuration is waiting for " \
           "a Revision to become ready.)" in lines  # fmt: skip
    assert lines[-1] == (f"[deploy] ml/homegrown answers at {URL}: revision homegrown-predictor-00001 has 100 % of "
                         "traffic")  # fmt: skip


def test_a_new_champion_is_a_canary_beside_the_previous_revision():
    server, endpoint = KServeApi(["ready"]), Endpoint()
    run(server, endpoint)
    server.script = ["pending", "creating", "ready"]
    outcome, lines = run(server, endpoint, spec("8"))

    [(_, path, _, body)] = server.calls("PATCH")
    assert path == ISVC
    assert server.headers[server.requests.index(server.calls("PATCH")[0])]["Content-Type"] == "application/merge-patch+json"
    full = to_body(build_inference_service(spec("8")))
    assert body == {"metadata": {"labels": full["metadata"]["labels"], "annotations": full["metadata"]["annotations"]},
                    "spec": full["spec"]}  # fmt: skip
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 10
    assert body["metadata"]["labels"]["homegrown/model-version"] == "8"
    assert server.isvc["metadata"]["generation"] == 2
    # the smoke request reaches the new revision itself, not the 90 % of the old one, by its
    # cluster-local name (the tag's URL names Knative's external domain)
    assert str(endpoint.requests[-1].url) == LATEST_LOCAL + "/openai/v1/completions"
    assert (outcome.revision, outcome.previous_revision, outcome.traffic_percent, outcome.action) == (
        "homegrown-predictor-00002", "homegrown-predictor-00001", 10, "updated")
    assert lines[0] == ("[deploy] updated InferenceService ml/homegrown: model version 8 "
                        "(s3://b/runs/serving/homegrown/v8), canary at 10 %")  # fmt: skip
    assert lines[-1].endswith("revision homegrown-predictor-00002 has 10 % of traffic, homegrown-predictor-00001 the rest")


def test_an_update_removes_what_the_config_no_longer_sets():
    """A merge patch keeps keys it does not name: GPUs, tolerations, a node selector and a service
    account dropped from the config are sent as null, so the endpoint stops asking for them."""
    server, endpoint = KServeApi(["ready"]), Endpoint()
    placed = {"tolerations": [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule")],
              "node_selector": {"pool": "gpu"}, "service_account": "s3-reader"}  # fmt: skip
    run(server, endpoint, spec("7", **placed))
    assert server.isvc["spec"]["predictor"]["model"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    server.script = ["ready"]
    run(server, endpoint, spec("8", gpus=0))
    predictor = server.isvc["spec"]["predictor"]
    assert "nvidia.com/gpu" not in predictor["model"]["resources"].get("limits", {})
    assert "nvidia.com/gpu" not in predictor["model"]["resources"].get("requests", {})
    assert {"tolerations", "nodeSelector", "serviceAccountName"}.isdisjoint(predictor)
    assert predictor["model"]["storageUri"] == "s3://b/runs/serving/homegrown/v8"


def test_without_a_canary_the_new_champion_takes_all_traffic_and_a_rerun_changes_nothing():
    server, endpoint = KServeApi(["ready"]), Endpoint()
    run(server, endpoint)
    outcome, lines = run(server, endpoint, spec("8", canary_traffic_percent=None))
    [(_, _, _, body)] = server.calls("PATCH")
    assert body["spec"]["predictor"]["canaryTrafficPercent"] == 100  # overrides a canary left from before
    assert (outcome.traffic_percent, outcome.previous_revision) == (100, "")
    assert lines[0].endswith(", all traffic")

    outcome, lines = run(server, endpoint, spec("8"))  # the step retried: same files
    second = server.calls("PATCH")[-1][3]
    assert "canaryTrafficPercent" not in second["spec"]["predictor"]
    assert server.isvc["metadata"]["generation"] == 2 and len(server.revisions) == 2  # no new revision
    assert outcome.action == "unchanged" and outcome.revision == "homegrown-predictor-00002"
    assert lines[0].endswith(", traffic unchanged")


def test_a_failed_rollout_raises_with_the_conditions_and_the_model_servers_last_lines():
    logs = {"kserve-container": [f"line {i}" for i in range(50)] + ["OSError: config.json: no such file"]}
    server, endpoint = KServeApi(["creating", "failed"], logs), Endpoint()
    with pytest.raises(DeployError) as caught:
        run(server, endpoint)
    failed = caught.value
    assert not isinstance(failed, DeployTimeout)
    assert failed.conditions == [
        "IngressReady=True",
        "PredictorReady=False (RevisionFailed: Revision failed: container exited with code 1)",
        "Ready=False (RevisionFailed: Revision failed: container exited with code 1)",
        "model: ModelLoadFailed: config.json: no such file",
    ]
    pod = "homegrown-predictor-00001-deployment-7d9f-x2k4p"
    assert len(failed.tail) == 40 and failed.tail[-1] == f"[{pod}/kserve-container] OSError: config.json: no such file"
    [(_, _, query, _)] = [r for r in server.calls("GET", PODS) if r[1] == PODS]
    assert query["labelSelector"] == ("serving.kserve.io/inferenceservice=homegrown,"
                                      "serving.knative.dev/revision=homegrown-predictor-00001")  # fmt: skip
    text = str(failed)
    assert text.startswith("InferenceService ml/homegrown failed to roll out\nconditions:\n  IngressReady=True")
    assert "predictor's last log lines:\n" in text and endpoint.requests == []


def test_a_timeout_names_the_last_state_and_the_storage_initializers_log():
    # the model server never started: its log is refused, the download's says why
    logs = {"storage-initializer": ["botocore.exceptions.NoCredentialsError: Unable to locate credentials"]}
    server = KServeApi(["creating"], logs)
    with pytest.raises(DeployTimeout, match=r"ml/homegrown was not Ready within 0.05 s") as caught:
        run(server, Endpoint(), timeout_s=0.05, poll_s=0.01)
    assert caught.value.conditions[-1] == ("Ready=Unknown (RevisionMissing: Configuration is waiting for a Revision "
                                           "to become ready.)")  # fmt: skip
    pod = "homegrown-predictor-00001-deployment-7d9f-x2k4p"
    assert caught.value.tail == [f"[{pod}/storage-initializer] botocore.exceptions.NoCredentialsError: "
                                 "Unable to locate credentials"]  # fmt: skip
    logs_read = [q["container"] for _, p, q, _ in server.calls("GET", PODS) if p.endswith("/log")]
    assert logs_read == ["kserve-container", "storage-initializer"]


def test_the_smoke_request_waits_out_a_cold_start_and_fails_on_an_error():
    server, endpoint = KServeApi(["ready"]), Endpoint([503, 503, 200])
    outcome, _ = run(server, endpoint)
    assert outcome.answer == " world" and len(endpoint.requests) == 3

    server, endpoint = KServeApi(["ready"]), Endpoint([503, 500])
    with pytest.raises(DeployError) as caught:
        run(server, endpoint)
    text = str(caught.value)
    assert text.startswith(f"InferenceService ml/homegrown is Ready but did not answer a completion at {ADDRESS}"
                           "/openai/v1/completions (500: upstream answered 500)\nconditions:\n")  # fmt: skip
    assert caught.value.tail[-1].endswith("/kserve-container] INFO ready") and len(endpoint.requests) == 2

    server, endpoint = KServeApi(["ready"]), Endpoint([503])
    with pytest.raises(DeployError, match=r"did not answer .*\(503: upstream answered 503\)"):
        run(server, endpoint, smoke=Smoke("Hello", 4, 0.3), poll_s=0.01)  # retried for 0.3 s, then given up
    assert len(endpoint.requests) > 3


def test_refusals_are_reported_with_what_to_change():
    server = KServeApi(["ready"])
    server.create_error = 403
    with pytest.raises(DeployError, match=r"cannot create InferenceService ml/homegrown: 403 x: inferenceservices "
                       r"is forbidden \(the step's service account needs RBAC to get/create/patch "
                       r"inferenceservices.serving.kserve.io\)"):  # fmt: skip
        run(server, Endpoint())
    assert [m for m, *_ in server.requests] == ["GET", "POST"]

    server = KServeApi(["ready"])  # someone else's InferenceService of that name
    server.isvc = {"metadata": {"name": NAME, "namespace": NS, "generation": 1}, "spec": {"predictor": {}}}
    with pytest.raises(DeployError, match=r"InferenceService ml/homegrown exists but homegrown did not create it "
                       r"\(no label app.kubernetes.io/managed-by=homegrown\): set serve.name"):  # fmt: skip
        run(server, Endpoint())
    assert server.calls("PATCH") == []


def test_repoint_rolls_back_with_all_traffic_and_promote_canary_ends_a_canary():
    server, endpoint = KServeApi(["ready"]), Endpoint()
    run(server, endpoint)
    run(server, endpoint, spec("8"))  # canary at 10 %
    outcome = deploy.promote_canary(NAME, NS, api_for(server), endpoint.client(), Smoke(timeout_s=1), poll_s=0,
                                    log=lambda _: None)  # fmt: skip
    assert server.calls("PATCH")[-1][3] == {"spec": {"predictor": {"canaryTrafficPercent": 100}}}
    assert (outcome.traffic_percent, outcome.model_version, outcome.revision) == (100, "8", "homegrown-predictor-00002")

    outcome = deploy.repoint(NAME, NS, "s3://b/runs/serving/homegrown/v7", "7", api_for(server), endpoint.client(),
                             Smoke(timeout_s=1), poll_s=0, log=lambda _: None)  # fmt: skip
    assert server.calls("PATCH")[-1][3] == {
        "metadata": {"labels": {"homegrown/model-version": "7"},
                     "annotations": {"homegrown/serving-uri": "s3://b/runs/serving/homegrown/v7"}},
        "spec": {"predictor": {"canaryTrafficPercent": 100, "model": {"storageUri": "s3://b/runs/serving/homegrown/v7"}}},
    }  # fmt: skip
    assert server.isvc["spec"]["predictor"]["model"]["runtime"] == "kserve-huggingfaceserver"  # merged, not replaced
    assert (outcome.traffic_percent, outcome.model_version, outcome.revision) == (100, "7", "homegrown-predictor-00003")

    gone = KServeApi(["ready"])
    with pytest.raises(DeployError, match="no InferenceService ml/homegrown to point at version 7"):
        deploy.repoint(NAME, NS, "s3://x", "7", api_for(gone), endpoint.client())
    assert gone.calls("PATCH") == []
