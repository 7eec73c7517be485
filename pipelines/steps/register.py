"""Step `register`: log the model to the MLflow registry with alias `candidate` and its lineage,
write its model card, decide the champion gate. By hand: `homegrown register` (then promote)."""

import argparse
import json
from dataclasses import dataclass
from typing import Any, NamedTuple

from kfp.dsl import Artifact, Dataset, Input, Markdown, Model, Output

from components import mlflow_runs, storage
from components.manifest import Manifest
from pipelines.config import RunConfig
from pipelines.steps import common


@common.component
def register_op(
    config_json: str, run_name: str, tracking_uri: str, parent_run_id: str,
    documents: Input[Dataset], packed: Input[Dataset], model: Input[Model], results: Input[Artifact],
    gate: Output[Markdown],
) -> NamedTuple("RegisterOutputs", [("decision", str), ("version", str)]):  # fmt: skip
    """Register the model with alias `candidate` and decide the champion gate."""
    from collections import namedtuple

    from pipelines.steps import register

    outputs = namedtuple("RegisterOutputs", ["decision", "version"])
    return outputs(*register.register(config_json, run_name, tracking_uri, parent_run_id,
                                      documents, packed, model, results, gate))  # fmt: skip


@dataclass
class RegisterOutcome:
    """The registered version and the champion gate's decision."""

    version: str
    decision: str  # "passed" | "failed"
    reason: str
    gate_markdown: str


def run(config: RunConfig, model_uri: str, results_uri: str, lineage: dict[str, str], target: common.MlflowTarget,
        train_result: dict[str, Any] | None = None) -> "common.StepResult[RegisterOutcome]":
    """Register the model (alias `candidate`) and decide whether it may become champion.
    `results_uri`: evaluate's results.json; `lineage`: model-version tags (short names: digest.data,
    digest.tokenizer, ...), but cleaning_stats, a JSON text, goes to the run's artifact
    lineage/cleaning_stats.json and into the card, not into a tag; `train_result`: the
    TrainResult as a dict, for the model card.

    In a pipeline run the version's source run is the step run that trained the model (run.train,
    or run.sft-train for lineage training_stage=sft), and its description (the model card) links
    every step's run."""
    from mlflow.tracking import MlflowClient

    from components.register import registry
    from components.register.card import model_card

    results = json.loads(storage.read_text(results_uri))
    challenger = float(results["metrics"]["bits_per_byte"])

    def languages(block: dict[str, Any]) -> dict[str, float]:
        return {lang: float(m["bits_per_byte"]) for lang, m in block.get("per_language", {}).items()}

    # an unanswered tracking call fails in seconds naming the server, not after MLflow's ~4 minutes
    with common.step_run("register", target, config.registry.model_dump()), mlflow_runs.fail_fast():
        name = config.registry.model_name
        current = registry.champion_version(name)
        block, unscored = champion_block(results, results_uri, None if current is None else str(current.version))
        champion = block.get("metrics", {}).get("bits_per_byte")
        decision = registry.decide(challenger, champion, config.registry, languages(results), languages(block),
                                   champion_unscored=unscored)  # fmt: skip
        tags = {
            **{k: v for k, v in lineage.items() if k not in ARTIFACT_LINEAGE},
            "bits_per_byte": f"{challenger:.6f}",
            "digest.eval": results["eval_digest"],
            "validation_status": decision.status,
            "validation_reason": decision.reason,
        }
        experiment_id = None
        if target.parent_run_id:
            upstream, experiment_id = upstream_lineage(target)
            tags.update(upstream)
        import mlflow

        for key in ARTIFACT_LINEAGE.intersection(lineage):
            mlflow.log_text(lineage[key], f"lineage/{key}.json")
        trained_by = tags.get("run.sft-train" if lineage.get("training_stage") == "sft" else "run.train")
        version_id, created = registry.log_and_register(model_uri, config.registry, tags, trained_by)
        # its scores on this set, so that as champion it is not scored again on it; under the stride
        # they were scored with (results.json's), which evaluate's lookup key uses too
        if "stride" in results.get("config", {}):
            registry.cache_scores(name, version_id, registry.eval_cache_key(results["eval_digest"],
                                                                            results["config"]["stride"]), results)
        else:
            print(f"[register] {results_uri} records no evaluate stride (config.stride): the scores of version "
                  f"{version_id} are not cached; it is scored again when compared")
        if not created:
            print(f"[register] these weights are already version {version_id} of {name}: "
                  "tags and the candidate alias refreshed, no new version")  # fmt: skip
        mlflow.log_text(decision.markdown(), "gate.md")
        card = model_card(name, version_id, results, decision.markdown(), {**lineage, **tags}, train_result,
                          config.model.base, config.model.lora is not None, experiment_id)  # fmt: skip
        mlflow.log_text(card, "model_card.md")
        # the description column holds 5000 characters; the full card is the run's model_card.md, and
        # a cut card still ends with the links to the runs
        description = mlflow_runs.shown(card)
        if len(description) > mlflow_runs.DESCRIPTION_MAX:
            links = ", ".join(f"[{k.removeprefix('run.')}]({mlflow_runs.run_link(experiment_id, v)})"
                              for k, v in tags.items() if k.startswith("run.")) if experiment_id else ""  # fmt: skip
            tail = f"\n\nFull card: model_card.md of MLflow run {mlflow.active_run().info.run_id}." + (
                f"\n\nRuns: {links}." if links else "")
            description = mlflow_runs.fit_value(description, mlflow_runs.DESCRIPTION_MAX - len(tail)) + tail
        MlflowClient(target.uri).update_model_version(name, version_id, description=description)
        outcome = RegisterOutcome(version_id, decision.status, decision.reason, decision.markdown())
        return common.logged(target, common.StepResult(
            outcome,
            f"register: {name} v{version_id} (candidate); gate {decision.status}: {decision.reason}",
            {"gate_passed": float(decision.passed), "challenger_bits_per_byte": challenger},
            headline=common.headline("register", {"gate_passed": float(decision.passed)}),
            parent_tags={"homegrown.gate": decision.status, "homegrown.model_version": version_id,
                         "homegrown.registered_model": name},
            outputs={"gate": common.Output(outcome.gate_markdown)},
        ))  # fmt: skip


def champion_block(results: dict[str, Any], results_uri: str, current: str | None) -> tuple[dict[str, Any], str | None]:
    """results.json's champion block the gate may compare against, and why there is none to use.

    `current`: the registry's champion version (None: no champion yet). While there is one, the
    gate compares only against scores of that version: results.json without a champion block (an
    evaluate run without MLflow, or with evaluate.compare_champion false) or with another model's
    (an earlier champion, a --champion directory) gives ({}, reason), and the gate fails instead of
    passing as "no champion yet". Without a registry champion, any champion block is used."""
    block = results.get("champion") or {}
    if current is None:
        return block, None
    rerun = ("rerun `homegrown evaluate` with --tracking-uri set to this registry's URI (--mlflow for the default "
             "one register uses) and evaluate.compare_champion true, or the pipeline, which always scores the "
             "champion")  # fmt: skip
    if not block:
        return {}, f"{results_uri} holds no score for the current champion (version {current}); {rerun}"
    scored = block.get("version")
    if scored is None or str(scored) != current:
        return {}, (f"{results_uri} scores the champion {block.get('model_uri')!r}, not the current champion "
                    f"(version {current}); {rerun}")  # fmt: skip
    return block, None


# lineage too large for a tag the UI lists: logged as the register run's lineage/<key>.json
ARTIFACT_LINEAGE = frozenset({"cleaning_stats"})


def upstream_lineage(target: common.MlflowTarget) -> tuple[dict[str, str], str]:
    """(model-version tags, the experiment id): the pipeline's MLflow run (run.pipeline), each
    step's run (run.<step>: the latest run of a step that ran more than once) and the KFP run
    (kfp_run_name)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(target.uri)
    parent = client.get_run(target.parent_run_id)
    tags = {"run.pipeline": parent.info.run_id}
    if kfp_run := parent.data.tags.get("kfp.run_name"):
        tags["kfp_run_name"] = kfp_run
    steps = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent.info.run_id}'",
                               order_by=["attributes.start_time ASC"])  # fmt: skip
    for run in steps:
        if step := run.data.tags.get("homegrown.step"):
            tags[f"run.{step}"] = run.info.run_id
    return tags, parent.info.experiment_id


def register(config_json: str, run_name: str, tracking_uri: str, parent_run_id: str,
             documents: Any, packed: Any, model: Any, results: Any, gate: Any) -> tuple[str, str]:
    """The KFP task, lineage from the upstream manifests; returns (decision, version)."""
    from pipelines.steps import train

    config = common.config_from_json(config_json)
    packed_manifest, documents_manifest = Manifest.load(packed.path), Manifest.load(documents.path)
    lineage = {
        "digest.data": documents_manifest.digest,
        "cleaning_stats": json.dumps(documents_manifest.facts.get("stats", {}), sort_keys=True),
        "digest.tokenizer": str(packed_manifest.facts.get("tokenizer_digest", "")),
        "digest.packed": packed_manifest.digest,
        "digest.config": config.digest,
        "code_version": common.code_version(),
        "pipeline_run_name": run_name,
    }
    trained = train.read_model(model.path)
    if packed_manifest.kind == "sft-packed":  # the card names the model tuned and the SFT stage's adapters
        config, _ = train.stage_config(config, packed.path, "sft")
        facts = packed_manifest.facts
        lineage.update({"training_stage": "sft", "base_model": str(facts["base_uri"]),
                        "chat_template": str(facts["chat_template_source"])})  # fmt: skip
    result = run(config, trained.model_uri, results.path, lineage,
                 common.mlflow_target(config, tracking_uri, parent_run_id), trained.model_dump(mode="json"))
    common.publish(result, gate=gate)
    return result.value.decision, result.value.version


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown register`'s own arguments."""
    parser.add_argument("--model", required=True, help="Hugging Face model directory")
    parser.add_argument("--results", required=True, help="results.json written by `homegrown evaluate`")
    parser.add_argument("--tracking-uri", help="MLflow tracking URI (default: config, $MLFLOW_TRACKING_URI, runs/mlflow.db)")
    parser.add_argument("--no-promote", action="store_true", help="never move the champion alias")


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown register`: promotes when the gate passed unless --no-promote; prints the gate."""
    from pipelines.steps import promote

    config = common.config_from_args(args, corpus="-")
    target = common.mlflow_target(config, args.tracking_uri or "")  # the registry is MLflow's: always tracked
    outcome = run(config, args.model, args.results, {"code_version": common.code_version()}, target).value
    if outcome.decision == "passed" and not args.no_promote:
        promote.run(config, outcome.version, target)
    print(outcome.gate_markdown)
    print(f"registered {config.registry.model_name} version {outcome.version}: gate {outcome.decision}")
    return 0


COMMAND = common.StepCommand(
    "register", "register a model in MLflow (alias candidate) and apply the champion gate", add_arguments, by_hand
)
