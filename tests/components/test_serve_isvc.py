"""The KServe InferenceService the deploy step sends: every setting at its path, valid against the
released v0.20.0 CRD with nothing pruned, and the spec checks; the run config's `serve:` and
`cluster:` sections mapped onto it."""

from __future__ import annotations

import json

import pytest
from kserve import V1beta1InferenceService

from components.k8s import Toleration
from components.serve.config import ServeConfig
from components.serve.inference_service import (
    InferenceServiceSpec,
    InferenceServiceSpecError,
    build_inference_service,
    check_spec,
    isvc_name,
    to_body,
)
from pipelines import cluster
from pipelines.config import parse_config
from tests.kube_api import CRDS, crd_problems, crd_schema

CRD = CRDS / "kserve-v0.20.0-serving.kserve.io_inferenceservices.yaml"


def full_spec(**overrides) -> InferenceServiceSpec:
    values = {
        "name": "homegrown-chat", "namespace": "ml", "storage_uri": "s3://bucket/runs/serving/homegrown-chat/v7",
        "model_name": "homegrown-chat", "model_version": "7", "mlflow_run_id": "0123abcd",
        "backend": "vllm", "max_model_len": 2048, "args": ["--dtype=bfloat16"], "env": {"HF_HUB_OFFLINE": "1"},
        "gpus": 2, "accelerator_type": "nvidia.com/gpu", "cpu": "8", "memory": "32Gi",
        "min_replicas": 1, "max_replicas": 3, "canary_traffic_percent": 10,
        "tolerations": [Toleration(key="nvidia.com/gpu", operator="Exists", effect="NoSchedule"),
                        Toleration(key="pool", operator="Equal", value="serving", effect="NoExecute")],
        "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "service_account": "homegrown-serving",
        "labels": {"team": "lm"}, "annotations": {"owner": "ml-platform@example.com"},
    }  # fmt: skip
    return InferenceServiceSpec(**(values | overrides))


def test_every_setting_lands_at_its_inference_service_path():
    isvc = build_inference_service(full_spec())
    assert isinstance(isvc, V1beta1InferenceService)
    body = to_body(isvc)
    assert json.loads(json.dumps(body)) == body
    assert body["apiVersion"] == "serving.kserve.io/v1beta1" and body["kind"] == "InferenceService"
    assert body["metadata"] == {
        "name": "homegrown-chat", "namespace": "ml",
        "labels": {"app.kubernetes.io/part-of": "homegrown", "app.kubernetes.io/managed-by": "homegrown",
                   "homegrown/model-version": "7", "team": "lm"},
        "annotations": {"homegrown/registered-model": "homegrown-chat",
                        "homegrown/serving-uri": "s3://bucket/runs/serving/homegrown-chat/v7",
                        "homegrown/mlflow-run-id": "0123abcd", "serving.kserve.io/enable-tag-routing": "true",
                        "owner": "ml-platform@example.com"},
    }  # fmt: skip
    predictor = body["spec"]["predictor"]
    assert list(body["spec"]) == ["predictor"]
    resources = {"nvidia.com/gpu": "2", "cpu": "8", "memory": "32Gi"}
    assert predictor == {
        "canaryTrafficPercent": 10, "minReplicas": 1, "maxReplicas": 3,
        "serviceAccountName": "homegrown-serving",
        "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
                        {"key": "pool", "operator": "Equal", "value": "serving", "effect": "NoExecute"}],
        "model": {
            "modelFormat": {"name": "huggingface"}, "runtime": "kserve-huggingfaceserver",
            "storageUri": "s3://bucket/runs/serving/homegrown-chat/v7",
            "args": ["--backend=vllm", "--max_model_len=2048", "--dtype=bfloat16"],
            "env": [{"name": "HF_HUB_OFFLINE", "value": "1"}],
            "resources": {"requests": resources, "limits": resources},
        },
    }  # fmt: skip
    assert "name" not in predictor["model"]  # the SDK's default "" would name the container ""


def test_a_minimal_cpu_service_sets_only_what_it_needs():
    spec = full_spec(gpus=0, cpu=None, memory="4Gi", max_model_len=None, args=[], env={}, tolerations=[],
                     node_selector={}, service_account=None, canary_traffic_percent=None, mlflow_run_id=None,
                     labels={}, annotations={}, backend="huggingface")  # fmt: skip
    body = to_body(build_inference_service(spec))
    predictor = body["spec"]["predictor"]
    assert predictor == {
        "minReplicas": 1, "maxReplicas": 3,
        "model": {"modelFormat": {"name": "huggingface"}, "runtime": "kserve-huggingfaceserver",
                  "storageUri": "s3://bucket/runs/serving/homegrown-chat/v7", "args": ["--backend=huggingface"],
                  "resources": {"requests": {"memory": "4Gi"}, "limits": {"memory": "4Gi"}}},
    }  # fmt: skip
    assert "homegrown/mlflow-run-id" not in body["metadata"]["annotations"]


@pytest.fixture(scope="module")
def schema() -> dict:
    return crd_schema(CRD, "v1beta1")


def test_the_inference_service_matches_the_released_crd_and_nothing_is_pruned(schema):
    body = json.loads(json.dumps(to_body(build_inference_service(full_spec()))))
    assert crd_problems(body, schema) == []
    # the check sees a misspelt field, a misplaced one and a wrong type
    model = body["spec"]["predictor"]["model"]
    model["storageURI"] = model.pop("storageUri")
    body["spec"]["predictor"]["canaryTrafficPercent"] = "10"
    body["spec"]["canaryTrafficPercent"] = 10
    assert crd_problems(body, schema) == [
        "spec.predictor.canaryTrafficPercent: '10' is not of type 'integer'",
        "pruned: .spec.predictor.model.storageURI",
        "pruned: .spec.canaryTrafficPercent",
    ]


def test_check_spec_names_every_problem_and_the_fix():
    spec = full_spec(name="Homegrown_Chat", namespace="", storage_uri="runs/data/serving/x/v1", gpus=-1,
                     min_replicas=2, max_replicas=1, canary_traffic_percent=120, runtime=" ",
                     tolerations=[Toleration(key="k", operator="Exists", value="v")],
                     labels={"homegrown/model-version": "x" * 64})  # fmt: skip
    with pytest.raises(InferenceServiceSpecError) as caught:
        build_inference_service(spec)
    text = str(caught.value)
    for expected in (
        "name: 'Homegrown_Chat' is not a DNS-1035 label of at most 45 characters",
        "namespace: '' is not a namespace name: set serve.namespace",
        "storage_uri: 'runs/data/serving/x/v1' is not a location KServe's storage initializer reads",
        "put data_root on S3",
        "runtime: must not be empty",
        "gpus: must be >= 0 (got -1)",
        "max_replicas: (1) must be >= 1 and >= min_replicas (2)",
        "canary_traffic_percent: must be 0-100 (got 120)",
        "tolerations[0].value: must be empty when operator is Exists",
        "labels.homegrown/model-version:",
    ):
        assert expected in text, (expected, text)
    with pytest.raises(InferenceServiceSpecError, match="at most 45"):
        check_spec(full_spec(name="a" * 46))


def test_isvc_name_is_a_short_dns_label():
    assert isvc_name("homegrown-demo") == "homegrown-demo"
    assert isvc_name("Homegrown_Chat.v2") == "homegrown-chat-v2"
    assert isvc_name("2024 model") == "m-2024-model"
    assert isvc_name("x" * 80) == "x" * 45
    assert isvc_name("a" * 44 + "-b") == "a" * 44  # no trailing '-' after the cut
    for name in ("homegrown-demo", "Homegrown_Chat.v2", "2024 model", "x" * 80):
        check_spec(full_spec(name=isvc_name(name)))


SERVE_CONFIG = {
    "name": "homegrown", "corpus": "s3://b/corpus/", "data_root": "s3://b/runs",
    "registry": {"model_name": "Homegrown_LM"},
    "cluster": {"accelerator_type": "nvidia.com/mig-3g.40gb", "namespace": "ml", "service_account": "steps",
                "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                "node_selector": {"pool": "gpu"}},
    "serve": {"max_model_len": 4096, "canary_traffic_percent": 25, "max_replicas": 2, "args": ["--dtype=bfloat16"]},
}  # fmt: skip


def test_the_run_config_maps_onto_the_inference_service():
    config = parse_config(SERVE_CONFIG, "<test>")
    spec = cluster.inference_service_spec(config, "7", "s3://b/runs/serving/Homegrown_LM/v7", "run-1")
    assert spec.name == "homegrown-lm" and spec.namespace == "ml"
    assert spec.model_name == "Homegrown_LM" and spec.model_version == "7" and spec.mlflow_run_id == "run-1"
    assert spec.accelerator_type == "nvidia.com/mig-3g.40gb" and spec.gpus == 1
    assert spec.cpu == "4" and spec.memory == "16Gi" and spec.max_replicas == 2
    assert spec.canary_traffic_percent == 25 and spec.service_account == "steps"
    assert spec.tolerations == config.cluster.tolerations and spec.node_selector == {"pool": "gpu"}
    predictor = to_body(build_inference_service(spec))["spec"]["predictor"]
    assert predictor["model"]["args"] == ["--backend=auto", "--max_model_len=4096", "--dtype=bfloat16"]
    assert predictor["model"]["resources"]["limits"] == {"nvidia.com/mig-3g.40gb": "1", "cpu": "4", "memory": "16Gi"}

    # 0 and 100 mean no canary; serve's own namespace and account win over the cluster's
    for share in (0, 100):
        values = SERVE_CONFIG | {"serve": {"canary_traffic_percent": share, "namespace": "serving",
                                           "service_account": "kserve-s3", "name": "lm"}}  # fmt: skip
        spec = cluster.inference_service_spec(parse_config(values, "<test>"), "7", "s3://b/x")
        assert (spec.canary_traffic_percent, spec.namespace, spec.service_account, spec.name) == (
            None, "serving", "kserve-s3", "lm")


def test_serve_config_refuses_what_homegrown_sets_and_where_kserve_cannot_read():
    with pytest.raises(ValueError, match=r"serve.args: --model_name=x is set by homegrown"):
        ServeConfig(args=["--model_name=x"])
    with pytest.raises(ValueError, match="less than or equal to 100"):
        ServeConfig(canary_traffic_percent=101)
    with pytest.raises(ValueError, match="Extra inputs are not permitted"):
        ServeConfig(canary=10)
    config = parse_config(SERVE_CONFIG | {"data_root": "/data/runs", "cluster": {"data_pvc": "homegrown-data",
                                                                                 "namespace": "ml"}}, "<test>")  # fmt: skip
    spec = cluster.inference_service_spec(config, "3", "/data/runs/serving/Homegrown_LM/v3")
    assert spec.storage_uri == "pvc://homegrown-data/runs/serving/Homegrown_LM/v3"
    with pytest.raises(ValueError, match="not on S3 or the data PVC, so KServe cannot read it"):
        cluster.inference_service_spec(config, "3", "runs/data/serving/Homegrown_LM/v3")
    with pytest.raises(ValueError, match="serve: not set"):
        cluster.inference_service_spec(parse_config(SERVE_CONFIG | {"serve": None}, "<test>"), "3", "s3://b/x")
