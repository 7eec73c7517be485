"""Step `start`: the pipeline run's parent MLflow run, and where the run's data goes."""

from datetime import datetime, timezone
from typing import NamedTuple

from components import mlflow_runs, storage
from pipelines.config import RunConfig
from pipelines.steps import common


@common.component
def start_op(
    config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, data_root: str
) -> NamedTuple("StartOutputs", [("run_name", str), ("parent_run_id", str), ("run_root", str)]):
    """Create the pipeline run's parent MLflow run and choose where its data goes."""
    from collections import namedtuple

    from pipelines.steps import start

    outputs = namedtuple("StartOutputs", ["run_name", "parent_run_id", "run_root"])
    return outputs(*start.start(config_json, run_name, kfp_run_name, tracking_uri, data_root))


def new_run_name(config: RunConfig) -> str:
    """<config name>-<UTC time>, e.g. demo-20260101-120000."""
    return f"{config.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def run(config: RunConfig, run_name: str, target: common.MlflowTarget, kfp_run: str = "") -> str:
    """Create the parent MLflow run of one pipeline run; returns its id."""
    tags = {
        "homegrown.run_name": run_name,
        "homegrown.config_digest": config.digest,
        "homegrown.code_version": common.code_version(),
        "homegrown.stages": ",".join(config.stages),
        "mlflow.note.content": f"homegrown pipeline run `{run_name}`: "
        + ", then ".join(f"{stage} on `{uri}`" for stage, uri in _stage_inputs(config)),
    }
    if config.corpus:
        tags["homegrown.corpus"] = config.corpus
    if config.sft:
        tags["homegrown.sft_data"] = config.sft.data
    if kfp_run:
        tags["kfp.run_name"] = kfp_run
    return mlflow_runs.start_pipeline_run(target.uri, target.experiment, run_name, tags, config.model_dump(mode="json"))


def _stage_inputs(config: RunConfig) -> list[tuple[str, str]]:
    """(stage, what it reads) in run order: pretraining's corpus, instruction tuning's data."""
    inputs = {"pretrain": config.corpus, "sft": config.sft.data if config.sft else None}
    return [(stage, str(inputs[stage])) for stage in config.stages]


def start(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, data_root: str) -> tuple[str, str, str]:
    """The KFP task: returns (run name, parent MLflow run id, run root URI)."""
    config = common.config_from_json(config_json)
    name = common.effective_run_name(run_name, kfp_run_name)
    parent = run(config, name, common.mlflow_target(config, tracking_uri), kfp_run=kfp_run_name)
    return name, parent, storage.join(data_root or config.data_root, name)
