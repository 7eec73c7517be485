"""The MLflow tracking server dies mid-training and comes back: training does not notice, and
every metric it logged meanwhile arrives once the server answers again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.components.test_train import make_packed_dataset
from tests.components.test_train_resume import MODEL, TRAIN, run_logs, start
from tests.loopback import free_port

STEPS = 60


def start_server(root: Path, port: int, artifacts: str | None = None, env: dict[str, str] | None = None) -> subprocess.Popen:
    """`mlflow server` on SQLite under root, proxying artifacts to `artifacts` (default root/artifacts)."""
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false", "MLFLOW_DISABLE_TELEMETRY": "true", **(env or {})}
    command = [str(Path(sys.executable).parent / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port),
               "--workers", "1", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", artifacts or str(root / "artifacts")]  # fmt: skip
    log = open(root / f"server-{time.monotonic_ns()}.log", "w")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 90
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return server
        except OSError:
            pass
        assert server.poll() is None, (root / log.name).read_text()[-2000:]
        assert time.monotonic() < deadline, "mlflow server did not start"
        time.sleep(0.5)


def stop_server(server: subprocess.Popen) -> None:
    os.killpg(server.pid, signal.SIGKILL)  # the server and its workers, as when its pod dies
    server.wait(timeout=30)


@pytest.mark.slow
@pytest.mark.parametrize("when", ["mid-run", "at-start"])
def test_metrics_logged_during_an_outage_arrive_after_it(tmp_path, monkeypatch, when):
    from mlflow.tracking import MlflowClient

    port = free_port()
    uri = f"http://127.0.0.1:{port}"
    server = start_server(tmp_path, port)
    try:
        client = MlflowClient(uri)
        run_id = client.create_run(client.create_experiment("outage")).info.run_id
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        monkeypatch.setenv("MLFLOW_RUN_ID", run_id)
        manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
        train = TRAIN.model_copy(update={"max_steps": STEPS, "log_every": 1, "checkpoint_every": 0})
        if when == "at-start":
            stop_server(server)  # gone after the step's preflight, before the ranks start
        run = start(manifest_uri, tmp_path / "out", tmp_path, train=train, model=MODEL)

        if when == "mid-run":
            deadline = time.monotonic() + 120
            while len(client.get_metric_history(run_id, "train/loss")) < 3:
                assert run.poll() is None and time.monotonic() < deadline, "no metrics arrived before the outage"
                time.sleep(0.2)
            stop_server(server)
        deadline = time.monotonic() + 120
        while "MLflow unreachable" not in run_logs(tmp_path):  # the ranks start slowly on a busy machine
            assert run.poll() is None and time.monotonic() < deadline, run_logs(tmp_path)[-3000:]
            time.sleep(0.2)
        time.sleep(3)  # training goes on; its metrics queue up
        assert run.poll() is None, "training stopped when MLflow went away"
        server = start_server(tmp_path, port)

        assert run.wait(timeout=300) == 0
        assert "MLflow reachable again" in run_logs(tmp_path), run_logs(tmp_path)[-3000:]
        steps = [m.step for m in client.get_metric_history(run_id, "train/loss")]
        assert sorted(steps) == list(range(1, STEPS + 1))
        assert client.get_run(run_id).data.params["train.world_size"] == "2"
        assert client.get_run(run_id).info.status == "FINISHED"
    finally:
        stop_server(server)
