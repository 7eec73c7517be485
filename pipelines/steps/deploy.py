"""Step `deploy`: serve the new champion as a KServe InferenceService (the DAG runs it after promote,
only when the gate passed and the config has `serve:`). It writes the version's serving copy (a flat
Hugging Face model directory under <data_root>/serving/, history.serving_copy), creates or updates the
InferenceService (a new champion starts as a canary), waits for Ready, sends one completion, and
records the endpoint in its MLflow run and as the model version's `deployed` tag. By hand, the same
rollout in reverse is `homegrown rollback` (pipelines/rollback.py).
"""

from typing import TYPE_CHECKING, Any, Callable

from components import mlflow_runs
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.serve.deploy import DeployOutcome


@common.component
def deploy_op(config_json: str, tracking_uri: str, parent_run_id: str, version: str, data_root: str):
    """Deploy the champion version as a KServe InferenceService (only reached when the gate passed)."""
    from pipelines.steps import deploy

    deploy.deploy(config_json, tracking_uri, parent_run_id, version, data_root)


def run(config: RunConfig, version: str, target: common.MlflowTarget, data_root: str = "", api: Any = None,
        http: Any = None, poll_s: float = 5.0, log: Callable[[str], None] = print,
        ) -> "common.StepResult[DeployOutcome]":  # fmt: skip
    """Publish the serving copy, roll out the InferenceService, smoke-test it, record it.
    `api`/`http`: a kubernetes ApiClient and an httpx.Client (default: the pod's credentials, a
    fresh client). Raises ValueError (no serve section or namespace), DeployError, HistoryError."""
    from components.register import history
    from components.serve import deploy as rollout
    from pipelines import cluster

    serve = config.serve
    if serve is None:
        raise ValueError("serve: not set in the run config: nothing to deploy")
    name = config.registry.model_name
    mlflow_runs.configure(target.uri)
    params = {**serve.model_dump(), "model_version": version}
    with common.step_run("deploy", target, params) as active, mlflow_runs.fail_fast():
        uri = history.serving_copy(name, version, data_root or config.data_root, log)
        spec = cluster.inference_service_spec(config, version, uri, active.info.run_id if active else None)
        smoke = rollout.Smoke(serve.smoke_prompt, serve.smoke_max_tokens, serve.smoke_timeout_s)
        outcome = rollout.deploy(spec, api, http, smoke, poll_s=poll_s, timeout_s=serve.ready_timeout_s, log=log)
        where = f"{outcome.namespace}/{outcome.name}"
        history.mark_deployed(name, version, where, outcome.url)
        if active is not None:
            from mlflow.tracking import MlflowClient

            mlflow_runs.log_params(MlflowClient(target.uri), active.info.run_id, {"deployed": {
                "inference_service": outcome.name, "namespace": outcome.namespace, "url": outcome.url,
                "revision": outcome.revision, "previous_revision": outcome.previous_revision or "-",
                "storage_uri": outcome.storage_uri, "action": outcome.action,
            }})  # fmt: skip
        canary = f", canary at {outcome.traffic_percent} % (rest on {outcome.previous_revision})" \
            if outcome.traffic_percent < 100 else ", all traffic"  # fmt: skip
        return common.logged(target, common.StepResult(
            outcome,
            f"deploy: {name} v{version} served by InferenceService {where} at {outcome.url} "
            f"(revision {outcome.revision}{canary})",
            {"traffic_percent": float(outcome.traffic_percent), "canary": float(outcome.traffic_percent < 100),
             "model_version": float(version) if version.isdigit() else 0.0},
            parent_tags={"homegrown.inference_service": where, "homegrown.endpoint": outcome.url,
                         "homegrown.deployed_version": version},
        ))  # fmt: skip


def deploy(config_json: str, tracking_uri: str, parent_run_id: str, version: str, data_root: str) -> None:
    """The KFP task."""
    config = common.config_from_json(config_json)
    result = run(config, version, common.mlflow_target(config, tracking_uri, parent_run_id), data_root)
    common.say(result.summary)
