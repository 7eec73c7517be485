"""`homegrown upload`: the compiled pipeline reaches KFP's upload API as a pipeline or a new version."""

import email.parser
import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml

from pipelines import cli
from pipelines.config import load_config
from tests.loopback import serving

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


class _UploadKFP(BaseHTTPRequestHandler):
    """Answers the KFP v2beta1 pipeline list and upload calls, recording each request."""

    pipelines: dict[str, str] = {}  # display name -> id, what the server already holds
    versions: set[tuple[str, str]] = set()  # (pipeline id, version name)
    requests: list = []

    def _reply(self, body: dict, status: int = 200) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.requests.append(("GET", url.path, query, None))
        wanted = json.loads(query.get("filter", "{}")).get("predicates", [{}])[0].get("stringValue")
        found = [{"pipeline_id": pid, "display_name": n} for n, pid in self.pipelines.items() if n == wanted]
        self._reply({"pipelines": found, "total_size": len(found)} if found else {})

    def do_POST(self):  # noqa: N802
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        body = self.rfile.read(int(self.headers["Content-Length"]))
        message = email.parser.BytesParser().parsebytes(
            f"Content-Type: {self.headers['Content-Type']}\r\n\r\n".encode() + body
        )
        files = {part.get_param("name", header="content-disposition"): part.get_payload(decode=True)
                 for part in message.get_payload()}  # fmt: skip
        self.requests.append(("POST", url.path, query, files))
        if url.path.endswith("/pipelines/upload"):
            self.pipelines[query["name"]] = "p-1"
            self._reply({"pipeline_id": "p-1", "display_name": query["name"]})
        elif (query["pipelineid"], query["name"]) in self.versions:
            self._reply({"error_message": "already exists", "code": 6}, status=409)
        else:
            self.versions.add((query["pipelineid"], query["name"]))
            self._reply({"pipeline_id": query["pipelineid"], "pipeline_version_id": "v-2"})

    def log_message(self, *args):
        pass


@pytest.fixture
def kfp_host():
    _UploadKFP.pipelines, _UploadKFP.versions, _UploadKFP.requests = {}, set(), []
    with serving(_UploadKFP) as url:
        yield url


def _posts() -> list[tuple[str, dict, dict]]:
    return [(path, query, files) for method, path, query, files in _UploadKFP.requests if method == "POST"]


def test_first_upload_creates_the_pipeline_then_versions_follow(kfp_host, capsys):
    config = str(CONFIGS / "gpu.yaml")
    assert cli.main(["upload", config, "--host", kfp_host, "--description", "nightly"]) == 0
    assert "uploaded new pipeline homegrown (p-1)" in capsys.readouterr().out
    [(path, query, files)] = _posts()
    assert path == "/apis/v2beta1/pipelines/upload"
    assert query == {"name": "homegrown", "description": "nightly"}
    spec, platform = yaml.safe_load_all(files["uploadfile"])  # the pipeline spec, then its platform spec
    assert spec["pipelineInfo"]["name"] == "homegrown"
    assert "kubernetes" in platform["platforms"]  # the cluster settings were compiled in

    code = cli.main(["upload", config, "--host", kfp_host, "--version-name", "0.1.0-r2", "--set", "train.max_steps=10"])
    assert code == 0
    assert "uploaded pipeline homegrown version 0.1.0-r2 (v-2)" in capsys.readouterr().out
    path, query, files = _posts()[-1]
    assert path == "/apis/v2beta1/pipelines/upload_version"
    assert query == {"name": "0.1.0-r2", "pipelineid": "p-1"}
    default = next(yaml.safe_load_all(files["uploadfile"]))["root"]["inputDefinitions"]["parameters"]["config_json"]
    assert json.loads(default["defaultValue"])["train"]["max_steps"] == 10  # the config travels as the default


def test_the_same_version_again_is_not_an_error(kfp_host, capsys):
    _UploadKFP.pipelines["homegrown"] = "p-1"
    argv = ["upload", str(CONFIGS / "gpu.yaml"), "--host", kfp_host]
    assert cli.main(argv) == 0
    first = capsys.readouterr().out
    version = f"gpu-{load_config(CONFIGS / 'gpu.yaml').digest[:12]}"  # <config name>-<config digest>
    assert f"version {version} (v-2)" in first
    assert cli.main(argv) == 0  # a retried hook Job, or an upgrade with an unchanged config
    assert f"already has version {version}: nothing to upload" in capsys.readouterr().out
    assert len(_posts()) == 2


def test_an_unreachable_endpoint_is_one_clear_error(capsys):
    code = cli.main(["upload", str(CONFIGS / "gpu.yaml"), "--host", "http://127.0.0.1:9"])
    err = capsys.readouterr().err
    assert code == 1
    # (other tests can leave a logging handler on a closed stream, whose "Logging error" lands here too)
    ours = [line for line in err.splitlines() if line.startswith("homegrown upload: error:")]
    assert len(ours) == 1 and "cannot reach KFP at http://127.0.0.1:9" in ours[0], err[-2000:]


def test_upload_has_help(capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["upload", "--help"])
    assert exit_info.value.code == 0
    assert "--pipeline-name" in capsys.readouterr().out
