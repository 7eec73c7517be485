"""The multi-node train step: config rules, the TrainJob it builds from the cluster settings,
the compiled pipeline (the step is a CPU launcher), and the step run against a fake API server."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from components.train import trainjob
from pipelines import cli, tasks
from pipelines.config import RunConfig, load_config
from tests.components.test_trainjob import NS, FakeApiServer, api_for, status

CONFIGS = Path(__file__).resolve().parents[2] / "pipelines" / "configs"


def multinode(**cluster) -> RunConfig:
    config = load_config(CONFIGS / "gpu-multinode.yaml")
    return config.model_copy(update={"cluster": config.cluster.model_copy(update=cluster)})


def test_multinode_needs_a_shared_volume_and_a_rank_per_gpu():
    raw = yaml.safe_load((CONFIGS / "gpu-multinode.yaml").read_text())
    del raw["cluster"]["data_pvc"]
    with pytest.raises(ValueError, match="needs checkpoints every node can reach"):
        RunConfig.model_validate(raw)
    RunConfig.model_validate(raw | {"data_root": "s3://bucket/runs", "corpus": "s3://bucket/corpus/"})  # S3 will do
    raw = yaml.safe_load((CONFIGS / "gpu-multinode.yaml").read_text())
    raw["cluster"]["gpus"] = 4
    with pytest.raises(ValueError, match=r"nproc_per_node \(8\) must equal cluster.gpus \(4\)"):
        RunConfig.model_validate(raw)
    raw = yaml.safe_load((CONFIGS / "gpu-multinode.yaml").read_text())
    raw["train"]["global_batch_size"] = 96
    with pytest.raises(ValueError, match="x cluster.train_nodes"):
        RunConfig.model_validate(raw)


def test_trainjob_carries_the_cluster_settings():
    config = multinode()
    environ = {"MLFLOW_TRACKING_URI": "http://mlflow.homegrown:5000", "AWS_ENDPOINT_URL": "http://s3:8333",
               "AWS_SECRET_ACCESS_KEY": "never-forwarded-by-value"}  # fmt: skip
    spec = tasks.trainjob_spec(config, "/data/runs/r/tokenizer/manifest.json", "/data/runs/r/train",
                               "/data/runs/r/train/train-config.json", {"MLFLOW_RUN_ID": "abc123"}, environ)  # fmt: skip
    trainjob.check_spec(spec)
    body = trainjob.build_trainjob(spec).to_dict()
    trainer = body["spec"]["trainer"]
    assert body["metadata"]["namespace"] == "homegrown" and body["metadata"]["name"].startswith("gpu-multinode-")
    assert body["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["image"] == "homegrown/trainer:0.1.0"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["args"] == ["--data", "/data/runs/r/tokenizer/manifest.json", "--output", "/data/runs/r/train",
                               "--config", "/data/runs/r/train/train-config.json"]  # fmt: skip
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.homegrown:5000"
    assert env["MLFLOW_RUN_ID"]["value"] == "abc123"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "homegrown-mlflow", "key": "MLFLOW_TRACKING_PASSWORD"}  # fmt: skip
    assert "AWS_SECRET_ACCESS_KEY" not in env  # secrets travel as references, never by value
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]["value"] == str(config.train.preemption_grace_s)
    assert body["metadata"]["labels"]["homegrown/run"] == "abc123"
    pod = json.dumps(body["spec"]["runtimePatches"])
    for expected in ("homegrown-data", "/data", "nvidia.com/gpu.product", "NoSchedule", "homegrown-steps"):
        assert expected in pod, expected


def test_compiled_multinode_pipeline_launches_from_a_cpu_step(tmp_path):
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", str(CONFIGS / "gpu-multinode.yaml"), "-o", str(out)]) == 0
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    train = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert train["image"] == "homegrown/steps:0.1.0" and "accelerator" not in train.get("resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-op"]
    assert "tolerations" not in k8s and k8s["pvcMount"][0]["mountPath"] == "/data"


def test_train_step_runs_the_trainjob_and_reads_its_result(tmp_path, monkeypatch):
    config = multinode(namespace=NS)
    out = tmp_path / "train"
    server = FakeApiServer([status(None), status(None, ready=4), status("Complete", "JobSetCompleted", "done")])

    def worker_finished(gets: int) -> None:  # what the nodes would have written by the last poll
        if gets == 3:
            (out / "result.json").write_text(json.dumps(RESULT | {"model_uri": str(out / "model")}))

    server.on_get = worker_finished
    monkeypatch.setattr(trainjob, "launch", functools.partial(
        trainjob.launch, api=api_for(server), poll_s=0.01, handle_signals=False, log=lambda line: None))  # fmt: skip
    monkeypatch.setattr(tasks, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    result = tasks.train_on_trainjob(config, "/data/tok/manifest.json", str(out), {"MLFLOW_RUN_ID": "r1"})

    assert result.world_size == 32 and result.final_loss == 2.5
    written = json.loads((out / "train-config.json").read_text())
    assert written["train"]["nproc_per_node"] == 8 and written["model"]["n_layer"] == 24
    [(_, _, _, body)] = server.calls("POST")
    assert body["spec"]["trainer"]["args"][-1] == str(out / "train-config.json")
    assert server.calls("DELETE"), "the finished TrainJob is cleaned up"


def test_no_namespace_outside_a_pod_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(tasks, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    with pytest.raises(ValueError, match="set cluster.namespace"):
        tasks.trainjob_spec(multinode(namespace=None), "d", "o", "c", {})


RESULT = {
    "final_loss": 2.5, "losses": [3.0, 2.5], "steps": 2, "tokens": 2097152, "tokens_per_s": 1e6, "steps_per_s": 1.0,
    "world_size": 32, "zero_stage": 2, "precision": "bf16", "parameters": 760_000_000, "tokens_per_step": 1048576,
    "fixed_batch_loss_engine": 2.4, "fixed_batch_loss_consolidated": 2.4, "checkpoint_uri": "/data/x",
    "checkpoint_tag": "step-2", "data_digest": "d", "duration_s": 2.0,
}  # fmt: skip
