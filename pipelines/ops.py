"""The KFP components: thin adapters, each one call into pipelines.adapters.

Bodies import inside the function because KFP ships each function's source on its own;
the image (docker/) has homegrown installed, so nothing is pip-installed at run time.
"""

from typing import NamedTuple

from kfp import dsl
from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output, PipelineTaskFinalStatus

BASE_IMAGE = "homegrown/steps:0.1.0"  # replaced per run from cluster.image


def _component(func):
    return dsl.component(func, base_image=BASE_IMAGE, install_kfp_package=False)


@_component
def start_op(
    config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, data_root: str
) -> NamedTuple("StartOutputs", [("run_name", str), ("parent_run_id", str), ("run_root", str)]):
    """Create the pipeline run's parent MLflow run and choose where its data goes."""
    from collections import namedtuple

    from pipelines import adapters

    outputs = namedtuple("StartOutputs", ["run_name", "parent_run_id", "run_root"])
    return outputs(*adapters.start(config_json, run_name, kfp_run_name, tracking_uri, data_root))


@_component
def finish_op(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, status: PipelineTaskFinalStatus):
    """Exit handler: close the parent MLflow run as FINISHED or FAILED."""
    from pipelines import adapters

    adapters.finish(config_json, run_name, kfp_run_name, tracking_uri, status.state)


@_component
def clean_plan_op(config_json: str, run_root: str) -> list:
    """List the corpus's input shards: the work items of the clean fan-out."""
    from pipelines import adapters

    return adapters.clean_plan(config_json, run_root)


@_component
def clean_shard_op(config_json: str, shard: dict):
    """Clean phase 1 for one input shard: read, quarantine, normalise, filter; dedup keys."""
    from pipelines import adapters

    adapters.clean_prepare(config_json, shard)


@_component
def clean_dedup_op(config_json: str, run_root: str, shards: list):
    """Clean phase 2: corpus-wide duplicates, a drop list per shard."""
    from pipelines import adapters

    adapters.clean_dedup(config_json, run_root, shards)


@_component
def clean_write_op(config_json: str, shard: dict):
    """Clean phase 3 for one shard: drop its duplicates, write the final shards."""
    from pipelines import adapters

    adapters.clean_finalize(config_json, shard)


@_component
def clean_collect_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str, shards: list,
    documents: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Clean phase 4: stats, samples and the manifest of the cleaned corpus; tracked in MLflow."""
    from pipelines import adapters

    adapters.clean_collect(config_json, run_root, tracking_uri, parent_run_id, shards, documents, metrics)


@_component
def tokenize_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    documents: Input[Dataset], packed: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Train a byte-level BPE tokenizer, hold out the eval split, pack training sequences."""
    from pipelines import adapters

    adapters.tokenize(config_json, run_root, tracking_uri, parent_run_id, documents, packed, metrics)


@_component
def train_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    packed: Input[Dataset], model: Output[Model], metrics: Output[Metrics],
):  # fmt: skip
    """Train the causal LM with DeepSpeed (torchrun, N ranks) and consolidate it to safetensors."""
    from pipelines import adapters

    adapters.train(config_json, run_root, tracking_uri, parent_run_id, packed, model, metrics)


@_component
def evaluate_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    packed: Input[Dataset], model: Input[Model],
    results: Output[Artifact], report: Output[Markdown], plots: Output[HTML], metrics: Output[Metrics],
):  # fmt: skip
    """Bits-per-byte, perplexity and samples on the held-out set, challenger and champion."""
    from pipelines import adapters

    adapters.evaluate(config_json, run_root, tracking_uri, parent_run_id, packed, model, results, report, plots,
                      metrics)  # fmt: skip


@_component
def register_op(
    config_json: str, run_name: str, tracking_uri: str, parent_run_id: str,
    documents: Input[Dataset], packed: Input[Dataset], model: Input[Model], results: Input[Artifact],
    gate: Output[Markdown],
) -> NamedTuple("RegisterOutputs", [("decision", str), ("version", str)]):  # fmt: skip
    """Register the model with alias `candidate` and decide the champion gate."""
    from collections import namedtuple

    from pipelines import adapters

    outputs = namedtuple("RegisterOutputs", ["decision", "version"])
    return outputs(*adapters.register(config_json, run_name, tracking_uri, parent_run_id,
                                      documents, packed, model, results, gate))


@_component
def promote_op(config_json: str, tracking_uri: str, parent_run_id: str, version: str):
    """Move the `champion` alias to the new version (only reached when the gate passed)."""
    from pipelines import adapters

    adapters.promote(config_json, tracking_uri, parent_run_id, version)
