"""Step `promote`: move the `champion` alias to the new version (the DAG runs it only when the
register step's gate passed; by hand, `homegrown register` promotes unless --no-promote)."""

from components import mlflow_runs
from pipelines.config import RunConfig
from pipelines.steps import common


@common.component
def promote_op(config_json: str, tracking_uri: str, parent_run_id: str, version: str):
    """Move the `champion` alias to the new version (only reached when the gate passed)."""
    from pipelines.steps import promote

    promote.promote(config_json, tracking_uri, parent_run_id, version)


def run(config: RunConfig, version_id: str, target: common.MlflowTarget) -> None:
    """Move `champion` to this version and tag the pipeline run with it."""
    from components.register import registry

    mlflow_runs.configure(target.uri)
    registry.promote(config.registry.model_name, version_id)
    with mlflow_runs.fail_fast():
        common.tag_parent(target, {"homegrown.champion_version": version_id})


def promote(config_json: str, tracking_uri: str, parent_run_id: str, version: str) -> None:
    """The KFP task."""
    config = common.config_from_json(config_json)
    run(config, version, common.mlflow_target(config, tracking_uri, parent_run_id))
    common.say(f"promote: {config.registry.model_name} v{version} is now champion")
