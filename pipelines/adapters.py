"""What the KFP components do, as importable functions over KFP artifacts.

Each `@dsl.component` in pipelines/ops.py is one call into this module, so the component
source KFP ships stays a few lines and everything here runs and tests without KFP.
"""

from __future__ import annotations

import json
from typing import Any

from components import storage, mlflow_runs
from components.manifest import Manifest
from pipelines import tasks
from pipelines.config import RunConfig


def _config(config_json: str) -> RunConfig:
    return RunConfig.model_validate_json(config_json)


def _tracking(config: RunConfig, tracking_uri: str, parent_run_id: str = "") -> tasks.Tracking:
    uri = mlflow_runs.resolve_tracking_uri(tracking_uri or config.mlflow.tracking_uri)
    return tasks.Tracking(uri, parent_run_id or None, config.mlflow.experiment)


def effective_run_name(run_name: str, kfp_run_name: str) -> str:
    return run_name or kfp_run_name


def start(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, data_root: str) -> tuple[str, str, str]:
    """Returns (run name, parent MLflow run id, run root URI)."""
    config = _config(config_json)
    name = effective_run_name(run_name, kfp_run_name)
    parent = tasks.start(config, name, _tracking(config, tracking_uri), kfp_run=kfp_run_name)
    return name, parent, storage.join(data_root or config.data_root, name)


def finish(config_json: str, run_name: str, kfp_run_name: str, tracking_uri: str, state: str) -> None:
    """Close the parent run with the pipeline's final state (runs as the DAG's exit handler)."""
    config = _config(config_json)
    track = _tracking(config, tracking_uri)
    mlflow_runs.configure(track.uri)
    from mlflow.tracking import MlflowClient

    name = effective_run_name(run_name, kfp_run_name)
    runs = MlflowClient(track.uri).search_runs(
        [mlflow_runs.ensure_experiment(track.uri, track.experiment)],
        filter_string=f"tags.`homegrown.run_name` = '{name}' and tags.`homegrown.config_digest` = '{config.digest}'",
    )
    status = "FINISHED" if state == "SUCCEEDED" else "FAILED"
    for run in runs:
        mlflow_runs.end_pipeline_run(track.uri, run.info.run_id, status)


def _publish(manifest_uri: str, artifact: Any) -> Manifest:
    """Copy a manifest into a KFP artifact and record its headline facts as metadata."""
    manifest = Manifest.load(manifest_uri)
    storage.write_text(artifact.path, storage.read_text(manifest_uri))
    artifact.metadata.update(
        {"digest": manifest.digest, "records": manifest.records, "shards": len(manifest.shards), "root": manifest.root}
    )
    return manifest


def _metrics(artifact: Any, values: dict[str, float]) -> None:
    """KFP scalar metrics under the same keys the step's MLflow run has (mlflow_runs.mlflow_key):
    names from data (languages, sources, reasons) made valid, the originals in the run's
    mlflow_names.json."""
    for key, value in values.items():
        artifact.log_metric(mlflow_runs.mlflow_key(key), float(value))


def tokenize(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
             documents: Any, packed: Any, metrics: Any) -> None:
    config = _config(config_json)
    result = tasks.tokenize(config, documents.path, tasks.step_dir(run_root, "tokenizer"),
                            _tracking(config, tracking_uri, parent_run_id))
    _publish(result.manifest_uri, packed)
    _metrics(metrics, result.metrics)
    m = result.metrics
    say(f"tokenizer: vocab {m['vocab_size']:.0f}, {m['train_sequences']:.0f} sequences of {config.tokenizer.seq_len} "
        f"tokens, {m['eval_documents']:.0f} documents held out")


def train(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
          packed: Any, model: Any, metrics: Any) -> None:
    config = _config(config_json)
    result = tasks.train(config, packed.path, tasks.step_dir(run_root, "train"),
                         _tracking(config, tracking_uri, parent_run_id))
    storage.write_text(model.path, result.model_dump_json(indent=2))
    model.metadata.update({"model_uri": result.model_uri, "checkpoint_uri": result.checkpoint_uri,
                           "framework": "transformers", "format": "safetensors"})
    _metrics(metrics, {"final_loss": result.final_loss, "tokens": result.tokens,
                       "tokens_per_s": result.tokens_per_s, "steps": result.steps})
    say(f"train: {result.steps} steps on {result.world_size} ranks, final loss {result.final_loss:.4f}, "
        f"{result.tokens_per_s:,.0f} tokens/s")


def evaluate(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
             packed: Any, model: Any, results: Any, report: Any, plots: Any, metrics: Any) -> None:
    config = _config(config_json)
    eval_manifest_uri = Manifest.load(packed.path).facts["eval_manifest_uri"]
    output_uri = tasks.step_dir(run_root, "evaluate")
    trained = json.loads(storage.read_text(model.path))
    result = tasks.evaluate(config, trained["model_uri"], eval_manifest_uri, output_uri,
                            _tracking(config, tracking_uri, parent_run_id), losses=trained.get("losses"))
    storage.write_text(results.path, storage.read_text(result.results_uri))
    storage.write_text(report.path, result.report_markdown)
    storage.write_text(plots.path, storage.read_text(storage.join(output_uri, "report.html")))
    _metrics(metrics, result.metrics)
    champion = result.metrics.get("champion_bits_per_byte")
    say(f"evaluate: bits/byte {result.metrics['bits_per_byte']:.4f}, perplexity {result.metrics['perplexity']:.1f}"
        + (f"; champion {champion:.4f}" if champion is not None else "; no champion yet"))


def register(config_json: str, run_name: str, tracking_uri: str, parent_run_id: str,
             documents: Any, packed: Any, model: Any, results: Any, report: Any) -> tuple[str, str]:
    """Returns (decision, version)."""
    config = _config(config_json)
    packed_manifest = Manifest.load(packed.path)
    documents_manifest = Manifest.load(documents.path)
    lineage = {
        "data_manifest_digest": documents_manifest.digest,
        "cleaning_stats": json.dumps(documents_manifest.facts.get("stats", {}), sort_keys=True)[:4000],
        "tokenizer_digest": str(packed_manifest.facts.get("tokenizer_digest", "")),
        "packed_data_digest": packed_manifest.digest,
        "config_digest": config.digest,
        "code_version": tasks.code_version(),
        "pipeline_run_name": run_name,
    }
    trained = json.loads(storage.read_text(model.path))
    outcome = tasks.register(config, trained["model_uri"], results.path, lineage,
                             _tracking(config, tracking_uri, parent_run_id), trained)
    storage.write_text(report.path, outcome.gate_markdown)
    say(f"register: {config.registry.model_name} v{outcome.version} (candidate); gate {outcome.decision}: {outcome.reason}")
    return outcome.decision, outcome.version


def promote(config_json: str, tracking_uri: str, parent_run_id: str, version: str) -> None:
    config = _config(config_json)
    tasks.promote(config, version, _tracking(config, tracking_uri, parent_run_id))
    say(f"promote: {config.registry.model_name} v{version} is now champion")


def say(message: str) -> None:
    """A progress line the local console shows (see pipelines.local.ConsoleFilter)."""
    print(f"[homegrown] {message}", flush=True)


# ---- the clean step fanned out over shards (ParallelFor on a cluster) -----------------------


def _clean_output(run_root: str) -> str:
    return tasks.step_dir(run_root, "clean")


def clean_plan(config_json: str, run_root: str) -> list[dict]:
    from components.clean.clean import plan_shards

    config = _config(config_json)
    items = plan_shards(config.corpus, _clean_output(run_root), config.clean)
    say(f"clean: {len(items)} input shards")
    # each item carries the run root: kfp's local runner hands a ParallelFor body the loop
    # item in place of any other task's output, so loop bodies take only pipeline inputs
    return [{**item, "run_root": run_root} for item in items]


def clean_prepare(config_json: str, shard: dict) -> None:
    from components.clean.clean import prepare

    config = _config(config_json)
    stats = prepare(int(shard["index"]), shard["uri"], _clean_output(shard["run_root"]), config.clean)
    say(f"clean: shard {shard['index']}: {stats.records_in} in, {stats.kept} past the stages")


def clean_dedup(config_json: str, run_root: str, shards: list) -> None:
    from components.clean.clean import plan_dedup

    config = _config(config_json)
    plan_dedup(len(shards), _clean_output(run_root), config.clean)


def clean_finalize(config_json: str, shard: dict) -> None:
    from components.clean.clean import finalize

    config = _config(config_json)
    finalize(int(shard["index"]), _clean_output(shard["run_root"]), config.clean)


def clean_collect(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str, shards: list,
                  documents: Any, metrics: Any) -> None:
    from components.clean.clean import collect

    config = _config(config_json)
    result = tasks.clean(config, config.corpus, _clean_output(run_root), _tracking(config, tracking_uri, parent_run_id),
                         run=lambda: collect(config.corpus, _clean_output(run_root), len(shards), config.clean))
    _publish(result.manifest_uri, documents)
    _metrics(metrics, result.stats.as_metrics())
    st = result.stats
    say(f"clean: {st.records_in} documents in, {st.kept} kept, dropped {st.dropped}, quarantined {st.quarantined}")
