"""Each pipeline step as a plain function: run the component, track it in MLflow.

The KFP components (pipelines/ops.py) and the `homegrown <step>` commands both call these,
so a step behaves the same in a pipeline, on a laptop and by hand.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from components import storage, mlflow_runs
from components.manifest import Manifest
from pipelines.config import RunConfig


@dataclass(frozen=True)
class Tracking:
    """Where a step logs: the tracking URI, the parent run (if any), the experiment."""

    uri: str
    parent_run_id: str | None = None
    experiment: str = "homegrown"


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


def new_run_name(config: RunConfig) -> str:
    return f"{config.name}-{datetime.now(timezone.utc).strftime('%Y%m%d-%H%M%S')}"


def step_dir(run_root: str, step: str) -> str:
    return storage.join(run_root, step)


def start(config: RunConfig, run_name: str, tracking_cfg: Tracking, kfp_run: str = "") -> str:
    """Create the parent MLflow run of one pipeline run; returns its id."""
    tags = {
        "homegrown.run_name": run_name,
        "homegrown.config_digest": config.digest,
        "homegrown.code_version": code_version(),
        "homegrown.corpus": config.corpus,
        "mlflow.note.content": f"homegrown pipeline run `{run_name}` on `{config.corpus}`",
    }
    if kfp_run:
        tags["kfp.run_name"] = kfp_run
    return mlflow_runs.start_pipeline_run(
        tracking_cfg.uri, tracking_cfg.experiment, run_name, tags, config.model_dump(mode="json")
    )


@contextlib.contextmanager
def _step(name: str, tracking_cfg: Tracking | None, params: dict[str, Any]) -> Iterator[Any]:
    """An MLflow run for the step (nested under the pipeline's), or nothing when untracked."""
    if tracking_cfg is None:
        yield None
        return
    with mlflow_runs.step_run(name, tracking_cfg.uri, tracking_cfg.parent_run_id, tracking_cfg.experiment) as active:
        from mlflow.tracking import MlflowClient

        mlflow_runs.log_params(MlflowClient(tracking_cfg.uri), active.info.run_id, {name: params})
        yield active


def _log(metrics: dict[str, float], artifacts: Sequence[str] = (), headline: dict[str, float] | None = None,
         tracking_cfg: Tracking | None = None) -> None:
    """Metrics and files for the active step run; headline figures also on the parent run. Names
    from data (languages, sources, reasons) become valid keys (mlflow_runs.mlflow_key), the
    originals listed in each run's mlflow_names.json."""
    if tracking_cfg is None:
        return
    import mlflow
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_cfg.uri)
    mlflow_runs.log_metrics(client, mlflow.active_run().info.run_id, metrics)
    for uri in artifacts:
        if not storage.is_s3(uri) and Path(uri).exists():
            mlflow.log_artifact(uri)
    if headline and tracking_cfg.parent_run_id:
        mlflow_runs.log_metrics(client, tracking_cfg.parent_run_id, headline)


def _log_dataset(tracking_cfg: Tracking | None, manifest_uri: str, name: str, digest: str, context: str) -> None:
    """A manifest as an MLflow dataset input of the step run and the pipeline run (the runs
    table's Datasets column): named, digested, pointing at the manifest."""
    if tracking_cfg is None:
        return
    import mlflow
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.tracking import MlflowClient

    dataset = MetaDataset(source=resolve_dataset_source(manifest_uri), name=name, digest=digest[:36])
    mlflow.log_input(dataset, context=context)
    if tracking_cfg.parent_run_id:
        entity = DatasetInput(dataset._to_mlflow_entity(), [InputTag("mlflow.data.context", context)])
        MlflowClient(tracking_cfg.uri).log_inputs(tracking_cfg.parent_run_id, datasets=[entity])


def _tag_parent(tracking_cfg: Tracking | None, tags: dict[str, str]) -> None:
    if tracking_cfg is None or not tracking_cfg.parent_run_id:
        return
    from mlflow.tracking import MlflowClient

    mlflow_runs.set_tags(MlflowClient(tracking_cfg.uri), tracking_cfg.parent_run_id, tags)


# ---- the five steps -------------------------------------------------------------------


def clean(config: RunConfig, input_uri: str, output_uri: str, tracking_cfg: Tracking | None = None,
          run: Callable[[], Any] | None = None):
    """Clean the corpus (or, with `run`, track phases that ran elsewhere and collect them)."""
    from components.clean.clean import clean_corpus

    with _step("clean", tracking_cfg, {"input": input_uri, **config.clean.model_dump()}):
        result = run() if run else clean_corpus(input_uri, output_uri, config.clean)
        metrics = {**result.stats.as_metrics(), "shard_seconds": result.shard_seconds,
                   "docs_per_core_s": result.docs_per_core_s}
        if result.seconds:
            metrics.update(seconds=result.seconds, docs_per_s=result.docs_per_s)
        _log(metrics, [storage.join(output_uri, "stats.json"), result.manifest_uri],
             {"clean.documents_in": result.stats.records_in, "clean.documents_kept": result.stats.kept},
             tracking_cfg)
        _tag_parent(tracking_cfg, {"homegrown.data_digest": result.manifest.digest})
        _log_dataset(tracking_cfg, result.manifest_uri, "cleaned-corpus", result.manifest.digest, "training")
    return result


def tokenize(config: RunConfig, documents_manifest_uri: str, output_uri: str, tracking_cfg: Tracking | None = None):
    from components.tokenizer.step import build_tokenizer_and_pack

    with _step("tokenizer", tracking_cfg, config.tokenizer.model_dump()):
        result = build_tokenizer_and_pack(documents_manifest_uri, output_uri, config.tokenizer, config.model.base)
        _log(result.metrics, [result.manifest_uri],
             {"tokenizer.vocab_size": result.metrics["vocab_size"], "tokenizer.train_tokens": result.metrics["train_tokens"]},
             tracking_cfg)
        facts = result.manifest.facts
        _tag_parent(tracking_cfg, {"homegrown.tokenizer_digest": str(facts.get("tokenizer_digest", "")),
                                   "homegrown.eval_digest": str(facts["eval_digest"])})
        _log_dataset(tracking_cfg, str(facts["eval_manifest_uri"]), "eval-set", str(facts["eval_digest"]), "evaluation")
    return result


def train(config: RunConfig, packed_manifest_uri: str, output_uri: str, tracking_cfg: Tracking | None = None):
    from components.train.launch import train_local
    from components.train.preflight import check_train_inputs

    params = {"train": config.train.model_dump(), "model": config.model.model_dump()}
    with _step("train", tracking_cfg, params) as run:
        env = {}
        if tracking_cfg is not None:
            # rank 0 of the torchrun job logs its curves into this step's run
            env = {"MLFLOW_RUN_ID": run.info.run_id, "MLFLOW_TRACKING_URI": tracking_cfg.uri}
        lora = config.model.lora
        check_train_inputs(output_uri, config.model.base, tracking_cfg.uri if tracking_cfg else None,
                  lora.target_modules if lora else None)  # fmt: skip
        if config.cluster.train_nodes > 1:
            result = train_on_trainjob(config, packed_manifest_uri, output_uri, env)
        else:
            result = train_local(packed_manifest_uri, output_uri, config.train, config.model, env=env)
        # the worker marks the run finished when it exits; MLflow still accepts the summary
        metrics = {"final_loss": result.final_loss, "tokens": result.tokens, "tokens_per_s": result.tokens_per_s,
                   "steps": result.steps, "duration_s": result.duration_s}
        if result.mfu is not None:
            metrics["mfu"] = result.mfu
        adapter = [storage.join(output_uri, "adapter", name) for name in ("adapter_config.json", "adapter_model.safetensors")]
        _log(metrics, [storage.join(output_uri, "result.json"), *adapter],
             {"train.final_loss": result.final_loss, "train.tokens": result.tokens}, tracking_cfg)
        if config.model.base:
            _tag_parent(tracking_cfg, {"homegrown.base_model": config.model.base,
                                       "homegrown.lora": str(config.model.lora is not None).lower()})
    return result


# What the steps get from the chart's ConfigMap, forwarded to the TrainJob's pods by value.
FORWARDED_ENV = ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION", "MLFLOW_S3_ENDPOINT_URL",
                 "MLFLOW_EXPERIMENT_NAME", "HF_HUB_OFFLINE", "HOMEGROWN_S3_RETRY_S", "AWS_RETRY_MODE",
                 "AWS_MAX_ATTEMPTS")
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")


def trainjob_spec(config: RunConfig, packed_manifest_uri: str, output_uri: str, config_uri: str,
                  env: dict[str, str], environ: dict[str, str] | None = None):
    """The TrainJob for a multi-node train step: the cluster settings the single-node step gets."""
    import os

    from components.train import trainjob

    cluster = config.cluster
    environ = os.environ if environ is None else environ
    namespace = cluster.namespace or (
        SERVICE_ACCOUNT_NAMESPACE.read_text().strip() if SERVICE_ACCOUNT_NAMESPACE.is_file() else None
    )
    if not namespace:
        raise ValueError("cluster.namespace is not set and this step does not run in a pod: set cluster.namespace")
    run_label = env.get("MLFLOW_RUN_ID") or config.name  # the train step's MLflow run
    return trainjob.TrainJobSpec(
        name=trainjob.job_name(config.name, cluster.train_nodes),
        namespace=namespace,
        image=cluster.train_image,
        data_uri=packed_manifest_uri,
        output_uri=output_uri,
        config_uri=config_uri,
        num_nodes=cluster.train_nodes,
        nproc_per_node=config.train.nproc_per_node,
        gpus_per_node=cluster.gpus,
        accelerator_type=cluster.accelerator_type,
        cpu=cluster.train_cpu,
        memory=cluster.train_memory,
        runtime=cluster.train_runtime,
        env={**{k: environ[k] for k in FORWARDED_ENV if environ.get(k)}, **env},
        secret_env=cluster.secrets,
        tolerations=cluster.tolerations,
        node_selector=cluster.node_selector,
        volumes=[trainjob.PvcMount(claim_name=cluster.data_pvc, mount_path="/data")] if cluster.data_pvc else [],
        service_account=cluster.service_account,
        labels={"app.kubernetes.io/part-of": "homegrown", "homegrown/run": run_label[:63]},
        preemption_grace_s=config.train.preemption_grace_s,
    )


def train_on_trainjob(config: RunConfig, packed_manifest_uri: str, output_uri: str, env: dict[str, str]):
    """Write the worker's config beside its output, run the TrainJob, read its result."""
    from components.train import trainjob
    from components.train.launch import TrainResult

    config_uri = storage.join(output_uri, "train-config.json")
    storage.write_text(config_uri, json.dumps({"train": config.train.model_dump(), "model": config.model.model_dump()}))
    spec = trainjob_spec(config, packed_manifest_uri, output_uri, config_uri, env)
    trainjob.launch(spec)
    return TrainResult.model_validate_json(storage.read_text(storage.join(output_uri, "result.json")))


def evaluate(config: RunConfig, model_uri: str, eval_manifest_uri: str, output_uri: str,
             tracking_cfg: Tracking | None = None, champion_uri: str | None = None,
             losses: list[float] | None = None):
    """Score the model; the champion is `champion_uri` if given, else the registry's (when tracked)."""
    from components.evaluate import plots
    from components.evaluate.step import evaluate_model
    from components.register import registry

    with _step("evaluate", tracking_cfg, config.evaluate.model_dump()), mlflow_runs.fail_fast(), \
            tempfile.TemporaryDirectory() as tmp:
        champion_version = cached = cache_key = None
        name = config.registry.model_name
        if champion_uri is None and config.evaluate.compare_champion and tracking_cfg is not None:
            # The champion's scores on this frozen set are kept on its model version: computed once.
            cache_key = registry.eval_cache_key(Manifest.load(eval_manifest_uri).digest, config.evaluate.stride)
            current = registry.champion_version(name)
            if current is not None and current.tags.get(cache_key):
                champion_version, cached = str(current.version), json.loads(current.tags[cache_key])
            elif (found := registry.champion_model_dir(name, tmp, current)) is not None:
                champion_uri, champion_version = str(found[0]), found[1]
        # the champion is named by its registry URI, not the folder it was downloaded to
        label = f"models:/{name}@champion (version {champion_version})" if champion_version else None
        result = evaluate_model(model_uri, eval_manifest_uri, output_uri, config.evaluate, champion_uri, label, cached)
        scores = json.loads(storage.read_text(result.results_uri))
        if champion_version and cached is None and cache_key:
            registry.cache_scores(name, champion_version, cache_key, scores["champion"])
        page = plots.report_html(scores, losses)
        storage.write_text(storage.join(output_uri, "report.html"), page)
        if tracking_cfg is not None:
            import mlflow

            mlflow.log_text(result.report_markdown, "report.md")
            mlflow.log_text(page, "report.html")
            if losses:
                mlflow.log_figure(plots.loss_figure(losses), "loss_curve.png")
            if scores.get("per_language"):
                mlflow.log_figure(plots.languages_figure(scores), "bits_per_byte_by_language.png")
            samples = json.loads(storage.read_text(storage.join(output_uri, "samples.json")))
            if samples:
                mlflow.log_table({k: [s.get(k) for s in samples] for k in samples[0]}, "samples.json")
            if champion_version:
                from mlflow.tracking import MlflowClient

                mlflow_runs.set_tags(MlflowClient(tracking_cfg.uri), mlflow.active_run().info.run_id,
                                  {"homegrown.champion_version": champion_version})
        headline = {f"eval.{k}": v for k, v in result.metrics.items() if k.startswith("bits_per_byte") or k in ("loss", "perplexity")}
        _log(result.metrics, [result.results_uri], headline, tracking_cfg)
    return result


@dataclass
class RegisterOutcome:
    version: str
    decision: str  # "passed" | "failed"
    reason: str
    gate_markdown: str


def register(config: RunConfig, model_uri: str, results_uri: str, lineage: dict[str, str],
             tracking_cfg: Tracking, train_result: dict[str, Any] | None = None) -> RegisterOutcome:
    """Register the model (alias `candidate`) and decide whether it may become champion."""
    from mlflow.tracking import MlflowClient

    from components.register import registry
    from components.register.card import model_card

    results = json.loads(storage.read_text(results_uri))
    challenger = float(results["metrics"]["bits_per_byte"])
    champion = results.get("champion", {}).get("metrics", {}).get("bits_per_byte")

    def languages(block: dict[str, Any]) -> dict[str, float]:
        return {lang: float(m["bits_per_byte"]) for lang, m in block.get("per_language", {}).items()}

    # an unanswered tracking call fails in seconds naming the server, not after MLflow's ~4 minutes
    with _step("register", tracking_cfg, config.registry.model_dump()), mlflow_runs.fail_fast():
        decision = registry.decide(challenger, champion, config.registry, languages(results),
                                   languages(results.get("champion", {})))  # fmt: skip
        tags = {
            **lineage,
            "bits_per_byte": f"{challenger:.6f}",
            "eval_digest": results["eval_digest"],
            "validation_status": decision.status,
            "validation_reason": decision.reason,
        }
        if tracking_cfg.parent_run_id:
            tags.update(upstream_lineage(tracking_cfg))
        version_id, created = registry.log_and_register(model_uri, config.registry, tags)
        # its scores on this set, so that as champion it is not scored again on it
        registry.cache_scores(config.registry.model_name, version_id,
                              registry.eval_cache_key(results["eval_digest"], config.evaluate.stride), results)  # fmt: skip
        if not created:
            print(f"[register] these weights are already version {version_id} of {config.registry.model_name}: "
                  "tags and the candidate alias refreshed, no new version")  # fmt: skip
        import mlflow

        mlflow.log_text(decision.markdown(), "gate.md")
        card = model_card(config.registry.model_name, version_id, results, decision.markdown(), tags, train_result,
                          config.model.base, config.model.lora is not None)  # fmt: skip
        mlflow.log_text(card, "model_card.md")
        # the description column holds 5000 characters; the full card is the run's model_card.md
        description = mlflow_runs.fit_value(card, mlflow_runs.DESCRIPTION_MAX - 80)
        if description != card:
            description += f"\n\nFull card: model_card.md of MLflow run {mlflow.active_run().info.run_id}."
        MlflowClient(tracking_cfg.uri).update_model_version(config.registry.model_name, version_id,
                                                            description=description)
        _log({"gate_passed": float(decision.passed), "challenger_bits_per_byte": challenger}, [],
             {"gate.passed": float(decision.passed)}, tracking_cfg)
        _tag_parent(tracking_cfg, {"homegrown.gate": decision.status, "homegrown.model_version": version_id,
                                   "homegrown.registered_model": config.registry.model_name})
    return RegisterOutcome(version_id, decision.status, decision.reason, decision.markdown())


def upstream_lineage(tracking_cfg: Tracking) -> dict[str, str]:
    """The pipeline's MLflow run, each step's run and the KFP run, as model-version tags."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_cfg.uri)
    parent = client.get_run(tracking_cfg.parent_run_id)
    tags = {"pipeline_mlflow_run_id": parent.info.run_id}
    if kfp_run := parent.data.tags.get("kfp.run_name"):
        tags["kfp_run_name"] = kfp_run
    steps = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'")
    for run in steps:
        if step := run.data.tags.get("homegrown.step"):
            tags[f"mlflow_run.{step}"] = run.info.run_id
    return tags


def promote(config: RunConfig, version_id: str, tracking_cfg: Tracking) -> None:
    """Move `champion` to this version (runs only when the gate passed)."""
    from components.register import registry

    mlflow_runs.configure(tracking_cfg.uri)
    registry.promote(config.registry.model_name, version_id)
    with mlflow_runs.fail_fast():
        _tag_parent(tracking_cfg, {"homegrown.champion_version": version_id})


def finish(tracking_cfg: Tracking, status: str = "FINISHED") -> None:
    if tracking_cfg.parent_run_id:
        mlflow_runs.end_pipeline_run(tracking_cfg.uri, tracking_cfg.parent_run_id, status)
