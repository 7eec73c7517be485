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

STEPS_IMAGE = "registry.example.com/ml/homegrown-steps"
TRAIN_IMAGE = "registry.example.com/ml/homegrown-trainer"
# the values without a default: every install names the pipeline's images
REQUIRED = {"steps": {"image": {"repository": STEPS_IMAGE}, "trainImage": {"repository": TRAIN_IMAGE}}}
DIGEST = "sha256:" + "ab" * 32
# every switch of the chart on, every image pinned by digest: what checkov scans besides the defaults
ALL_ON = {
    "seaweedfs": {"enabled": True, "image": {"digest": DIGEST}},
    "postgresql": {"image": {"digest": DIGEST}},
    "mlflow": {
        "image": {"digest": DIGEST},
        "replicas": 2,
        "metrics": {"enabled": True, "serviceMonitor": {"enabled": True}},
        "networkPolicy": {
            "allowedNamespaces": ["ingress-nginx", "monitoring"],
            "egress": {"extraRules": [{"to": [{"ipBlock": {"cidr": "169.254.170.23/32"}}],
                                       "ports": [{"port": 80, "protocol": "TCP"}]}]},
        },
        "ingress": {"enabled": True, "host": "mlflow.example.com", "className": "nginx", "tlsSecret": "mlflow-tls"},
        "auth": {"stepsUser": {"registeredModels": ["homegrown-demo", "homegrown-chat"]}},
    },
    "steps": {
        "extraServiceAccounts": ["pipeline-runner"],
        "image": {"repository": STEPS_IMAGE, "tag": "0.1.1", "digest": DIGEST},
        "trainImage": {"repository": f"{TRAIN_IMAGE}@{DIGEST}"},
    },
    "pipelineUpload": {"enabled": True, "runConfig": {**GPU_CONFIG, "cluster": {"gpus": 8}}},
    "imagePullSecrets": [{"name": "regcred"}],
}


def merged(base: dict, over: dict) -> dict:
    """`over` merged into a copy of `base`, maps recursively (as Helm merges value files)."""
    out = dict(base)
    for key, value in over.items():
        out[key] = merged(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


VALUE_SETS = {
    "defaults": {},
    "external": {
        "postgresql": {"enabled": False},
        "database": {"external": {"host": "pg.example.internal", "existingSecret": "mlflow-db", "sslMode": "require"}},
        "artifacts": {
            "s3": {"bucket": "ml-artifacts", "endpoint": "https://s3.example.internal:9443",
                   "existingSecret": "mlflow-s3"}
        },
        "mlflow": {
            "auth": {"existingSecret": "mlflow-admin", "stepsUser": {"existingSecret": "mlflow-steps"}},
            "networkPolicy": {"egress": {"externalCIDRs": ["10.20.0.0/16", "192.0.2.0/24"]}},
        },
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
    "all-on": ALL_ON,
}
VALUE_SETS = {name: merged(REQUIRED, values) for name, values in VALUE_SETS.items()}


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
