"""Step `clean`, fanned out over `clean.tasks` work units, whatever the number of files:
plan (cut the corpus into work units, saved on storage) → filter (per unit: read, quarantine, the
per-document stages, dedup keys, MinHash signatures, the dedup index) → exact dedup (per key-prefix
partition) → near dedup (per group of LSH bands) → cluster (one task: a drop list per unit) →
write (per unit: drop the duplicates, write the final shards) → collect (stats, samples, the
manifest; tracked in MLflow). The loops iterate over short lists: unit, partition and group
indices. By hand (`homegrown clean`) the phases run in one call, units in processes.
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
    """Clean, plan: cut the corpus into work units (saved on storage); the loop items of filter and write."""
    from pipelines.steps import clean

    return clean.plan(config_json, run_root)


@common.component
def clean_dedup_plan_op(config_json: str, run_root: str, stage: str) -> list:
    """Clean, the loop items of a dedup stage: key-prefix partitions ("exact") or band groups ("near")."""
    from pipelines.steps import clean

    return clean.dedup_items(config_json, run_root, stage)


@common.component
def clean_filter_op(config_json: str, shard: dict):
    """Clean, filter, one work unit: read, quarantine, run the stages; dedup keys, signatures, index."""
    from pipelines.steps import clean

    clean.filter_shard(config_json, shard)


@common.component
def clean_exact_op(config_json: str, partition: dict):
    """Clean, exact dedup, one partition of the key prefixes: every unit's duplicates there."""
    from pipelines.steps import clean

    clean.exact_partition(config_json, partition)


@common.component
def clean_near_op(config_json: str, group: dict):
    """Clean, near dedup, one group of LSH bands: verified near-duplicate pairs."""
    from pipelines.steps import clean

    clean.band_group(config_json, group)


@common.component
def clean_cluster_op(config_json: str, run_root: str):
    """Clean, cluster: near-duplicate clusters from the pairs; a drop list per unit."""
    from pipelines.steps import clean

    clean.cluster(config_json, run_root)


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
        metrics = {**stats.as_metrics(), "shard_seconds": value.shard_seconds, "docs_per_core_s": value.docs_per_core_s,
                   **value.tasks}
        seconds = value.seconds or (time.time() - started if started is not None and started <= begun else 0.0)
        input_bytes = input_bytes if input_bytes is not None else value.input_bytes
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
            artifacts=[storage.join(output_uri, "stats.json"), storage.join(output_uri, "languages.md"), value.manifest_uri],
            parent_tags={"homegrown.data_digest": digest},
            datasets=[common.DatasetRef(value.manifest_uri, "cleaned-corpus", digest, "training")],
            outputs={"documents": common.manifest_output(value.manifest_uri)},
        ))  # fmt: skip


# ---- the phases as KFP tasks ------------------------------------------------------------------


def output_uri(run_root: str) -> str:
    """Where the clean step of a pipeline run writes."""
    return common.step_dir(run_root, "clean")


def plan(config_json: str, run_root: str) -> list[dict]:
    """The work units as loop items {"index", "bytes", "run_root", "planned_at"}: planned_at
    (seconds since the epoch) is when this phase began; collect reads it and the bytes for the
    step's duration and throughput."""
    import time

    from components.clean.clean import plan_units

    planned_at = time.time()
    config = common.config_from_json(config_json)
    units = plan_units(config.corpus, output_uri(run_root), config.clean)
    common.say(f"clean: {len(units)} work units")
    # each item carries the run root: kfp's local runner hands a ParallelFor body the loop
    # item in place of any other task's output, so loop bodies take only pipeline inputs
    return [{**u, "run_root": run_root, "planned_at": planned_at} for u in units]


def dedup_items(config_json: str, run_root: str, stage: str) -> list[dict]:
    """Loop items {"index", "run_root"}: the key-prefix partitions of exact dedup ("exact") or the
    band groups of near dedup ("near"), as many as clean.dedup_tasks asks (fewer groups than bands)."""
    from components.clean import dedup_stages

    config = common.config_from_json(config_json)
    if stage == "exact":
        count = len(dedup_stages.partition_bounds(config.clean.dedup_tasks))
    elif config.clean.near_dedup is not None:
        count = len(dedup_stages.band_groups(config.clean.near_dedup.bands_rows()[0], config.clean.dedup_tasks))
    else:
        count = 0
    return [{"index": i, "run_root": run_root} for i in range(count)]


def started_and_size(shards: list) -> tuple[float | None, int | None]:
    """(when the plan phase began, the input's total bytes) from `plan`'s items; None for what
    the items do not carry (items from an older plan)."""
    starts = [float(s["planned_at"]) for s in shards if s.get("planned_at") is not None]
    sizes = [s.get("bytes") for s in shards]  # KFP hands numbers back as floats (a protobuf Struct)
    total = int(sum(sizes)) if sizes and all(isinstance(n, (int, float)) for n in sizes) else None
    return (min(starts) if starts else None), total


def filter_shard(config_json: str, shard: dict) -> None:
    """The filter phase of one unit item from `plan` (components.clean.clean.filter_shard)."""
    from components.clean import clean

    config = common.config_from_json(config_json)
    stats = clean.filter_shard(int(shard["index"]), output_uri(shard["run_root"]), config.clean)
    common.say(f"clean: unit {shard['index']}: {stats.records_in} in, {stats.kept} past the stages")


def _units(config: Any, run_root: str) -> int:
    from components.clean.paths import CleanPaths
    from components.clean.workunits import load_units

    return len(load_units(CleanPaths.of(output_uri(run_root), config.clean).units))


def exact_partition(config_json: str, partition: dict) -> None:
    """The exact-dedup stage of one partition item from `plan`."""
    from components.clean import dedup_stages
    from components.clean.paths import CleanPaths

    config = common.config_from_json(config_json)
    run_root = partition["run_root"]
    paths = CleanPaths.of(output_uri(run_root), config.clean)
    figures = dedup_stages.exact_partition(int(partition["index"]), config.clean.dedup_tasks, _units(config, run_root), paths)
    common.say(f"clean: exact dedup, partition {partition['index']}: {figures}")


def band_group(config_json: str, group: dict) -> None:
    """The near-dedup stage of one band-group item from `plan`."""
    from components.clean import dedup_stages
    from components.clean.paths import CleanPaths

    config = common.config_from_json(config_json)
    run_root, near = group["run_root"], config.clean.near_dedup
    paths = CleanPaths.of(output_uri(run_root), config.clean)
    groups = len(dedup_stages.band_groups(near.bands_rows()[0], config.clean.dedup_tasks))
    figures = dedup_stages.band_group(int(group["index"]), groups, _units(config, run_root), paths, near,
                                      config.clean.dedup_tasks)  # fmt: skip
    common.say(f"clean: near dedup, band group {group['index']}: {figures}")


def cluster(config_json: str, run_root: str) -> None:
    """The cluster stage: a drop list per unit."""
    from components.clean import dedup_stages
    from components.clean.paths import CleanPaths

    config = common.config_from_json(config_json)
    paths = CleanPaths.of(output_uri(run_root), config.clean)
    near = config.clean.near_dedup
    groups = len(dedup_stages.band_groups(near.bands_rows()[0], config.clean.dedup_tasks)) if near is not None else None
    figures = dedup_stages.cluster(_units(config, run_root), paths, config.clean.dedup_tasks, groups)
    common.say(f"clean: clusters: {figures}")


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
