"""Step `clean`, fanned out over the corpus's shards in five phases:
plan (list the input shards) → filter (per shard: read, quarantine, the per-document stages,
dedup keys and MinHash signatures) → dedup (corpus-wide: a drop list per shard) → write (per
shard: drop the duplicates, write the final shards) → collect (stats, samples, the manifest;
tracked in MLflow). By hand (`homegrown clean`) the phases run in one call, shards in processes.
"""

import argparse
from typing import TYPE_CHECKING, Any, Callable

from kfp.dsl import Dataset, Metrics, Output

from components import storage
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.clean.clean import CleanResult


@common.component
def clean_plan_op(config_json: str, run_root: str) -> list:
    """Clean, plan: list the corpus's input shards, the work items of the fan-out."""
    from pipelines.steps import clean

    return clean.plan(config_json, run_root)


@common.component
def clean_filter_op(config_json: str, shard: dict):
    """Clean, filter, one input shard: read, quarantine, run the stages; dedup keys, signatures."""
    from pipelines.steps import clean

    clean.filter_shard(config_json, shard)


@common.component
def clean_dedup_op(config_json: str, run_root: str, shards: list):
    """Clean, dedup: corpus-wide exact and near duplicates, a drop list per shard."""
    from pipelines.steps import clean

    clean.dedup(config_json, run_root, shards)


@common.component
def clean_write_op(config_json: str, shard: dict):
    """Clean, write, one shard: drop its duplicates, write the final shards."""
    from pipelines.steps import clean

    clean.write_shard(config_json, shard)


@common.component
def clean_collect_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str, shards: list,
    documents: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Clean, collect: stats, samples and the manifest of the cleaned corpus; tracked in MLflow."""
    from pipelines.steps import clean

    clean.collect(config_json, run_root, tracking_uri, parent_run_id, shards, documents, metrics)


def run(config: RunConfig, input_uri: str, output_uri: str, target: common.MlflowTarget | None = None,
        collected: "Callable[[], CleanResult] | None" = None, started: float | None = None,
        input_bytes: int | None = None) -> "common.StepResult[CleanResult]":
    """Clean the corpus (or, with `collected`, track phases that ran elsewhere and collect them:
    `started`, when the plan phase began in seconds since the epoch, starts the MLflow run so it
    lasts as long as the cleaning did). Metrics include seconds (wall time of the whole step),
    docs_per_s and, given the input's size `input_bytes`, input_bytes and bytes_per_s."""
    import time

    from components.clean.clean import clean_corpus

    begun = time.time()
    with common.step_run("clean", target, {"input": input_uri, **config.clean.model_dump()}, start_time=started):
        value = collected() if collected else clean_corpus(input_uri, output_uri, config.clean)
        stats, digest = value.stats, value.manifest.digest
        metrics = {**stats.as_metrics(), "shard_seconds": value.shard_seconds, "docs_per_core_s": value.docs_per_core_s}
        seconds = value.seconds or (time.time() - started if started is not None and started <= begun else 0.0)
        if seconds > 0:
            metrics.update(seconds=seconds, docs_per_s=stats.records_in / seconds)
            if input_bytes is not None:
                metrics.update(input_bytes=float(input_bytes), bytes_per_s=input_bytes / seconds)
        return common.logged(target, common.StepResult(
            value,
            f"clean: {stats.records_in} documents in, {stats.kept} kept, dropped {stats.dropped}, "
            f"quarantined {stats.quarantined}",
            metrics,
            headline=common.headline("clean", metrics),
            artifacts=[storage.join(output_uri, "stats.json"), value.manifest_uri],
            parent_tags={"homegrown.data_digest": digest},
            datasets=[common.DatasetRef(value.manifest_uri, "cleaned-corpus", digest, "training")],
            outputs={"documents": common.manifest_output(value.manifest_uri)},
        ))  # fmt: skip


# ---- the phases as KFP tasks ------------------------------------------------------------------


def output_uri(run_root: str) -> str:
    """Where the clean step of a pipeline run writes."""
    return common.step_dir(run_root, "clean")


def plan(config_json: str, run_root: str) -> list[dict]:
    """The input shards as loop items: {"index", "uri", ..., "run_root", "planned_at", "bytes"}:
    planned_at (seconds since the epoch) is when this phase began, bytes the shard's size (None
    when unknown); collect reads both for the step's duration and throughput."""
    import time

    from components.clean.clean import plan_shards

    planned_at = time.time()
    config = common.config_from_json(config_json)
    items = plan_shards(config.corpus, output_uri(run_root), config.clean)
    common.say(f"clean: {len(items)} input shards")
    # each item carries the run root: kfp's local runner hands a ParallelFor body the loop
    # item in place of any other task's output, so loop bodies take only pipeline inputs
    return [{**item, "run_root": run_root, "planned_at": planned_at, "bytes": _size(item["uri"])} for item in items]


def _size(uri: str) -> int | None:
    """A local shard's size in bytes; None on S3 (components.storage has no size lookup, and a
    HEAD request per shard would slow the plan of a large corpus) or when it cannot be read."""
    if storage.is_s3(uri):
        return None
    try:
        return storage.local_path(uri).stat().st_size
    except OSError:  # the shard itself is read (and judged) later
        return None


def started_and_size(shards: list) -> tuple[float | None, int | None]:
    """(when the plan phase began, the input's total bytes) from `plan`'s items; None for what
    the items do not carry (items from an older plan)."""
    starts = [float(s["planned_at"]) for s in shards if s.get("planned_at") is not None]
    sizes = [s.get("bytes") for s in shards]  # KFP hands numbers back as floats (a protobuf Struct)
    total = int(sum(sizes)) if sizes and all(isinstance(n, (int, float)) for n in sizes) else None
    return (min(starts) if starts else None), total


def filter_shard(config_json: str, shard: dict) -> None:
    """The filter phase of one loop item from `plan` (components.clean.clean.filter_shard)."""
    from components.clean import clean

    config = common.config_from_json(config_json)
    stats = clean.filter_shard(int(shard["index"]), shard["uri"], output_uri(shard["run_root"]), config.clean)
    common.say(f"clean: shard {shard['index']}: {stats.records_in} in, {stats.kept} past the stages")


def dedup(config_json: str, run_root: str, shards: list) -> None:
    """The dedup phase over all `shards` (the items `plan` returned)."""
    from components.clean import clean

    config = common.config_from_json(config_json)
    clean.dedup(len(shards), output_uri(run_root), config.clean)


def write_shard(config_json: str, shard: dict) -> None:
    """The write phase of one loop item from `plan`."""
    from components.clean import clean

    config = common.config_from_json(config_json)
    clean.write_shard(int(shard["index"]), output_uri(shard["run_root"]), config.clean)


def collect(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str, shards: list,
            documents: Any, metrics: Any) -> None:
    """The collect phase, tracked: `documents` gets the cleaned corpus's manifest."""
    from components.clean import clean

    config = common.config_from_json(config_json)
    out = output_uri(run_root)
    started, size = started_and_size(shards)
    result = run(config, config.corpus, out, common.mlflow_target(config, tracking_uri, parent_run_id),
                 collected=lambda: clean.collect(config.corpus, out, len(shards), config.clean),
                 started=started, input_bytes=size)
    common.publish(result, metrics, documents=documents)


# ---- by hand ----------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown clean`'s own arguments."""
    parser.add_argument("--input", required=True, help="raw corpus URI")
    parser.add_argument("--output", required=True, help="output directory URI")
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown clean`: all phases in one call, shards in processes; prints the stats."""
    config = common.config_from_args(args, corpus=args.input)
    value = run(config, args.input, args.output, common.target_from_args(args, config)).value
    common.print_values(f"clean: {value.manifest_uri}", {
        **value.stats.as_metrics(), "seconds": value.seconds, "docs_per_s": value.docs_per_s,
        "docs_per_core_s": value.docs_per_core_s,
    })  # fmt: skip
    return 0


COMMAND = common.StepCommand(
    "clean", "clean a raw corpus (JSONL, .gz, .zst or Parquet; a file or a directory, local or s3://) into "
    "cleaned shards", add_arguments, by_hand,
)
