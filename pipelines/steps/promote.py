"""Step `promote`: move the `champion` alias to the new version (the DAG runs it only when the
register step's gate passed; by hand, `homegrown register` promotes unless --no-promote). The new
champion is first tagged with the version it replaces (history.PREVIOUS_TAG), which is what
`homegrown rollback` moves the alias back to."""

from components import mlflow_runs
from pipelines.config import RunConfig
from pipelines.steps import common


@common.component
def promote_op(config_json: str, tracking_uri: str, parent_run_id: str, version: str):
    """Move the `champion` alias to the new version (only reached when the gate passed)."""
    from pipelines.steps import promote

    promote.promote(config_json, tracking_uri, parent_run_id, version)


def run(config: RunConfig, version_id: str, target: common.MlflowTarget) -> str | None:
    """Tag this version with the current champion, move `champion` to it and tag the pipeline run
    with it; returns the version that was champion before (None: none, or this one already)."""
    from components.register import history, registry

    mlflow_runs.configure(target.uri)
    name = config.registry.model_name
    current = registry.champion_version(name)
    previous = None if current is None or str(current.version) == str(version_id) else str(current.version)
    # the tag first: a champion moved without it could not be rolled back
    history.record_previous(name, version_id, previous)
    registry.promote(name, version_id)
    with mlflow_runs.fail_fast():
        common.tag_parent(target, {"homegrown.champion_version": version_id})
    return previous


def promote(config_json: str, tracking_uri: str, parent_run_id: str, version: str) -> None:
    """The KFP task."""
    config = common.config_from_json(config_json)
    previous = run(config, version, common.mlflow_target(config, tracking_uri, parent_run_id))
    after = f" (after v{previous})" if previous else ""
    common.say(f"promote: {config.registry.model_name} v{version} is now champion{after}")
