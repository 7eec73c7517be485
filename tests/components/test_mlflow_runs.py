import mlflow
from mlflow.tracking import MlflowClient

from components import mlflow_runs


def test_step_runs_nest_under_the_pipeline_run(sqlite_uri):
    parent = mlflow_runs.start_pipeline_run(sqlite_uri, "exp", "run-1", {"homegrown.run_name": "run-1"},
                                         {"train": {"zero_stage": 2}, "s3": {"secret_key": "hunter2"}})
    with mlflow_runs.step_run("clean", sqlite_uri, parent, "exp") as run:
        mlflow.log_metric("kept", 3)
    child = MlflowClient(sqlite_uri).get_run(run.info.run_id)
    assert child.data.tags[mlflow_runs.PARENT_TAG] == parent
    assert child.data.metrics == {"kept": 3.0}
    params = MlflowClient(sqlite_uri).get_run(parent).data.params
    assert params == {"train.zero_stage": "2"}, "credentials never become params"


def test_injected_run_id_is_honoured(sqlite_uri, monkeypatch):
    experiment = mlflow_runs.ensure_experiment(sqlite_uri, "exp")
    injected = MlflowClient(sqlite_uri).create_run(experiment).info.run_id
    monkeypatch.setenv("MLFLOW_RUN_ID", injected)
    with mlflow_runs.step_run("train", sqlite_uri, "some-parent", "exp") as run:
        mlflow.log_metric("loss", 1.5)
    assert run.info.run_id == injected
    assert MlflowClient(sqlite_uri).get_run(injected).data.metrics["loss"] == 1.5


def test_credentials_in_uris_are_masked_wherever_shown():
    redact = mlflow_runs.redact_uri
    assert redact("http://admin:s3cret@127.0.0.1:5000") == "http://admin:***@127.0.0.1:5000"
    assert redact("https://user:p%40ss@mlflow.example.com/prefix/") == "https://user:***@mlflow.example.com/prefix/"
    assert redact("https://ghp_token123@mlflow.example.com") == "https://***@mlflow.example.com"
    assert redact("http://mlflow:5000/?api_token=abc&x=1") == "http://mlflow:5000/?api_token=***&x=1"
    for plain in ("http://127.0.0.1:5000", "sqlite:////tmp/runs/mlflow.db", "s3://bucket/runs", "not a uri", ""):
        assert redact(plain) == plain
    assert mlflow_runs.safe_params({"mlflow": {"tracking_uri": "http://admin:s3cret@mlflow:5000"}, "seed": 3}) == {
        "mlflow.tracking_uri": "http://admin:***@mlflow:5000", "seed": "3"}  # fmt: skip


def test_an_outage_names_the_server_without_its_password():
    import pytest
    import requests

    from tests.loopback import free_port

    uri = f"http://admin:s3cret@127.0.0.1:{free_port()}"
    with pytest.raises(mlflow_runs.TrackingUnavailable) as caught:
        with mlflow_runs.explain_outage(uri, "testing", "rerun it"):
            requests.get(uri + "/health", timeout=5)  # nothing listens: connection refused
    message = str(caught.value)
    assert "s3cret" not in message
    assert message.startswith(f"the MLflow tracking server at {uri.replace('s3cret', '***')} did not answer while "
                              "testing ([Errno 111] Connection refused). Once it is up (http://admin:***@127.0.0.1:")
