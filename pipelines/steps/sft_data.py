"""Step `sft-data`: clean the instruction data (sft.data) per conversation, hold out a frozen
evaluation set (components.sft.clean). By hand: `homegrown sft-data`."""

import argparse
from typing import TYPE_CHECKING, Any

from kfp.dsl import Dataset, Metrics, Output

from components import storage
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.sft.clean import SftDataResult


@common.component
def sft_data_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    conversations: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Clean the instruction conversations and hold out the evaluation set."""
    from pipelines.steps import sft_data

    sft_data.sft_data(config_json, run_root, tracking_uri, parent_run_id, conversations, metrics)


def run(config: RunConfig, input_uri: str, output_uri: str,
        target: common.MlflowTarget | None = None) -> "common.StepResult[SftDataResult]":
    """Clean the conversations at input_uri into output_uri (config.sft.clean)."""
    from components.sft.clean import SftDataError, clean_conversations
    from components.sft.config import SftDataConfig

    settings = config.sft.clean if config.sft else SftDataConfig()
    with common.step_run("sft-data", target, {"input": input_uri, **settings.model_dump()}):
        value = clean_conversations(input_uri, output_uri, settings)
        if not value.eval_manifest.records:  # evaluate and the gate would fail only after training
            raise SftDataError(
                f"{input_uri}: no conversation was held out for evaluation ({value.manifest.records} kept for training): "
                "raise sft.clean.eval_fraction or set sft.clean.eval_min_conversations"
            )
        stats, digest = value.stats, value.manifest.digest
        eval_digest = value.eval_manifest.digest
        metrics = {**stats.as_metrics(), "seconds": value.seconds,
                   "train_conversations": value.manifest.records, "eval_conversations": value.eval_manifest.records}  # fmt: skip
        return common.logged(target, common.StepResult(
            value,
            f"sft-data: {stats.records_in} conversations in, {stats.kept} kept ({value.eval_manifest.records} held "
            f"out), dropped {stats.dropped}, quarantined {stats.quarantined}",
            metrics,
            headline=common.headline("sft-data", metrics),
            artifacts=[storage.join(output_uri, "stats.json"), value.manifest_uri, *_samples(output_uri)],
            parent_tags={"homegrown.sft_data_digest": digest, "homegrown.sft_eval_digest": eval_digest},
            datasets=[common.DatasetRef(value.manifest_uri, "sft-conversations", digest, "training"),
                      common.DatasetRef(value.eval_manifest_uri, "sft-eval-set", eval_digest, "evaluation")],
            outputs={"conversations": common.manifest_output(value.manifest_uri)},
        ))  # fmt: skip


def _samples(output_uri: str) -> list[str]:
    """The dropped samples, a few per reason (sft.clean.dropped_samples), for the step's MLflow run;
    quarantine/ holds every quarantined record and stays where it is."""
    try:
        return storage.list_files(storage.join(output_uri, "dropped"), (".jsonl",))
    except storage.StorageError:  # nothing dropped
        return []


def sft_data(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
             conversations: Any, metrics: Any) -> None:
    """The KFP task: `conversations` gets the cleaned conversations' manifest."""
    config = common.config_from_json(config_json)
    result = run(config, config.sft.data, common.step_dir(run_root, "sft-data"),
                 common.mlflow_target(config, tracking_uri, parent_run_id))
    common.publish(result, metrics, conversations=conversations)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown sft-data`'s own arguments."""
    parser.add_argument("--input", required=True, help="instruction data URI (JSONL/Parquet file or directory; "
                        "OpenAI messages, ShareGPT or Alpaca records)")  # fmt: skip
    parser.add_argument("--output", required=True, help="output directory URI")
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown sft-data`: prints the stats."""
    config = by_hand_config(args, args.input)
    value = run(config, args.input, args.output, common.target_from_args(args, config)).value
    common.print_values(f"sft-data: {value.manifest_uri}", {
        **value.stats.as_metrics(), "train_conversations": value.manifest.records,
        "eval_conversations": value.eval_manifest.records, "seconds": value.seconds,
    })  # fmt: skip
    return 0


def by_hand_config(args: argparse.Namespace, data: str) -> RunConfig:
    """The config of an SFT step run by hand: --config's (with an sft section) and sft.data = data;
    without --config the defaults, with a placeholder model.base (the command names its inputs)."""
    if getattr(args, "config", None):
        return common.config_from_args(args, sft={"data": data})
    return common.config_from_args(args, sft={"data": data}, model={"base": "-"})

COMMAND = common.StepCommand(
    "sft-data", "clean instruction conversations (OpenAI messages, ShareGPT, Alpaca) and hold out an eval set",
    add_arguments, by_hand,
)
