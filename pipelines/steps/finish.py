"""Step `finish`, the DAG's exit handler: delete the TrainJobs the run left unfinished (multi-node
training), complete the parent MLflow run's headline figures from its step runs
(common.HEADLINE), then close it as FINISHED or FAILED."""

from kfp.dsl import PipelineTaskFinalStatus

from components import mlflow_runs
from pipelines.config import RunConfig
from pipelines.steps import common


@common.component
def finish_op(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, status: PipelineTaskFinalStatus):
    """Exit handler: free what the run left on the cluster, close the parent MLflow run."""
    from pipelines.steps import finish

    finish.finish(config_json, run_name, kfp_run_name, tracking_uri, status.state)


def finish(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, state: str) -> None:
    """The KFP task. A TrainJob whose launcher was killed outright (no SIGTERM reached it) would
    hold its GPUs: with cluster.train_nodes > 1 the run's unfinished TrainJobs are deleted first.
    The MLflow run is closed even when that fails; the failure is raised afterwards."""
    config = common.config_from_json(config_json)
    name = common.effective_run_name(run_name, kfp_run_name)
    failure: Exception | None = None
    if config.cluster.train_nodes > 1:
        from pipelines import cluster

        try:
            cluster.delete_unfinished_trainjobs(config, name)
        except Exception as exc:  # noqa: BLE001 -- the MLflow run is closed first, then this is raised
            failure = exc
    close_parent_run(config, name, tracking_uri, "FINISHED" if state == "SUCCEEDED" else "FAILED")
    if failure is not None:
        raise failure


def close_parent_run(config: RunConfig, run_name: str, tracking_uri: str, status: str) -> None:
    """End the parent runs of this pipeline run (found by run name and config digest), their
    headline completed first (common.complete_headline: whatever steps ran, a failed run's too).
    A headline that cannot be completed is reported, and the run closed all the same."""
    target = common.mlflow_target(config, tracking_uri)
    mlflow_runs.configure(target.uri)
    from mlflow.tracking import MlflowClient

    runs = MlflowClient(target.uri).search_runs(
        [mlflow_runs.ensure_experiment(target.uri, target.experiment)],
        filter_string=f"tags.`homegrown.run_name` = '{run_name}' and tags.`homegrown.config_digest` = '{config.digest}'",
    )
    for run in runs:
        try:
            logged = common.complete_headline(target.uri, run.info.run_id)
        except Exception as exc:  # noqa: BLE001 -- closing the run matters more than its summary
            common.say(f"finish: the headline of MLflow run {run.info.run_id} is incomplete: {exc}")
        else:
            if logged:
                common.say(f"finish: {len(logged)} headline figures added to MLflow run {run.info.run_id}")
        mlflow_runs.end_pipeline_run(target.uri, run.info.run_id, status)
