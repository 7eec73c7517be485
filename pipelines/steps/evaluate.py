"""Step `evaluate`: bits-per-byte, perplexity and samples on the held-out set, for the new model
and the registry's champion (whose scores on a frozen set are computed once and kept on its
version). A held-out set of conversations (instruction tuning) is scored on the assistant's
tokens, with replies generated beside the reference and the champion's
(components.evaluate.chat). By hand: `homegrown evaluate`; with `--text FILE` it scores one or
more models on the user's own text file instead, the same way (components.evaluate.text_file)."""

import argparse
import json
import tempfile
from typing import TYPE_CHECKING, Any

from kfp.dsl import HTML, Artifact, Dataset, Input, Markdown, Metrics, Model, Output

from components import mlflow_runs, storage
from components.manifest import Manifest
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.evaluate.step import EvalResult

CONVERSATIONS = "conversations"  # the SFT data step's held-out set (components.sft.clean.KIND)


@common.component
def evaluate_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    packed: Input[Dataset], model: Input[Model],
    results: Output[Artifact], report: Output[Markdown], plots: Output[HTML], metrics: Output[Metrics],
):  # fmt: skip
    """Bits-per-byte, perplexity and samples on the held-out set, challenger and champion."""
    from pipelines.steps import evaluate

    evaluate.evaluate(config_json, run_root, tracking_uri, parent_run_id, packed, model, results, report, plots,
                      metrics)  # fmt: skip


def run(config: RunConfig, model_uri: str, eval_manifest_uri: str, output_uri: str,
        target: common.MlflowTarget | None = None, champion_uri: str | None = None,
        losses: list[float] | None = None) -> "common.StepResult[EvalResult]":
    """Score the model; the champion is `champion_uri` if given, else the registry's (when tracked).
    `losses` (the training curve) is drawn in the report."""
    from components.evaluate import chat_report, plots
    from components.evaluate.chat import evaluate_chat_model
    from components.evaluate.step import evaluate_model
    from components.register import registry

    # held-out conversations (instruction tuning) are scored as a chat model; documents as text
    eval_manifest = Manifest.load(eval_manifest_uri)
    chat = eval_manifest.kind == CONVERSATIONS
    with common.step_run("evaluate", target, config.evaluate.model_dump()), mlflow_runs.fail_fast(), \
            tempfile.TemporaryDirectory() as tmp:
        champion_version = cached = cache_key = None
        name = config.registry.model_name
        if champion_uri is None and config.evaluate.compare_champion and target is not None:
            # The champion's scores on this frozen set are kept on its model version: computed once.
            cache_key = registry.eval_cache_key(eval_manifest.digest, config.evaluate.stride)
            current = registry.champion_version(name)
            if current is not None and current.tags.get(cache_key):
                champion_version, cached = str(current.version), json.loads(current.tags[cache_key])
            # a chat champion's replies stand beside the challenger's in the report: its files are needed
            if (cached is None or chat) and (found := registry.champion_model_dir(name, tmp, current)) is not None:
                champion_uri, champion_version = str(found[0]), found[1]
        # the champion is named by its registry URI, not the folder it was downloaded to
        label = f"models:/{name}@champion (version {champion_version})" if champion_version else None
        scorer = evaluate_chat_model if chat else evaluate_model
        value = scorer(model_uri, eval_manifest_uri, output_uri, config.evaluate, champion_uri, label, cached,
                       champion_version)  # fmt: skip
        results_text = storage.read_text(value.results_uri)
        scores = json.loads(results_text)
        if champion_version and cached is None and cache_key:
            registry.cache_scores(name, champion_version, cache_key, scores["champion"])
        page = (chat_report.report_html if chat else plots.report_html)(scores, losses)
        storage.write_text(storage.join(output_uri, "report.html"), page)
        if target is not None:
            _log_report(target, value, page, scores, losses, storage.join(output_uri, "samples.json"), champion_version)
        m = value.metrics
        champion = m.get("champion_bits_per_byte")
        return common.logged(target, common.StepResult(
            value,
            f"evaluate: bits/byte {m['bits_per_byte']:.4f}, perplexity {m['perplexity']:.1f}"
            + (f"; champion {champion:.4f}" if champion is not None else "; no champion yet"),
            m,
            headline={f"eval.{k}": v for k, v in m.items() if k.startswith("bits_per_byte") or k in ("loss", "perplexity")},
            artifacts=[value.results_uri],
            outputs={"results": common.Output(results_text), "report": common.Output(value.report_markdown),
                     "plots": common.Output(page)},
        ))  # fmt: skip


def _log_report(target: common.MlflowTarget, value: "EvalResult", page: str, scores: dict[str, Any],
                losses: list[float] | None, samples_uri: str, champion_version: str | None) -> None:
    """The report, its figures and the samples table into the active step run."""
    import mlflow

    from components.evaluate import plots

    mlflow.log_text(value.report_markdown, "report.md")
    mlflow.log_text(page, "report.html")
    if losses:
        mlflow.log_figure(plots.loss_figure(losses), "loss_curve.png")
    if scores.get("per_language"):
        mlflow.log_figure(plots.languages_figure(scores), "bits_per_byte_by_language.png")
    samples = json.loads(storage.read_text(samples_uri))
    if samples:
        mlflow.log_table({k: [s.get(k) for s in samples] for k in samples[0]}, "samples.json")
    if champion_version:
        from mlflow.tracking import MlflowClient

        mlflow_runs.set_tags(MlflowClient(target.uri), mlflow.active_run().info.run_id,
                             {"homegrown.champion_version": champion_version})  # fmt: skip


def evaluate(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
             packed: Any, model: Any, results: Any, report: Any, plots: Any, metrics: Any) -> None:
    """The KFP task: the eval set named by the tokenizer's manifest, the model by train's artifact."""
    from pipelines.steps import train

    config = common.config_from_json(config_json)
    trained = train.read_model(model.path)
    result = run(config, trained.model_uri, Manifest.load(packed.path).facts["eval_manifest_uri"],
                 common.step_dir(run_root, "evaluate"), common.mlflow_target(config, tracking_uri, parent_run_id),
                 losses=trained.losses)  # fmt: skip
    common.publish(result, metrics, results=results, report=report, plots=plots)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown evaluate`'s own arguments: the held-out set (--data) or your own text (--text)."""
    parser.add_argument("--model", required=True, action="append", metavar="MODEL_URI",
                        help="the model: a Hugging Face model directory (train output model/), s3:// prefix, "
                        "models:/name@alias or runs:/<run id>/model; with --text, repeat it to compare models in one "
                        "table")  # fmt: skip
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="manifest.json from `homegrown tokenize` (or its held-out set, "
                        "eval/manifest.json)")  # fmt: skip
    source.add_argument("--text", metavar="FILE",
                        help="your own text file, local or s3://, scored as the held-out set is (no cleaning): .jsonl "
                        "(a text field per line; also .jsonl.gz/.zst), .parquet (a text column) or .txt (one document "
                        "per paragraph between blank lines); bits per byte overall and per language, one column per "
                        "--model")  # fmt: skip
    parser.add_argument("--text-field", default="text", metavar="NAME",
                        help="with --text: the JSONL field or Parquet column holding the text (default: %(default)s)")
    parser.add_argument("--lang-field", metavar="NAME",
                        help="with --text: the field naming a document's language (default: lang_hint, else lang); "
                        "documents without one get the clean step's language ID")  # fmt: skip
    parser.add_argument("--output", required=True, help="output directory URI (results.json, report.md)")
    parser.add_argument("--champion", help="another model directory to score on the same set (register's gate "
                        "compares only against the registry's champion: use --tracking-uri for that); with --text, "
                        "one more column")  # fmt: skip
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown evaluate`: prints the report."""
    if any(uri.startswith(("models:/", "runs:/")) for uri in [*args.model, args.champion or ""]):
        mlflow_runs.configure(mlflow_runs.resolve_tracking_uri(args.tracking_uri))
    if args.text:
        return _score_text(args)
    if len(args.model) > 1:
        raise ValueError(f"--data scores one --model (and --champion), got {len(args.model)}: to compare models "
                         "on one file, use --text FILE with a --model for each")  # fmt: skip
    config = common.config_from_args(args, corpus=args.data)
    eval_uri = _manifest(args.data).facts.get("eval_manifest_uri", args.data)  # a packed manifest or an eval set
    result = run(config, args.model[0], eval_uri, args.output, common.target_from_args(args, config), args.champion)
    print(result.value.report_markdown)
    return 0


def _manifest(uri: str) -> Manifest:
    """The manifest at uri; a text file given as --data is pointed to --text."""
    from components.evaluate.text_file import file_format

    try:
        return Manifest.load(uri)
    except ValueError as exc:
        if file_format(uri) is None:
            raise
        raise ValueError(f"{uri}: not a homegrown manifest: --data takes the manifest.json `homegrown tokenize` "
                         f"writes. To score your own text file, use `homegrown evaluate --model MODEL --text {uri} "
                         "--output DIR`") from exc  # fmt: skip


def _score_text(args: argparse.Namespace) -> int:
    """`homegrown evaluate --text FILE`: every --model (and --champion) on the file; prints the table."""
    from components.evaluate.text_file import score_text_file

    config = common.config_from_args(args, corpus=args.text)
    scores = score_text_file([*args.model, *([args.champion] if args.champion else [])], args.text, args.output,
                             config.evaluate, text_field=args.text_field, lang_field=args.lang_field,
                             langid=config.clean.langid, max_line_bytes=config.clean.max_line_bytes)  # fmt: skip
    print(scores.report_markdown)
    print(f"results: {scores.results_uri}")
    return 0


COMMAND = common.StepCommand(
    "evaluate", "score a model on the held-out set, or models on your own text file (--text): loss, perplexity, "
    "bits per byte", add_arguments, by_hand
)
