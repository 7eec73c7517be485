"""Preflight before training: every problem found at once, each naming the thing and the fix."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from components.train.preflight import PreflightError, preflight
from tests.components.test_train_base import make_base
from tests.components.test_train_resume import free_port


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_everything_in_order_passes(tmp_path, bucket):
    server = HTTPServer(("127.0.0.1", 0), _Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = make_base(tmp_path / "base")
        preflight(str(tmp_path / "out"), str(base), f"http://127.0.0.1:{server.server_port}")
        preflight(f"s3://{bucket}/runs/r/train", None, None)
    finally:
        server.shutdown()
    assert not list((tmp_path / "out").iterdir())  # the probe is gone


def test_every_problem_is_named_at_once(tmp_path, sqlite_uri, bucket):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PreflightError) as caught:
        preflight(str(tmp_path / "a-file" / "out"), str(tmp_path / "no-model"), f"http://127.0.0.1:{free_port()}")
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert "cannot write checkpoints under" in problems[0]
    assert "is not reachable" in problems[1] and "MLFLOW_TRACKING_URI" in problems[1]
    assert "no-model: not a directory" in problems[2]

    with pytest.raises(PreflightError, match="not found in the registry"):
        preflight(str(tmp_path / "out"), "models:/nothing-here@champion", sqlite_uri)
    with pytest.raises(PreflightError, match="no config.json under that prefix"):
        preflight(str(tmp_path / "out"), f"s3://{bucket}/bases/missing", None)
    with pytest.raises(PreflightError, match="cannot write checkpoints under s3://no-such-bucket-x"):
        preflight("s3://no-such-bucket-x/out", None, None)
