"""Preflight before training: every problem found at once, each naming the thing and the fix."""

from __future__ import annotations

import base64
from http.server import BaseHTTPRequestHandler

import pytest

from components.manifest import Manifest
from components.train.preflight import PreflightError, check_tracking, check_train_inputs
from tests.components.test_train_base import make_base
from tests.loopback import free_port, serving


class _Health(BaseHTTPRequestHandler):
    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args):
        pass


def test_everything_in_order_passes(tmp_path, bucket):
    with serving(_Health) as url:
        base = make_base(tmp_path / "base")
        check_train_inputs(str(tmp_path / "out"), str(base), url)
        check_train_inputs(f"s3://{bucket}/runs/r/train", None, None)
    from components import storage

    assert not storage.exists(f"s3://{bucket}/runs"), "the S3 probe is gone too"
    assert not list((tmp_path / "out").iterdir())  # the probe is gone


def test_every_problem_is_named_at_once(tmp_path, sqlite_uri, bucket):
    (tmp_path / "a-file").write_text("x")
    with pytest.raises(PreflightError) as caught:
        check_train_inputs(str(tmp_path / "a-file" / "out"), str(tmp_path / "no-model"), f"http://127.0.0.1:{free_port()}")
    problems = caught.value.problems
    assert len(problems) == 3, problems
    assert "cannot write checkpoints under" in problems[0]
    assert "is not reachable" in problems[1] and "MLFLOW_TRACKING_URI" in problems[1]
    assert "no-model: not a directory" in problems[2]

    with pytest.raises(PreflightError, match="not found in the registry"):
        check_train_inputs(str(tmp_path / "out"), "models:/nothing-here@champion", sqlite_uri)
    with pytest.raises(PreflightError, match="no config.json under that prefix"):
        check_train_inputs(str(tmp_path / "out"), f"s3://{bucket}/bases/missing", None)
    with pytest.raises(PreflightError, match="cannot write checkpoints under s3://no-such-bucket-x"):
        check_train_inputs("s3://no-such-bucket-x/out", None, None)


def test_lora_targets_the_base_lacks_are_named_with_the_layers_it_has(tmp_path, bucket):
    from components import storage

    base = make_base(tmp_path / "base")
    check_train_inputs(str(tmp_path / "out"), str(base), None, ["q_proj", "self_attn.v_proj", "mlp.down_proj"])
    check_train_inputs(str(tmp_path / "out"), str(base), None, "all-linear")
    with pytest.raises(PreflightError) as caught:
        check_train_inputs(str(tmp_path / "out"), str(base), None, ["q_proj", "c_attn", "attn.q_proj"])
    [problem] = caught.value.problems
    assert problem.startswith(f"model.lora.target_modules ['c_attn', 'attn.q_proj']: no layer of {base} that")
    assert problem.endswith("its layers are down_proj, embed_tokens, gate_proj, k_proj, lm_head, o_proj, q_proj, "
                            "up_proj, v_proj (or use all-linear)")

    remote = f"s3://{bucket}/bases/llama"
    storage.upload_dir(base, remote)
    with pytest.raises(PreflightError, match=r"\['c_attn'\]: no layer of s3://"):
        check_train_inputs(str(tmp_path / "out"), remote, None, ["c_attn"])


class _HealthBehindBasicAuth(BaseHTTPRequestHandler):
    """An MLflow-like /health behind HTTP Basic auth (admin / s3cret), as a proxy in front of it does."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        expected = "Basic " + base64.b64encode(b"admin:s3cret").decode()
        ok = self.headers.get("Authorization") == expected
        self.send_response(404 if self.path != "/health" else 200 if ok else 401)
        self.end_headers()
        self.wfile.write(b"OK" if ok else b"")

    def log_message(self, *args):
        pass


def test_tracking_credentials_are_sent_as_basic_auth_and_never_shown():
    with serving(_HealthBehindBasicAuth) as url:
        host = url.removeprefix("http://")
        assert check_tracking(f"http://admin:s3cret@{host}") is None
        assert check_tracking(f"http://admin:s3cret@{host}/") is None
        assert check_tracking(url) == f"MLflow at {url} answered 401 on /health; check the user and password in the tracking URI"
        assert check_tracking(f"http://admin:wrong@{host}") == (
            f"MLflow at http://admin:***@{host} answered 401 on /health; check the user and password in the tracking URI")
    down = f"http://admin:s3cret@127.0.0.1:{free_port()}"
    problem = check_tracking(down)
    assert problem == (f"MLflow at {down.replace('s3cret', '***')} is not reachable (<urlopen error [Errno 111] "
                       "Connection refused>); check MLFLOW_TRACKING_URI and the server")


def test_training_data_must_be_the_tokenizer_steps_manifest(tmp_path):
    from tests.components.test_train import make_packed_dataset

    packed = make_packed_dataset(tmp_path / "tok", sequences=8, shards=1, tokenizer=False)
    check_train_inputs(str(tmp_path / "out"), data_uri=packed)
    documents = str(tmp_path / "clean" / "manifest.json")
    Manifest(kind="documents", root=str(tmp_path / "clean")).save(documents)
    with pytest.raises(PreflightError) as caught:
        check_train_inputs(str(tmp_path / "out"), data_uri=documents)
    assert caught.value.problems == [
        f"training data {documents}: a 'documents' manifest, not one of 'packed-tokens', 'sft-packed' the worker "
        "trains on; pass the manifest.json `homegrown tokenize --output DIR` (or `homegrown sft-tokenize`) writes "
        "(DIR/manifest.json), not the clean step's or a held-out DIR/eval/manifest.json"]  # fmt: skip
    sft_packed = str(tmp_path / "sft" / "manifest.json")
    Manifest(kind="sft-packed", root=str(tmp_path / "sft")).save(sft_packed)
    check_train_inputs(str(tmp_path / "out"), data_uri=sft_packed)
    with pytest.raises(PreflightError, match=r"training data .*missing\.json: cannot read it as a manifest"):
        check_train_inputs(str(tmp_path / "out"), data_uri=str(tmp_path / "missing.json"))
