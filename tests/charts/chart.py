"""Render charts/homegrown with Helm's own Go engine (helm-python-sdk, no helm binary) and pick
objects out of the result; the value sets every chart test runs with."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import helm_python as helm
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "homegrown"
NAMESPACE = "ml"
POD_KINDS = {"Deployment", "StatefulSet", "Job", "Pod"}
GPU_CONFIG = yaml.safe_load((REPO / "pipelines" / "configs" / "gpu.yaml").read_text())

VALUE_SETS = {
    "defaults": {},
    "external": {
        "postgresql": {"enabled": False},
        "database": {"external": {"host": "pg.example.internal", "existingSecret": "mlflow-db", "sslMode": "require"}},
        "artifacts": {
            "s3": {"bucket": "ml-artifacts", "endpoint": "https://s3.example.internal", "existingSecret": "mlflow-s3"}
        },
        "mlflow": {"auth": {"existingSecret": "mlflow-admin"}},
    },
    "bundled": {
        "seaweedfs": {"enabled": True},
        "mlflow": {
            "replicas": 2,
            "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
            "networkPolicy": {"allowedNamespaces": ["kubeflow", "monitoring"]},
        },
        "steps": {"extraServiceAccounts": ["pipeline-runner"], "image": {"tag": "0.1.1"}},
        "training": {"nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}},
        "pipelineUpload": {"enabled": True, "runConfig": {**GPU_CONFIG, "cluster": {"gpus": 8, "train_cpu": "64"}}},
        "imagePullSecrets": [{"name": "regcred"}],
    },
    "ingress-no-auth": {
        "mlflow": {
            "auth": {"enabled": False},
            "networkPolicy": {"allowedNamespaces": ["ingress-nginx"]},
            "ingress": {"enabled": True, "host": "mlflow.example.com", "className": "nginx", "tlsSecret": "mlflow-tls"},
        },
    },
}


@cache
def chart() -> helm.Chart:
    return helm.Chart.load(str(CHART))


def render_files(values: dict) -> dict[str, str]:
    """Template path -> rendered text (NOTES.txt included); raises Helm's error for bad values."""
    return chart().render(values, name="homegrown", namespace=NAMESPACE)


def render(values: dict) -> list[dict]:
    """Every object the chart renders for these values, hooks and test pods included."""
    files = render_files(values)
    texts = [text for path, text in sorted(files.items()) if path.endswith(".yaml")]
    return [obj for text in texts for obj in yaml.safe_load_all(text) if obj]


def objects(value_set: str) -> list[dict]:
    """The objects of a named value set, rendered afresh (generated secrets differ each time)."""
    return render(VALUE_SETS[value_set])


def find(objs: list[dict], kind: str, name: str | None = None) -> dict:
    [obj] = [o for o in objs if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    return obj


def pod_specs(objs: list[dict]) -> dict[str, dict]:
    """`<kind>/<name>` -> pod spec of everything that runs pods."""
    return {
        f"{o['kind']}/{o['metadata']['name']}": o["spec"] if o["kind"] == "Pod" else o["spec"]["template"]["spec"]
        for o in objs
        if o["kind"] in POD_KINDS
    }
