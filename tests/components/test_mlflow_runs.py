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
