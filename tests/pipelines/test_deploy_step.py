"""The deploy step: in the DAG only with `serve:`, after promote inside the gate-passed branch; run
against a real (SQLite) MLflow registry, a real S3 server and the fake KServe API, it records the
endpoint in its MLflow run and on the model version."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import yaml

from components import mlflow_runs
from components.register import history
from pipelines.config import parse_config
from pipelines.dag import STEPS, compile_pipeline
from pipelines.steps import common, deploy, promote
from tests.components.test_serve_deploy import ADDRESS, LATEST_LOCAL, URL, Endpoint, KServeApi
from tests.components.test_serve_history import register_versions
from tests.kube_api import api_for

BASE = {"name": "t", "corpus": "s3://b/corpus/", "data_root": "s3://b/runs", "registry": {"model_name": "lm"},
        "cluster": {"namespace": "ml", "image": "registry.example.com/ml/homegrown-steps:0.1.0",
                    "tolerations": [{"key": "nvidia.com/gpu", "effect": "NoSchedule"}]}}  # fmt: skip


def compiled(config: dict) -> tuple[dict, dict]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "pipeline.yaml"
        compile_pipeline(parse_config(config, "<test>"), str(out))
        spec, platform = yaml.safe_load_all(out.read_text())
    return spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


def test_the_deploy_task_runs_after_promote_inside_the_gate_and_only_with_serve():
    spec, k8s = compiled(BASE | {"serve": {"canary_traffic_percent": 20}})
    gate = spec["components"]["comp-champion-gate"]["dag"]["tasks"]
    [(branch, task)] = gate.items()
    assert task["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--decision'] == 'passed'"
    tasks = spec["components"][task["componentRef"]["name"]]["dag"]["tasks"]
    assert set(tasks) == {"promote-op", "deploy-op"}
    assert tasks["deploy-op"]["dependentTasks"] == ["promote-op"]
    assert tasks["deploy-op"]["taskInfo"]["name"] == "deploy (KServe)"
    assert set(tasks["deploy-op"]["inputs"]["parameters"]) == {"config_json", "tracking_uri", "parent_run_id",
                                                                "version", "data_root"}  # fmt: skip
    # on the cluster: the steps' image and env, no GPU and no GPU-node placement
    container = spec["deploymentSpec"]["executors"]["exec-deploy-op"]["container"]
    assert container["image"] == "registry.example.com/ml/homegrown-steps:0.1.0" and "resources" not in container
    assert k8s["exec-deploy-op"]["configMapAsEnv"][0]["configMapName"] == "homegrown-steps"
    assert "tolerations" not in k8s["exec-deploy-op"] and "nodeSelector" not in k8s["exec-deploy-op"]

    spec, k8s = compiled(BASE)
    branch_tasks = [set(c["dag"]["tasks"]) for n, c in spec["components"].items() if n.startswith("comp-condition")]
    assert branch_tasks == [{"promote-op"}]
    assert "exec-deploy-op" not in spec["deploymentSpec"]["executors"] and "exec-deploy-op" not in k8s
    assert STEPS.index(deploy) == STEPS.index(promote) + 1


@pytest.mark.parametrize("canary", [10])
def test_the_step_deploys_each_champion_and_records_it(canary, sqlite_uri, tmp_path, bucket, monkeypatch):
    from mlflow.tracking import MlflowClient

    register_versions(sqlite_uri, tmp_path, "lm", 2)
    config = parse_config(BASE | {"data_root": f"s3://{bucket}/runs", "serve": {"canary_traffic_percent": canary,
                                                                          "name": "homegrown"}},
                          "<test>")  # fmt: skip
    parent = mlflow_runs.start_pipeline_run(sqlite_uri, "homegrown", "t-run", {}, {})
    target = common.MlflowTarget(sqlite_uri, parent, "homegrown")
    server, endpoint = KServeApi(["ready"]), Endpoint()
    client = MlflowClient(sqlite_uri)

    results = []
    for version in ("1", "2"):  # two pipeline runs whose gate passed
        promote.run(config, version, target)
        results.append(deploy.run(config, version, target, api=api_for(server), http=endpoint.client(), poll_s=0,
                                  log=lambda _: None))  # fmt: skip
    first, second = (r.value for r in results)
    assert (first.action, first.traffic_percent, first.revision) == ("created", 100, "homegrown-predictor-00001")
    assert (second.action, second.traffic_percent, second.previous_revision) == ("updated", canary,
                                                                                 "homegrown-predictor-00001")  # fmt: skip
    assert [str(r.url) for r in endpoint.requests] == [ADDRESS + "/openai/v1/completions",
                                                       LATEST_LOCAL + "/openai/v1/completions"]  # fmt: skip
    serving = f"s3://{bucket}/runs/serving/lm/v2"
    assert server.isvc["spec"]["predictor"]["model"]["storageUri"] == serving
    assert server.isvc["spec"]["predictor"]["canaryTrafficPercent"] == canary
    assert server.isvc["spec"]["predictor"]["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists",
                                                                "effect": "NoSchedule"}]  # fmt: skip

    v2 = client.get_model_version("lm", "2")
    assert v2.tags[history.PREVIOUS_TAG] == "1" and v2.tags[history.SERVING_TAG] == serving
    assert v2.tags[history.DEPLOYED_TAG].endswith(f" ml/homegrown {URL}")
    assert history.PREVIOUS_TAG not in client.get_model_version("lm", "1").tags  # the first champion

    runs = client.search_runs([client.get_run(parent).info.experiment_id],
                              f"tags.mlflow.parentRunId = '{parent}' and tags.`homegrown.step` = 'deploy'",
                              order_by=["attributes.start_time ASC"])  # fmt: skip
    assert len(runs) == 2
    data = runs[1].data
    params = data.params
    assert {k: v for k, v in params.items() if k.startswith("deployed.")} == {
        "deployed.inference_service": "homegrown", "deployed.namespace": "ml", "deployed.url": URL,
        "deployed.revision": "homegrown-predictor-00002", "deployed.previous_revision": "homegrown-predictor-00001",
        "deployed.storage_uri": serving, "deployed.action": "updated"}  # fmt: skip
    assert (params["deploy.model_version"], params["deploy.canary_traffic_percent"], params["deploy.runtime"]) == (
        "2", str(canary), "kserve-huggingfaceserver")  # the serve section it ran with
    assert data.metrics == {"traffic_percent": float(canary), "canary": 1.0, "model_version": 2.0}
    assert client.get_run(runs[1].info.run_id).data.tags["homegrown.step"] == "deploy"
    # the InferenceService names the run that deployed it
    assert server.isvc["metadata"]["annotations"]["homegrown/mlflow-run-id"] == runs[1].info.run_id
    tags = client.get_run(parent).data.tags
    assert (tags["homegrown.inference_service"], tags["homegrown.endpoint"], tags["homegrown.deployed_version"]) \
        == ("ml/homegrown", URL, "2")  # fmt: skip
    assert results[1].summary == (f"deploy: lm v2 served by InferenceService ml/homegrown at {URL} (revision "
                                  "homegrown-predictor-00002, canary at 10 % (rest on homegrown-predictor-00001))")  # fmt: skip


def test_the_step_refuses_a_config_without_serve(sqlite_uri):
    config = parse_config(BASE, "<test>")
    with pytest.raises(ValueError, match="serve: not set in the run config"):
        deploy.run(config, "1", common.MlflowTarget(sqlite_uri))
