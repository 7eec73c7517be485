"""`homegrown rollback NAME`: the champion alias moves back to the previous champion (a real SQLite
MLflow registry) and the InferenceService with it (the fake KServe API), or says why it cannot."""

from __future__ import annotations

import pytest

from components.register import history
from components.serve import deploy as rollout
from pipelines import cli, rollback
from pipelines.config import parse_config
from pipelines.steps import common, promote
from tests.components.test_serve_deploy import Endpoint, KServeApi, spec
from tests.components.test_serve_history import register_versions
from tests.kube_api import api_for


@pytest.fixture
def promoted(sqlite_uri, tmp_path):
    """Versions 1 and 2 of `lm`, promoted in turn by the promote step: 2 is champion after 1."""
    from mlflow.tracking import MlflowClient

    register_versions(sqlite_uri, tmp_path, "lm", 2)
    config = parse_config({"corpus": "c", "registry": {"model_name": "lm"}}, "<test>")
    for version in ("1", "2"):
        promote.run(config, version, common.MlflowTarget(sqlite_uri))
    return MlflowClient(sqlite_uri)


def champion(client) -> str:
    return str(client.get_model_version_by_alias("lm", "champion").version)


def test_rollback_moves_the_alias_and_the_inference_service(promoted, sqlite_uri, bucket):
    server, endpoint = KServeApi(["ready"]), Endpoint()
    rollout.deploy(spec("2", storage_uri=f"s3://{bucket}/runs/serving/lm/v2"), api_for(server),
                   endpoint.client(), poll_s=0, log=lambda _: None)  # what the deploy step left  # fmt: skip
    lines: list[str] = []
    done = rollback.rollback("lm", sqlite_uri, "homegrown", "ml", data_root=f"s3://{bucket}/runs", api=api_for(server),
                             http=endpoint.client(), poll_s=0, log=lines.append)  # fmt: skip

    v1 = f"s3://{bucket}/runs/serving/lm/v1"
    assert done == rollback.RollbackOutcome("lm", "2", "1", "ml/homegrown", "http://homegrown.ml.example.com", v1)
    assert champion(promoted) == "1"
    assert server.calls("PATCH")[-1][3] == {
        "metadata": {"labels": {"homegrown/model-version": "1"}, "annotations": {"homegrown/serving-uri": v1}},
        "spec": {"predictor": {"canaryTrafficPercent": 100, "model": {"storageUri": v1}}},
    }  # fmt: skip
    tags = promoted.get_model_version("lm", "1").tags
    assert tags[history.SERVING_TAG] == v1  # written on the way: version 1 was never deployed
    assert tags[history.DEPLOYED_TAG].endswith(" ml/homegrown http://homegrown.ml.example.com")
    assert lines[0] == "[rollback] lm: champion moved from version 2 back to 1"
    assert str(endpoint.requests[-1].url).endswith("/openai/v1/completions")


def test_the_command_without_a_previous_champion_changes_nothing(sqlite_uri, tmp_path, capsys):
    from mlflow.tracking import MlflowClient

    register_versions(sqlite_uri, tmp_path, "lm", 1)
    assert cli.main(["rollback", "lm", "--tracking-uri", sqlite_uri]) == 2
    assert "homegrown rollback: 'lm' has no champion: nothing to roll back" in capsys.readouterr().err
    MlflowClient(sqlite_uri).set_registered_model_alias("lm", "champion", "1")
    assert cli.main(["rollback", "lm", "--tracking-uri", sqlite_uri]) == 2
    assert "records no previous champion" in capsys.readouterr().err
    assert str(MlflowClient(sqlite_uri).get_model_version_by_alias("lm", "champion").version) == "1"


def test_the_command_moves_the_alias_even_without_a_cluster(promoted, sqlite_uri, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    assert cli.main(["rollback", "lm", "--tracking-uri", sqlite_uri]) == 0
    out = capsys.readouterr().out
    assert "[rollback] InferenceService default/lm not checked (no Kubernetes credentials" in out
    assert out.rstrip().endswith("lm: champion is version 1 again (was 2)")
    assert champion(promoted) == "1"
    # asked for the InferenceService by name: not reaching it is an error (the alias has moved)
    assert cli.main(["rollback", "lm", "--tracking-uri", sqlite_uri, "--namespace", "ml"]) == 2  # no more history
    promoted.set_registered_model_alias("lm", "champion", "2")
    assert cli.main(["rollback", "lm", "--tracking-uri", sqlite_uri, "--namespace", "ml"]) == 1
    err = capsys.readouterr().err
    assert "the champion alias moved, but the InferenceService did not follow: no Kubernetes credentials" in err


def test_an_inference_service_without_a_serving_copy_needs_data_root(promoted, sqlite_uri):
    server = KServeApi(["ready"])
    rollout.deploy(spec("2", storage_uri="s3://b/runs/serving/lm/v2"), api_for(server),
                   Endpoint().client(), poll_s=0, log=lambda _: None)  # fmt: skip
    with pytest.raises(rollout.DeployError, match=r"version 1 of 'lm' has no serving copy .*rerun with --data-root"):
        rollback.rollback("lm", sqlite_uri, "homegrown", "ml", api=api_for(server), log=lambda _: None)
    assert champion(promoted) == "1" and len(server.calls("PATCH")) == 0


def test_an_inference_service_homegrown_did_not_create_is_left_alone(promoted, sqlite_uri):
    server = KServeApi(["ready"])
    rollout.deploy(spec("2", storage_uri="s3://b/runs/serving/lm/v2"), api_for(server),
                   Endpoint().client(), poll_s=0, log=lambda _: None)  # fmt: skip
    del server.isvc["metadata"]["labels"]["app.kubernetes.io/managed-by"]  # someone else's, by that name
    with pytest.raises(rollout.DeployError, match="exists but homegrown did not create it .* left as it is"):
        rollback.rollback("lm", sqlite_uri, "homegrown", "ml", data_root="s3://b/runs", api=api_for(server),
                          log=lambda _: None)  # fmt: skip
    assert champion(promoted) == "1" and len(server.calls("PATCH")) == 0


def test_a_serving_copy_on_the_data_pvc_is_read_from_the_claim(promoted, sqlite_uri, tmp_path, monkeypatch):
    """The deploy step wrote /data/... and deployed pvc://<claim>/...: rollback maps its copy the same way."""
    server, endpoint = KServeApi(["ready"]), Endpoint()
    rollout.deploy(spec("2", storage_uri="pvc://homegrown-data/runs/serving/lm/v2"), api_for(server),
                   endpoint.client(), poll_s=0, log=lambda _: None)  # fmt: skip
    promoted.set_model_version_tag("lm", "1", history.SERVING_TAG, "/data/runs/serving/lm/v1")
    monkeypatch.setattr(history, "has_files", lambda uri: uri == "/data/runs/serving/lm/v1")
    done = rollback.rollback("lm", sqlite_uri, "homegrown", "ml", api=api_for(server), http=endpoint.client(),
                             poll_s=0, log=lambda _: None)  # fmt: skip
    assert done.storage_uri == "pvc://homegrown-data/runs/serving/lm/v1"
    assert server.isvc["spec"]["predictor"]["model"]["storageUri"] == "pvc://homegrown-data/runs/serving/lm/v1"
