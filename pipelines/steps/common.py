"""What every pipeline step shares: where it logs, its nested MLflow run, its typed result,
the KFP outputs written from that result, the config JSON round trip and the by-hand command's
plumbing. A step module (pipelines/steps/<step>.py) holds only what is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import subprocess
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Generic, Iterator, Sequence, TypeVar

import yaml
from kfp import dsl

from components import mlflow_runs, storage
from components.manifest import Manifest
from pipelines.config import ConfigError, RunConfig, load_config, merge, parse_config

BASE_IMAGE = "homegrown/steps:0.1.0"  # replaced per run from cluster.image (pipelines.cluster)
T = TypeVar("T")


def component(func: Callable) -> Any:
    """A KFP component of the steps' image. Its body imports from the installed package (the
    image has homegrown installed), because KFP ships each function's source on its own; nothing
    is pip-installed at run time. Inside a running task (_KFP_RUNTIME=true) the SDK has no
    decorators: the function stays as it is, so a step module imports there too."""
    decorate = getattr(dsl, "component", None)
    if decorate is None:
        return func
    return decorate(func, base_image=BASE_IMAGE, install_kfp_package=False)


@dataclass(frozen=True)
class MlflowTarget:
    """Where a step logs: the tracking URI, the parent (pipeline) run if any, the experiment."""

    uri: str
    parent_run_id: str | None = None
    experiment: str = "homegrown"


def mlflow_target(config: RunConfig, tracking_uri: str = "", parent_run_id: str = "") -> MlflowTarget:
    """The target of a step: `tracking_uri`, else the config's, else $MLFLOW_TRACKING_URI, else
    SQLite under ./runs (mlflow_runs.resolve_tracking_uri); "" parent = a top-level run."""
    uri = mlflow_runs.resolve_tracking_uri(tracking_uri or config.mlflow.tracking_uri)
    return MlflowTarget(uri, parent_run_id or None, config.mlflow.experiment)


def config_from_json(config_json: str) -> RunConfig:
    """The run config a KFP component receives as `config_json` (RunConfig.model_dump_json())."""
    return RunConfig.model_validate_json(config_json)


def effective_run_name(run_name: str, kfp_run_name: str) -> str:
    """The pipeline run's name: the one given at submission, else KFP's own run name."""
    return run_name or kfp_run_name


def step_dir(run_root: str, step: str) -> str:
    """Where a step of a pipeline run writes: <data_root>/<run>/<step>."""
    return storage.join(run_root, step)


def code_version() -> str:
    """The package version, plus the git commit when run from a checkout."""
    ver = version("homegrown")
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{ver}+{sha}" if sha else ver


def say(message: str) -> None:
    """A progress line the local console shows (see pipelines.local.ConsoleFilter)."""
    print(f"[homegrown] {message}", flush=True)


# ---- the typed result of a step ----------------------------------------------------------


@dataclass(frozen=True)
class DatasetRef:
    """A manifest logged as an MLflow dataset input (the runs table's Datasets column)."""

    manifest_uri: str
    name: str
    digest: str
    context: str  # "training" | "evaluation"


@dataclass(frozen=True)
class Output:
    """One KFP output artifact of a step: the file's text and the artifact's metadata."""

    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class StepResult(Generic[T]):
    """What a step did, logged once (`logged`) and published once (`publish`).

    value: the components/ function's own result (CleanResult, TrainResult, ...).
    metrics: the step run's MLflow metrics, also the KFP Metrics artifact (same keys).
    headline: figures also logged on the pipeline's parent run (e.g. train.final_loss).
    artifacts: local files logged to the step run (S3 URIs are skipped: they stay where they are).
    outputs: KFP output name -> its content. The step's params are logged when its run opens
    (`step_run`), so a failed step still shows what it ran with.
    """

    value: T
    summary: str  # the progress line, e.g. "train: 20 steps on 2 ranks, final loss 5.1"
    metrics: dict[str, float] = field(default_factory=dict)
    headline: dict[str, float] = field(default_factory=dict)
    artifacts: list[str] = field(default_factory=list)
    parent_tags: dict[str, str] = field(default_factory=dict)
    datasets: list[DatasetRef] = field(default_factory=list)
    outputs: dict[str, Output] = field(default_factory=dict)


def manifest_output(manifest_uri: str) -> Output:
    """A manifest as a KFP Dataset: its text, and its headline facts as metadata."""
    manifest = Manifest.load(manifest_uri)
    metadata = {"digest": manifest.digest, "records": manifest.records, "shards": len(manifest.shards),
                "root": manifest.root}  # fmt: skip
    return Output(storage.read_text(manifest_uri), metadata)


# ---- MLflow ------------------------------------------------------------------------------


# The pipeline run's headline: figures a step's run measured, also on the parent run under short
# names that stay the same from run to run, so MLflow's compare view of two pipeline runs (select
# the parent runs, Compare) lines them up. {step: {step run's metric: parent run's metric}}; a pair
# ending in `*` maps a family (bits_per_byte_<lang> -> eval.bits_per_byte_<lang>). Each step logs
# its part when it ends (`headline`); the finish step logs again whatever a step run holds and the
# parent lacks, so the parent's headline is complete whichever steps ran.
HEADLINE: dict[str, dict[str, str]] = {
    "clean": {"records_in": "clean.documents_in", "kept": "clean.documents_kept"},
    "tokenizer": {"vocab_size": "tokenizer.vocab_size", "train_tokens": "tokenizer.train_tokens"},
    "train": {"final_loss": "train.final_loss", "tokens": "train.tokens"},
    "sft-data": {"records_in": "sft.conversations_in", "kept": "sft.conversations_kept"},
    "sft-tokenize": {"assistant_tokens": "sft.assistant_tokens_available"},
    "sft-train": {"final_loss": "sft-train.final_loss", "tokens": "sft-train.tokens"},
    "evaluate": {"loss": "eval.loss", "perplexity": "eval.perplexity", "bits_per_byte": "eval.bits_per_byte",
                 "bits_per_byte_*": "eval.bits_per_byte_*"},
    "register": {"gate_passed": "gate.passed"},
}  # fmt: skip


def headline(step: str, metrics: dict[str, float]) -> dict[str, float]:
    """The parent run's figures (HEADLINE) among a `step` run's `metrics` (original names)."""
    out: dict[str, float] = {}
    for name, value in metrics.items():
        for ours, theirs in HEADLINE.get(step, {}).items():
            if ours == name:
                out[theirs] = float(value)
            elif ours.endswith("*") and name.startswith(ours[:-1]) and len(name) > len(ours) - 1:
                out[theirs[:-1] + name[len(ours) - 1 :]] = float(value)
    return out


def complete_headline(uri: str, parent_run_id: str) -> dict[str, float]:
    """Log on the parent run the headline figures (HEADLINE) its step runs hold and it lacks or
    holds with another value (a step rerun after it was logged), each step's latest run read;
    returns the figures logged ({} when it was complete)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    parent = client.get_run(parent_run_id)
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_run_id}'",
                                  order_by=["attributes.start_time ASC"])  # fmt: skip
    latest = {run.data.tags.get("homegrown.step"): run for run in children}  # later runs of a step win
    figures: dict[str, float] = {}
    for step, run in latest.items():
        if step in HEADLINE and run.data.metrics:
            names = mlflow_runs.read_names(client, run.info.run_id)  # keys from data back to their originals
            figures.update(headline(step, {names.get(k, k): v for k, v in run.data.metrics.items()}))
    have = parent.data.metrics
    missing = {k: v for k, v in figures.items() if not _same(have.get(mlflow_runs.mlflow_key(k)), v)}
    if missing:
        mlflow_runs.log_metrics(client, parent_run_id, missing)
    return missing


def _same(logged: float | None, value: float) -> bool:
    return logged is not None and (logged == value or (math.isnan(logged) and math.isnan(value)))


@contextlib.contextmanager
def step_run(name: str, target: MlflowTarget | None, params: dict[str, Any],
             start_time: float | None = None) -> Iterator[Any]:
    """The step's MLflow run (nested under the pipeline's), its params logged under `name.`;
    yields the active run, or None when untracked (target None). `start_time`: when the step's
    work began (seconds since the epoch), for a step tracked only once its phases are done."""
    if target is None:
        yield None
        return
    with mlflow_runs.step_run(name, target.uri, target.parent_run_id, target.experiment, start_time) as active:
        from mlflow.tracking import MlflowClient

        mlflow_runs.log_params(MlflowClient(target.uri), active.info.run_id, {name: params})
        yield active


def logged(target: MlflowTarget | None, result: StepResult[T]) -> StepResult[T]:
    """Log a result into the active step run: metrics and files there; headline figures, tags
    and datasets on the parent run too. Names from data (languages, sources, reasons) become
    valid keys (mlflow_runs.mlflow_key), the originals in each run's mlflow_names.json."""
    if target is None:
        return result
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(target.uri)
    mlflow_runs.log_metrics(client, mlflow.active_run().info.run_id, result.metrics)
    for uri in result.artifacts:
        if not storage.is_s3(uri) and Path(uri).exists():
            mlflow.log_artifact(uri)
    if target.parent_run_id and result.headline:
        mlflow_runs.log_metrics(client, target.parent_run_id, result.headline)
    tag_parent(target, result.parent_tags)
    for dataset in result.datasets:
        _log_dataset(target, dataset)
    return result


def tag_parent(target: MlflowTarget | None, tags: dict[str, str]) -> None:
    """Tags on the pipeline's parent run (nothing for a step run by hand)."""
    if target is None or not target.parent_run_id or not tags:
        return
    from mlflow.tracking import MlflowClient

    mlflow_runs.set_tags(MlflowClient(target.uri), target.parent_run_id, tags)


def _log_dataset(target: MlflowTarget, ref: DatasetRef) -> None:
    """A manifest as a dataset input of the step run and the pipeline run: named, digested,
    pointing at the manifest."""
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    dataset = MetaDataset(source=resolve_dataset_source(ref.manifest_uri), name=ref.name, digest=ref.digest[:36])
    mlflow.log_input(dataset, context=ref.context)
    if target.parent_run_id:
        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", ref.context)])
        MlflowClient(target.uri).log_inputs(target.parent_run_id, datasets=[entity])


# ---- KFP ---------------------------------------------------------------------------------


def publish(result: StepResult[Any], metrics: Any = None, **artifacts: Any) -> None:
    """Write a result into the KFP task's output artifacts (each `artifacts[name]` gets
    `result.outputs[name]`), its metrics into the Metrics artifact, and say its summary.

    KFP scalar metrics use the keys the step's MLflow run has (mlflow_runs.mlflow_key).
    Raises KeyError when a KFP output has no content in the result."""
    for name, artifact in artifacts.items():
        output = result.outputs[name]
        storage.write_text(artifact.path, output.text)
        artifact.metadata.update(output.metadata)
    if metrics is not None:
        for key, value in result.metrics.items():
            metrics.log_metric(mlflow_runs.mlflow_key(key), float(value))
    say(result.summary)


# ---- the by-hand commands (`homegrown <step>`) -------------------------------------------


@dataclass(frozen=True)
class StepCommand:
    """A step's `homegrown <name>` subcommand. The CLI adds --config and --set, then
    `add_arguments`; `handler(args)` returns the exit status (errors: see pipelines.cli.main)."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`a.b=value` pairs as a nested dict; values parsed as YAML scalars. Raises ConfigError
    for a pair without `=`."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {pair!r}: expected KEY=VALUE, e.g. --set train.max_steps=10")
        node = out
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(raw)
    return out


def config_from_args(args: argparse.Namespace, **defaults: Any) -> RunConfig:
    """The run config of a command: --config FILE (or the defaults), `defaults` under --set."""
    values = merge(defaults, overrides(getattr(args, "set", None) or []))  # --set sft.seq_len keeps sft.data
    if getattr(args, "config", None):
        return load_config(args.config, values)
    return parse_config(values, "<defaults>")


def add_tracking_arguments(parser: argparse.ArgumentParser) -> None:
    """--tracking-uri / --mlflow: a step run by hand logs to MLflow only when asked."""
    parser.add_argument("--tracking-uri", help="log this step to MLflow at this URI")
    parser.add_argument("--mlflow", action="store_true", help="log to MLflow at the default URI")


def target_from_args(args: argparse.Namespace, config: RunConfig) -> MlflowTarget | None:
    """Where a step run by hand logs: None unless --tracking-uri, --mlflow or the config's
    mlflow.tracking_uri asks for MLflow."""
    if not (args.tracking_uri or config.mlflow.tracking_uri or getattr(args, "mlflow", False)):
        return None
    return mlflow_target(config, args.tracking_uri or "")


def print_values(title: str, values: dict[str, Any]) -> None:
    """A titled two-column table: whole floats as integers, other floats to 4 places."""
    print(f"\n{title}")
    for key, value in values.items():
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        print(f"  {key:<28} {value:.4f}" if isinstance(value, float) else f"  {key:<28} {value}")
