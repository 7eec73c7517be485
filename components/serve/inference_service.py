"""What the endpoint is: the KServe `InferenceService` that serves one registered model version with
the Hugging Face runtime, its spec (`InferenceServiceSpec`), the checks on it (`check_spec`) and the
object sent to the API server (`build_inference_service`, the kserve SDK's own models). Creating,
updating, waiting for it and the smoke request are in components/serve/deploy.py.

    spec = InferenceServiceSpec(name="homegrown", namespace="ml", storage_uri="s3://b/serving/homegrown/v7/",
                                model_name="homegrown", model_version="7", gpus=1)
    body = to_body(build_inference_service(spec))   # raises InferenceServiceSpecError naming each bad key

`storage_uri` is a flat Hugging Face model directory (config.json, safetensors, tokenizer files):
KServe's storage initializer copies it to /mnt/models, the runtime's default --model_dir. The
runtime's own args set --model_name to the InferenceService's name, which is what clients pass as
`model`. `canary_traffic_percent` is the share the newest revision gets while the previous one keeps
the rest; KServe honours it in Serverless (Knative) mode only. Tag routing is on, so each revision
also answers at its own URL (status.components.predictor.traffic[].url, tags `latest` and `prev`).
"""

from __future__ import annotations

import re
from typing import Any

from kserve import (
    V1beta1InferenceService,
    V1beta1InferenceServiceSpec,
    V1beta1ModelFormat,
    V1beta1ModelSpec,
    V1beta1PredictorSpec,
    constants,
)
from kubernetes import client
from pydantic import Field

from components.config import Section
from components.k8s import Toleration
from components.serve.config import HF_RUNTIME

MODEL_FORMAT = "huggingface"
NAME_MAX = 45  # KServe: `<name>-predictor-00001` and its route's host label must stay within 63
DNS1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
STORAGE_SCHEMES = ("s3://", "gs://", "pvc://", "hdfs://", "webhdfs://", "oci://", "hf://", "https://")
# Metadata homegrown puts on the InferenceService: who it serves, from which run.
PART_OF = {"app.kubernetes.io/part-of": "homegrown", "app.kubernetes.io/managed-by": "homegrown"}
VERSION_LABEL = "homegrown/model-version"
MODEL_ANNOTATION = "homegrown/registered-model"
RUN_ANNOTATION = "homegrown/mlflow-run-id"
URI_ANNOTATION = "homegrown/serving-uri"
TAG_ROUTING = "serving.kserve.io/enable-tag-routing"  # a URL per revision: the smoke request reaches the new one


class InferenceServiceSpec(Section):
    """Everything the InferenceService carries. `check_spec` checks values; pydantic checks types and keys."""

    name: str = Field(description="InferenceService name: a DNS-1035 label of at most 45 characters (isvc_name())")
    namespace: str
    storage_uri: str = Field(description="flat HF model directory KServe downloads to /mnt/models (s3://, pvc://, ...)")
    model_name: str = Field(description="registered model name in MLflow (an annotation)")
    model_version: str = Field(description="registered model version served (a label)")
    mlflow_run_id: str | None = Field(None, description="the MLflow run that deployed it (an annotation)")
    runtime: str = HF_RUNTIME
    backend: str = Field("auto", description="--backend of the HF runtime: auto | vllm | huggingface")
    max_model_len: int | None = None
    args: list[str] = Field(default_factory=list, description="more runtime arguments")
    env: dict[str, str] = Field(default_factory=dict, description="environment of the model server")
    gpus: int = Field(1, description="GPUs per replica; 0 = CPU")
    accelerator_type: str = Field("nvidia.com/gpu", description="extended resource name of the GPUs")
    cpu: str | None = None
    memory: str | None = None
    min_replicas: int = 1
    max_replicas: int = 1
    canary_traffic_percent: int | None = Field(
        None, description="the newest revision's share of traffic (1-99, or 100 = all); None: not set (all)"
    )
    tolerations: list[Toleration] = Field(default_factory=list)
    node_selector: dict[str, str] = Field(default_factory=dict)
    service_account: str | None = Field(None, description="predictor pods' ServiceAccount (S3 credentials)")
    labels: dict[str, str] = Field(default_factory=dict, description="more labels on the InferenceService")
    annotations: dict[str, str] = Field(default_factory=dict, description="more annotations on the InferenceService")


class InferenceServiceSpecError(ValueError):
    """The spec cannot make a valid InferenceService; the message names each key and what to change."""


def isvc_name(model_name: str) -> str:
    """A valid InferenceService name from a registered model name: lowercased, every run of other
    characters one '-', a leading digit prefixed with 'm-', cut to NAME_MAX."""
    base = re.sub(r"[^a-z0-9]+", "-", model_name.lower()).strip("-")
    if not base or not base[0].isalpha():
        base = "m-" + base
    return base[:NAME_MAX].rstrip("-")


def check_spec(spec: InferenceServiceSpec) -> None:
    """Every problem at once, each naming its key and what to change."""
    problems: list[str] = []

    def bad(key: str, why: str) -> None:
        problems.append(f"  {key}: {why}")

    if not DNS1035.match(spec.name) or len(spec.name) > NAME_MAX:
        bad("name", f"{spec.name!r} is not a DNS-1035 label of at most {NAME_MAX} characters (a-z, 0-9, '-', "
            "starting with a letter): set serve.name, or leave it unset for one made from registry.model_name")  # fmt: skip
    if not DNS1123_LABEL.match(spec.namespace) or len(spec.namespace) > 63:
        bad("namespace", f"{spec.namespace!r} is not a namespace name: set serve.namespace")
    if not spec.storage_uri.startswith(STORAGE_SCHEMES):
        bad("storage_uri", f"{spec.storage_uri!r} is not a location KServe's storage initializer reads "
            f"({', '.join(STORAGE_SCHEMES)}): put data_root on S3 (or a PVC, cluster.data_pvc)")  # fmt: skip
    for key in ("runtime", "model_name", "model_version", "accelerator_type"):
        if not getattr(spec, key).strip():
            bad(key, "must not be empty")
    if spec.gpus < 0:
        bad("gpus", f"must be >= 0 (got {spec.gpus})")
    if spec.min_replicas < 0:
        bad("min_replicas", f"must be >= 0 (got {spec.min_replicas})")
    if spec.max_replicas < max(1, spec.min_replicas):
        bad("max_replicas", f"({spec.max_replicas}) must be >= 1 and >= min_replicas ({spec.min_replicas})")
    if spec.canary_traffic_percent is not None and not 0 <= spec.canary_traffic_percent <= 100:
        bad("canary_traffic_percent", f"must be 0-100 (got {spec.canary_traffic_percent})")
    if spec.max_model_len is not None and spec.max_model_len < 1:
        bad("max_model_len", f"must be >= 1 (got {spec.max_model_len})")
    for i, t in enumerate(spec.tolerations):
        if t.operator == "Exists" and t.value:
            bad(f"tolerations[{i}].value", "must be empty when operator is Exists (or use operator: Equal)")
        if t.operator == "Equal" and not t.key:
            bad(f"tolerations[{i}].key", "is required when operator is Equal")
    for key, value in _labels(spec).items():
        if not LABEL_VALUE.match(value) or len(value) > 63:
            bad(f"labels.{key}", f"{value!r} is not a label value (<= 63 of A-Z a-z 0-9 - _ .): use an annotation")
    for name in spec.env:
        if not name or "=" in name:
            bad(f"env.{name}", "is not an environment variable name")
    if problems:
        raise InferenceServiceSpecError(f"InferenceService {spec.namespace}/{spec.name}: invalid spec\n"
                                        + "\n".join(problems))  # fmt: skip


def _labels(spec: InferenceServiceSpec) -> dict[str, str]:
    return {**PART_OF, VERSION_LABEL: spec.model_version, **spec.labels}


def _annotations(spec: InferenceServiceSpec) -> dict[str, str]:
    run = {RUN_ANNOTATION: spec.mlflow_run_id} if spec.mlflow_run_id else {}
    return {MODEL_ANNOTATION: spec.model_name, URI_ANNOTATION: spec.storage_uri, **run, TAG_ROUTING: "true",
            **spec.annotations}  # fmt: skip


def runtime_args(spec: InferenceServiceSpec) -> list[str]:
    """The HF runtime's arguments besides its own --model_name (the InferenceService's name)."""
    args = [f"--backend={spec.backend}"]
    if spec.max_model_len is not None:
        args.append(f"--max_model_len={spec.max_model_len}")
    return args + list(spec.args)


def _resources(spec: InferenceServiceSpec) -> client.V1ResourceRequirements | None:
    wanted = {spec.accelerator_type: str(spec.gpus) if spec.gpus else None, "cpu": spec.cpu, "memory": spec.memory}
    quantities = {k: v for k, v in wanted.items() if v}
    return client.V1ResourceRequirements(requests=quantities, limits=dict(quantities)) if quantities else None


def build_inference_service(spec: InferenceServiceSpec) -> V1beta1InferenceService:
    """The InferenceService (kserve SDK models); `to_body()` is the request body. Raises
    InferenceServiceSpecError (check_spec)."""
    check_spec(spec)
    model = V1beta1ModelSpec(
        name=None,  # the SDK's default "" would be sent; KServe names the container itself
        model_format=V1beta1ModelFormat(name=MODEL_FORMAT),
        runtime=spec.runtime,
        storage_uri=spec.storage_uri,
        args=runtime_args(spec),
        env=[client.V1EnvVar(name=k, value=v) for k, v in spec.env.items()] or None,
        resources=_resources(spec),
    )
    predictor = V1beta1PredictorSpec(
        model=model,
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        canary_traffic_percent=spec.canary_traffic_percent,
        service_account_name=spec.service_account,
        tolerations=[client.V1Toleration(**t.model_dump(exclude_none=True)) for t in spec.tolerations] or None,
        node_selector=dict(spec.node_selector) or None,
    )
    return V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=client.V1ObjectMeta(name=spec.name, namespace=spec.namespace, labels=_labels(spec),
                                     annotations=_annotations(spec)),  # fmt: skip
        spec=V1beta1InferenceServiceSpec(predictor=predictor),
    )


def to_body(isvc: V1beta1InferenceService) -> dict[str, Any]:
    """The object as the kubernetes client sends it (camelCase keys, no unset fields)."""
    return client.ApiClient().sanitize_for_serialization(isvc)
