"""The multi-node train step: config rules, the TrainJob it builds from the cluster settings (owned
by the launcher pod, labelled with the pipeline run), the compiled pipeline (the step is a CPU
launcher with its pod's identity as env), the step run against a fake API server, and the exit
handler deleting what a killed launcher left."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import pytest
import yaml

from components.train import trainjob, trainjob_launch
from components.train.run_config import read_worker_config
from pipelines import cli, cluster
from pipelines.config import RunConfig, load_config
from pipelines.steps import finish
from tests.components.test_trainjob import NS, TRAINJOBS, FakeApiServer, api_for, status

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
    spec = cluster.trainjob_spec(config, "/data/runs/r/tokenizer/manifest.json", "/data/runs/r/train",
                               "/data/runs/r/train/train-config.json", {"MLFLOW_RUN_ID": "abc123"}, environ)  # fmt: skip
    trainjob.check_spec(spec)
    body = trainjob.build_trainjob(spec).to_dict()
    trainer = body["spec"]["trainer"]
    assert body["metadata"]["namespace"] == "homegrown" and body["metadata"]["name"].startswith("gpu-multinode-")
    assert body["spec"]["runtimeRef"]["name"] == "torch-distributed"
    assert trainer["numNodes"] == 4 and trainer["numProcPerNode"] == 8
    assert trainer["image"] == "registry.example.com/ml/homegrown-trainer:0.1.0"
    assert trainer["resourcesPerNode"]["limits"]["nvidia.com/gpu"] == "8"
    assert trainer["args"] == ["--data", "/data/runs/r/tokenizer/manifest.json", "--output", "/data/runs/r/train",
                               "--config", "/data/runs/r/train/train-config.json"]  # fmt: skip
    env = {e["name"]: e for e in trainer["env"]}
    assert env["MLFLOW_TRACKING_URI"]["value"] == "http://mlflow.homegrown:5000"
    assert env["MLFLOW_RUN_ID"]["value"] == "abc123"
    assert env["MLFLOW_TRACKING_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "homegrown-mlflow-steps", "key": "MLFLOW_TRACKING_PASSWORD"}  # fmt: skip
    assert "AWS_SECRET_ACCESS_KEY" not in env  # secrets travel as references, never by value
    assert env["TORCH_ELASTIC_SHUTDOWN_TIMEOUT"]["value"] == str(config.train.preemption_grace_s)
    assert body["metadata"]["labels"]["homegrown/run"] == "abc123"
    assert trainjob.RUN_LABEL not in body["metadata"]["labels"]  # no pipeline run: not the exit handler's
    assert "ownerReferences" not in body["metadata"]  # not started by the pipeline: no launcher pod to own it
    pod = json.dumps(body["spec"]["runtimePatches"])
    for expected in ("homegrown-data", "/data", "nvidia.com/gpu.product", "NoSchedule", "homegrown-steps"):
        assert expected in pod, expected


POD = {trainjob.POD_NAME_ENV: "homegrown-x7k2p-system-container-impl-2214580871",
       trainjob.POD_UID_ENV: "1b4e28ba-2fa1-11d2-883f-0016e3f5a1b2"}  # fmt: skip


def test_trainjob_is_owned_by_the_launcher_pod_and_labelled_with_the_run(tmp_path, monkeypatch):
    (tmp_path / "namespace").write_text("homegrown\n")  # the launcher pod's, as its service account has it
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "namespace")
    spec = cluster.trainjob_spec(multinode(), "/data/t/manifest.json", "/data/r/train", "/data/r/train/c.json",
                                 {"MLFLOW_RUN_ID": "abc123"}, POD, run_name="nightly-7")  # fmt: skip
    body = trainjob.build_trainjob(spec).to_dict()
    assert body["metadata"]["ownerReferences"] == [{
        "apiVersion": "v1", "kind": "Pod", "name": POD[trainjob.POD_NAME_ENV], "uid": POD[trainjob.POD_UID_ENV],
        "controller": False, "blockOwnerDeletion": False}]  # fmt: skip
    assert body["metadata"]["labels"] == {"app.kubernetes.io/part-of": "homegrown", "homegrown/run": "abc123",
                                          trainjob.RUN_LABEL: "nightly-7"}  # fmt: skip
    assert trainjob.POD_NAME_ENV not in json.dumps(body)  # the pod's identity is the owner, not forwarded env


def test_a_run_name_that_is_no_label_value_becomes_one():
    assert cluster.run_label("gpu-multinode-20260101-120000") == "gpu-multinode-20260101-120000"
    # cleaned, then 8 hex digits of sha256(name): hashlib.sha256(b"nightly run #7/").hexdigest()[:8]
    assert cluster.run_label("nightly run #7/") == "nightly-run-7-03d97aed"
    long = "homegrown-" + "x" * 80
    assert cluster.run_label(long) == "homegrown-" + "x" * 44 + "-3621acf7" and len(cluster.run_label(long)) == 63
    assert cluster.run_label("@@@") == "2ec847d8"
    for name in ("nightly run #7/", long, "@@@"):
        assert trainjob.LABEL_VALUE.match(cluster.run_label(name))


def test_compiled_multinode_pipeline_launches_from_a_cpu_step(tmp_path):
    out = tmp_path / "pipeline.yaml"
    assert cli.main(["compile", str(CONFIGS / "gpu-multinode.yaml"), "-o", str(out)]) == 0
    spec, platform = list(yaml.safe_load_all(out.read_text()))
    train = spec["deploymentSpec"]["executors"]["exec-train-op"]["container"]
    assert train["image"] == "registry.example.com/ml/homegrown-steps:0.1.0" and "accelerator" not in train.get("resources", {})
    k8s = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]["exec-train-op"]
    assert "tolerations" not in k8s and k8s["pvcMount"][0]["mountPath"] == "/data"
    # the launcher pod's name and uid from the downward API: the TrainJob's owner
    assert k8s["fieldPathAsEnv"] == [{"name": trainjob.POD_NAME_ENV, "fieldPath": "metadata.name"},
                                     {"name": trainjob.POD_UID_ENV, "fieldPath": "metadata.uid"}]  # fmt: skip
    others = platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]
    assert [name for name, e in others.items() if "fieldPathAsEnv" in e] == ["exec-train-op"]


def test_train_step_runs_the_trainjob_and_reads_its_result(tmp_path, monkeypatch):
    config = multinode(namespace=NS)
    out = tmp_path / "train"
    server = FakeApiServer([status(None), status(None, ready=4), status("Complete", "JobSetCompleted", "done")])

    def worker_finished(gets: int) -> None:  # what the nodes would have written by the last poll
        if gets == 3:
            (out / "result.json").write_text(json.dumps(RESULT | {"model_uri": str(out / "model")}))

    server.on_get = worker_finished
    monkeypatch.setattr(trainjob_launch, "launch", functools.partial(
        trainjob_launch.launch, api=api_for(server), poll_s=0.01, handle_signals=False,
        log=lambda line: None))  # fmt: skip
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    result = cluster.train_on_trainjob(config, "/data/tok/manifest.json", str(out), {"MLFLOW_RUN_ID": "r1"},
                                       "nightly-7")  # fmt: skip

    assert result.world_size == 32 and result.final_loss == 2.5
    written = json.loads((out / "train-config.json").read_text())
    assert written["train"]["nproc_per_node"] == 8 and written["model"]["num_hidden_layers"] == 32
    assert read_worker_config(str(out / "train-config.json")) == (config.train, config.model)  # what the nodes read
    [(_, _, _, body)] = server.calls("POST")
    assert body["spec"]["trainer"]["args"][-1] == str(out / "train-config.json")
    assert body["metadata"]["labels"][trainjob.RUN_LABEL] == "nightly-7"
    assert server.calls("DELETE"), "the finished TrainJob is cleaned up"


def test_no_namespace_outside_a_pod_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    with pytest.raises(ValueError, match="set cluster.namespace"):
        cluster.trainjob_spec(multinode(namespace=None), "d", "o", "c", {})


def running_job(run_name: str) -> dict:
    """A TrainJob of pipeline run `run_name` as the API server holds it, still running."""
    spec = cluster.trainjob_spec(multinode(namespace=NS), "d", "o", "c", {}, {}, run_name)
    return trainjob.build_trainjob(spec.model_copy(update={"name": "gpu-multinode-abcde"})).to_dict()


def closing(monkeypatch) -> list[tuple[str, str]]:
    """The exit handler's MLflow side, recorded: (run name, status) per close. That it closes the real
    parent run is e2e/test_pipeline_local.py::test_corpus_of_invalid_records_fails_the_run_clearly."""
    closed: list[tuple[str, str]] = []
    monkeypatch.setattr(finish, "close_parent_run", lambda config, name, uri, status: closed.append((name, status)))
    return closed


def test_exit_handler_deletes_the_runs_unfinished_trainjob_then_closes_the_mlflow_run(monkeypatch):
    server = FakeApiServer([status(None, ready=4)])
    monkeypatch.setattr(trainjob_launch, "load_client", lambda: api_for(server))
    closed = closing(monkeypatch)
    for config, run_name in ((multinode(namespace=NS), "nightly-7"), (load_config(CONFIGS / "gpu.yaml"), "single-1")):
        server.job, server.requests, closed[:] = running_job(run_name), [], []
        finish.finish(config.model_dump_json(), "", run_name, "sqlite:///unused.db", "FAILED")  # a cancelled run
        assert closed == [(run_name, "FAILED")]
        if config.cluster.train_nodes > 1:
            [(_, _, query, _)] = server.calls("GET", TRAINJOBS)
            assert query == {"labelSelector": f"{trainjob.RUN_LABEL}=nightly-7"}
            assert [path for _, path, _, _ in server.calls("DELETE")] == [TRAINJOBS + "/gpu-multinode-abcde"]
        else:  # one node trains in the step's own pod: no TrainJob, no Kubernetes call
            assert server.requests == [] and server.job is not None


def test_exit_handler_closes_the_mlflow_run_even_when_kubernetes_refuses(monkeypatch):
    def no_credentials():
        raise trainjob_launch.TrainJobError("no Kubernetes credentials", "", "")

    monkeypatch.setattr(trainjob_launch, "load_client", no_credentials)
    closed = closing(monkeypatch)
    with pytest.raises(trainjob_launch.TrainJobError, match="no Kubernetes credentials"):
        finish.finish(multinode(namespace=NS).model_dump_json(), "nightly-8", "kfp-run-1", "", "SUCCEEDED")
    assert closed == [("nightly-8", "FINISHED")]


RESULT = {
    "final_loss": 2.5, "losses": [3.0, 2.5], "steps": 2, "tokens": 2097152, "tokens_per_s": 1e6, "steps_per_s": 1.0,
    "world_size": 32, "zero_stage": 2, "precision": "bf16", "parameters": 760_000_000, "tokens_per_step": 1048576,
    "fixed_batch_loss_engine": 2.4, "fixed_batch_loss_consolidated": 2.4, "checkpoint_uri": "/data/x",
    "checkpoint_tag": "step-2", "data_digest": "d", "duration_s": 2.0,
}  # fmt: skip


def test_a_documents_manifest_is_refused_before_a_trainjob_is_requested(tmp_path, monkeypatch):
    import re

    from components.manifest import Manifest
    from components.train.preflight import PreflightError
    from pipelines.steps import train

    server = FakeApiServer([status("Failed", "FailedJobs", "node-0 failed")])  # were it launched: fails at once
    monkeypatch.setattr(cluster, "SERVICE_ACCOUNT_NAMESPACE", tmp_path / "absent")
    monkeypatch.setattr(trainjob_launch, "launch", functools.partial(
        trainjob_launch.launch, api=api_for(server), poll_s=0.01, handle_signals=False, log=lambda line: None))  # fmt: skip
    documents = str(tmp_path / "clean" / "manifest.json")  # the clean step's output, not the tokenizer's
    Manifest(kind="documents", root=str(tmp_path / "clean")).save(documents)
    with pytest.raises(PreflightError, match=re.escape(f"training data {documents}: a 'documents' manifest, not one of ")):
        train.run(multinode(namespace=NS), documents, str(tmp_path / "train"))
    assert not server.calls("POST") and not server.calls("GET")
