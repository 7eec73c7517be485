"""The S3 endpoint dies and comes back (a real SeaweedFS server, SIGKILLed and started again on
the same ports and data): uploads, reads and checkpoint uploads wait for it with backoff and
finish; when it stays away past the retry budget, the error names the object and what to do."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path

import pytest
from botocore.config import Config

from components import storage

pytestmark = pytest.mark.slow


def in_background(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the test
            outcome["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcome


def test_an_upload_cut_off_by_an_s3_restart_completes(restartable_s3, tmp_path, capfd):
    bucket = restartable_s3.server.new_bucket()
    source = tmp_path / "ckpt"
    source.mkdir()
    payload = os.urandom(96 * 1024 * 1024)  # multipart: 12 parts of 8 MiB
    (source / "mp_rank_00_model_states.pt").write_bytes(payload)
    probe = restartable_s3.server.client(config=Config(retries={"max_attempts": 1}, connect_timeout=1))

    thread, outcome = in_background(lambda: storage.upload_dir(source, f"s3://{bucket}/step-8"))
    deadline = time.monotonic() + 60
    while not probe.list_multipart_uploads(Bucket=bucket).get("Uploads"):
        assert thread.is_alive() and time.monotonic() < deadline, f"no multipart upload seen: {outcome}"
        time.sleep(0.01)
    restartable_s3.stop()  # mid-transfer
    assert thread.is_alive(), "the upload finished before the server stopped; the test proves nothing"
    time.sleep(3)
    restartable_s3.start()
    thread.join(timeout=180)

    assert not thread.is_alive() and "error" not in outcome, outcome
    assert "retrying for up to 120 s" in capfd.readouterr().err
    written = storage.read_bytes(f"s3://{bucket}/step-8/mp_rank_00_model_states.pt")
    assert hashlib.sha256(written).digest() == hashlib.sha256(payload).digest()


def test_reads_and_writes_wait_for_s3_and_give_up_clearly_after_the_budget(restartable_s3, monkeypatch, capfd):
    bucket = restartable_s3.server.new_bucket()
    uri = f"s3://{bucket}/data/manifest.json"
    storage.write_text(uri, '{"shards": []}')

    restartable_s3.stop()
    thread, outcome = in_background(lambda: storage.read_text(uri))
    time.sleep(2)
    restartable_s3.start()
    thread.join(timeout=120)
    assert outcome.get("value") == '{"shards": []}', outcome
    assert "read failed" in capfd.readouterr().err  # our retries rode it out, not only botocore's

    # a small write (one PUT, no multipart) too: its retries upload the same bytes again
    restartable_s3.stop()
    thread, outcome = in_background(lambda: storage.write_text(f"s3://{bucket}/data/stats.json", '{"kept": 3}'))
    time.sleep(2)
    restartable_s3.start()
    thread.join(timeout=120)
    assert "error" not in outcome, outcome
    assert "write failed" in capfd.readouterr().err
    assert storage.read_text(f"s3://{bucket}/data/stats.json") == '{"kept": 3}'

    restartable_s3.stop()
    monkeypatch.setenv(storage.RETRY_ENV, "3")
    with pytest.raises(storage.StorageError) as error:
        storage.read_text(uri)
    message = str(error.value)
    assert message.startswith(f"{uri}: cannot read") and "gave up after" in message and storage.RETRY_ENV in message
    assert "retrying for up to 3 s" in capfd.readouterr().err


def test_training_rides_out_an_s3_restart_between_checkpoints(restartable_s3, tmp_path):
    """Checkpoints mirror to S3 in the background; the endpoint restarts after step-8 was
    committed: the run waits at its next commit, finishes, and its losses are untouched."""
    from tests.components.test_train import make_packed_dataset
    from tests.components.test_train_resume import MODEL, TRAIN, run_logs, start, train_local, wait_for_remote_latest

    bucket = restartable_s3.server.new_bucket()
    manifest_uri = make_packed_dataset(tmp_path / "tok", sequences=256, tokenizer=False)
    reference = train_local(manifest_uri, str(tmp_path / "local"), TRAIN, MODEL)
    out = f"s3://{bucket}/runs/r1/train"

    run = start(manifest_uri, out, tmp_path)
    wait_for_remote_latest(run, f"{out}/checkpoints", "step-8")
    restartable_s3.stop()
    time.sleep(4)
    assert run.poll() is None, "training stopped when S3 went away"
    restartable_s3.start()

    assert run.wait(timeout=300) == 0, run_logs(tmp_path)[-3000:]
    assert "retrying for up to" in run_logs(tmp_path)
    result = json.loads(storage.read_text(f"{out}/result.json"))
    assert result["losses"] == pytest.approx(reference.losses, abs=1e-5)
    assert storage.read_text(f"{out}/checkpoints/latest").strip() == "step-24"
    assert storage.exists(f"{out}/model/model.safetensors")


def test_an_artifact_logged_through_the_mlflow_proxy_waits_out_an_s3_restart(restartable_s3, tmp_path, monkeypatch):
    """The chart's MLflow server proxies artifacts to S3 with AWS_RETRY_MODE=standard and
    AWS_MAX_ATTEMPTS=10: an artifact logged while S3 restarts lands once it is back."""
    from mlflow.tracking import MlflowClient

    from tests.reliability.test_mlflow_outage import start_server, stop_server
    from tests.loopback import free_port

    for name in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "MLFLOW_HTTP_REQUEST_TIMEOUT"):
        monkeypatch.delenv(name, raising=False)  # the client's defaults, as a step outside fail_fast has
    bucket = restartable_s3.server.new_bucket()
    port = free_port()
    server = start_server(tmp_path, port, f"s3://{bucket}/mlflow", {
        "MLFLOW_S3_ENDPOINT_URL": restartable_s3.server.endpoint_url, "AWS_RETRY_MODE": "standard",
        "AWS_MAX_ATTEMPTS": "10"})  # fmt: skip
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run_id = client.create_run(client.create_experiment("proxied")).info.run_id
        report = tmp_path / "report.html"
        report.write_bytes(os.urandom(3 * 1024 * 1024))

        restartable_s3.stop()
        thread, outcome = in_background(lambda: client.log_artifact(run_id, str(report)))
        time.sleep(3)
        assert thread.is_alive(), f"logging returned while S3 was down: {outcome}"
        restartable_s3.start()
        thread.join(timeout=240)
        assert not thread.is_alive() and "error" not in outcome, outcome

        fetched = Path(client.download_artifacts(run_id, "report.html", str(tmp_path / "fetched")))
        assert fetched.read_bytes() == report.read_bytes()
        keys = [o["Key"] for o in restartable_s3.server.client().list_objects_v2(Bucket=bucket)["Contents"]]
        assert any(key.endswith(f"{run_id}/artifacts/report.html") for key in keys), keys
    finally:
        stop_server(server)
