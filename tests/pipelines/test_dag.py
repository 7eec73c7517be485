"""The DAG compiles for a cluster with its Kubernetes settings, and the package loads back."""

import json
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import kfp
import pytest
import yaml

from pipelines import cli
from pipelines.config import load_config
from tests.loopback import serving

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("compiled") / "pipeline.yaml"
    assert cli.main(["compile", str(CONFIGS / "gpu.yaml"), "-o", str(out)]) == 0
    return {"path": out, "docs": list(yaml.safe_load_all(out.read_text()))}


def test_package_loads_back_with_kfp(compiled):
    component = kfp.components.load_component_from_file(str(compiled["path"]))
    assert component.name == "homegrown"
    assert set(component.component_spec.inputs) == {"config_json", "run_name", "tracking_uri", "data_root"}


def test_dag_shape_and_gate(compiled):
    spec = compiled["docs"][0]
    handler = spec["components"]["comp-exit-handler-1"]["dag"]["tasks"]
    assert {"start-op", "clean-plan-op", "clean-cluster-op", "clean-collect-op", "tokenize-op", "train-op",
            "evaluate-op", "register-op", "champion-gate"} <= set(handler)
    loops = sorted(name for name in handler if name.startswith("for-loop"))
    # four fan-outs, each over a short list a plan task returns: units, partitions, band groups, units
    iterated = [handler[loop]["parameterIterator"]["items"]["inputParameter"] for loop in loops]
    assert [i.removeprefix("pipelinechannel--") for i in iterated] == [
        "clean-plan-op-Output", "clean-dedup-plan-op-Output", "clean-dedup-plan-op-2-Output", "clean-plan-op-Output"]
    shown = {task: body["taskInfo"]["name"] for task, body in handler.items()}
    for loop in loops:
        shown.update({t: b["taskInfo"]["name"] for t, b in spec["components"][f"comp-{loop}"]["dag"]["tasks"].items()})
    assert {t: n for t, n in shown.items() if n.startswith("clean")} == {
        "clean-plan-op": "clean: plan", "for-loop-2": "clean-filter", "clean-filter-op": "clean: filter",
        "clean-dedup-plan-op": "clean: exact dedup plan", "clean-dedup-plan-op-2": "clean: near dedup plan",
        "for-loop-3": "clean-exact", "clean-exact-op": "clean: exact dedup", "for-loop-4": "clean-near",
        "clean-near-op": "clean: near dedup", "clean-cluster-op": "clean: cluster", "for-loop-5": "clean-write",
        "clean-write-op": "clean: write", "clean-collect-op": "clean: collect"}  # fmt: skip
    # plan → filter → exact → near → cluster → write → collect
    assert "for-loop-2" in handler["for-loop-3"]["dependentTasks"]
    assert "for-loop-3" in handler["for-loop-4"]["dependentTasks"]
    assert {"for-loop-3", "for-loop-4"} <= set(handler["clean-cluster-op"]["dependentTasks"])
    assert "clean-cluster-op" in handler["for-loop-5"]["dependentTasks"]
    assert "clean-collect-op" in handler["tokenize-op"]["dependentTasks"]
    assert "tokenize-op" in handler["train-op"]["dependentTasks"]
    assert "train-op" in handler["evaluate-op"]["dependentTasks"]
    gate = spec["components"]["comp-champion-gate"]["dag"]["tasks"]
    condition = next(iter(gate.values()))["triggerPolicy"]["condition"]
    assert "decision" in condition and "'passed'" in condition
    assert handler["champion-gate"]["inputs"]["parameters"]["decision"]["taskOutputParameter"]["producerTask"] == "register-op"
    assert "exit-handler-1" in spec["root"]["dag"]["tasks"]
    default = spec["root"]["inputDefinitions"]["parameters"]["config_json"]["defaultValue"]
    assert json.loads(default)["train"]["precision"] == "bf16"


def test_cluster_settings_reach_the_train_step(compiled):
    spec, platform = compiled["docs"]
    executors = spec["deploymentSpec"]["executors"]
    train = executors["exec-train-op"]["container"]
    assert train["image"] == "registry.example.com/ml/homegrown-trainer:0.1.0"
    assert train["resources"]["accelerator"]["resourceCount"] == "8"
    assert executors["exec-clean-write-op"]["container"]["image"] == "registry.example.com/ml/homegrown-steps:0.1.0"
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert k8s["exec-train-op"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    assert k8s["exec-train-op"]["nodeSelector"]["labels"] == {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}
    for name in ("exec-clean-filter-op", "exec-train-op", "exec-register-op"):
        assert k8s[name]["secretAsEnv"][0]["secretName"] == "homegrown-s3"
        assert k8s[name]["configMapAsEnv"][0]["configMapName"] == "homegrown-steps"
    assert "tolerations" not in k8s["exec-clean-filter-op"]
    assert "fieldPathAsEnv" not in k8s["exec-train-op"]  # one node: no TrainJob to own


def test_local_config_compiles_once_it_names_an_image(tmp_path, capsys):
    """No default image: homegrown publishes none, and one in a namespace we do not own could run
    someone else's code with the run's credentials."""
    out = tmp_path / "demo.yaml"
    assert cli.main(["compile", str(CONFIGS / "demo.yaml"), "-o", str(out)]) == 2
    assert "cluster.image not set: build the images from docker/ (make images), push them" in capsys.readouterr().err
    assert not out.exists()
    image = "registry.example.com/ml/homegrown-steps@sha256:" + "a" * 64
    assert cli.main(["compile", str(CONFIGS / "demo.yaml"), "-o", str(out), "--set", f"cluster.image={image}"]) == 0
    spec = next(yaml.safe_load_all(out.read_text()))
    assert "accelerator" not in json.dumps(spec["deploymentSpec"]["executors"]["exec-train-op"])


class _RecordingKFP(BaseHTTPRequestHandler):
    """Answers the few KFP v2beta1 calls a run submission makes, recording each request."""

    requests: list = []

    def _reply(self, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):  # noqa: N802
        self.requests.append(("GET", self.path, None))
        if "/experiments" in self.path:
            self._reply({"experiments": []})
        else:
            self._reply({})

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        self.requests.append(("POST", self.path, body))
        if self.path.endswith("/experiments"):
            self._reply({"experiment_id": "exp-1", "display_name": body.get("display_name")})
        else:
            self._reply({"run_id": "run-1", "display_name": body.get("display_name")})

    def log_message(self, *args):
        pass


def test_submit_builds_the_run_request(tmp_path, capsys):
    with serving(_RecordingKFP) as host:
        code = cli.main(["submit", str(CONFIGS / "gpu.yaml"), "--host", host, "--run-name", "nightly-1",
                         "-o", str(tmp_path / "p.yaml")])
    assert code == 0
    assert "submitted run run-1" in capsys.readouterr().out
    posts = {path: body for method, path, body in _RecordingKFP.requests if method == "POST"}
    run = posts["/apis/v2beta1/runs"]
    assert run["display_name"] == "nightly-1"
    assert run["experiment_id"] == "exp-1"
    params = run["runtime_config"]["parameters"]
    assert params["run_name"] == "nightly-1"
    assert json.loads(params["config_json"]) == json.loads(load_config(CONFIGS / "gpu.yaml").model_dump_json())
    spec = run["pipeline_spec"]
    spec = spec.get("pipeline_spec", spec)  # with platform settings the spec is wrapped
    assert spec["pipelineInfo"]["name"] == "homegrown"
    assert "kubernetes" in json.dumps(run["pipeline_spec"])
    assert posts["/apis/v2beta1/experiments"]["display_name"] == "homegrown"
