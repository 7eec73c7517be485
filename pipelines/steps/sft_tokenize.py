"""Step `sft-tokenize`: render the cleaned conversations with the chat template of the model
being tuned, label the assistant's tokens and pack them into rows (components.sft.tokenize).
The model is model.base (SFT of a pretrained model) or the pretraining stage's output.
By hand: `homegrown sft-tokenize`."""

import argparse
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import storage
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.sft.tokenize import SftPackResult


@common.component
def sft_tokenize_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    conversations: Input[Dataset], base: Input[Model], packed: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Tokenise and pack the conversations for the model the pretraining stage wrote."""
    from pipelines.steps import sft_tokenize, train

    sft_tokenize.sft_tokenize(config_json, run_root, tracking_uri, parent_run_id, conversations,
                              train.read_model(base.path).model_uri, packed, metrics)  # fmt: skip


@common.component
def sft_tokenize_base_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    conversations: Input[Dataset], packed: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Tokenise and pack the conversations for model.base."""
    from pipelines.steps import common, sft_tokenize

    config = common.config_from_json(config_json)
    sft_tokenize.sft_tokenize(config_json, run_root, tracking_uri, parent_run_id, conversations, config.model.base,
                              packed, metrics)  # fmt: skip


def run(config: RunConfig, conversations_uri: str, base_uri: str, output_uri: str,
        target: common.MlflowTarget | None = None) -> "common.StepResult[SftPackResult]":
    """Pack the conversations of `conversations_uri` (the sft-data step's manifest) for the model
    at base_uri (models:/, runs:/, s3:// or a local directory; its tokenizer is used)."""
    from components.hf_model import fetch_model_dir
    from components.sft.tokenize import SftPackError, tokenize_conversations

    sft = config.sft
    params = {"base": base_uri, "seq_len": sft.seq_len, "end_of_turn": sft.end_of_turn}
    with common.step_run("sft-tokenize", target, params), tempfile.TemporaryDirectory() as tmp:
        # the version the alias names now: the train step, on every node, must fetch the same weights
        base_uri = pinned_version(base_uri)
        model_dir = fetch_model_dir(base_uri, Path(tmp))
        if sft.seq_len > (context := base_context_length(model_dir)):
            raise SftPackError(f"sft.seq_len ({sft.seq_len}) exceeds the context length of {base_uri} ({context}): "
                               "lower sft.seq_len")  # fmt: skip
        value = tokenize_conversations(conversations_uri, model_dir, base_uri, output_uri, sft.seq_len, sft.end_of_turn)
        facts = value.manifest.facts
        metrics = {**value.metrics, "assistant_tokens": float(facts["labelled_tokens"])}
        samples = storage.list_files(storage.join(output_uri, "dropped"), (".jsonl",)) if facts.get("dropped") else []
        return common.logged(target, common.StepResult(
            value,
            f"sft-tokenize: {facts['conversations_packed']} conversations in {facts['rows']} rows of {sft.seq_len} "
            f"tokens ({facts['fill']:.0%} filled), {facts['labelled_tokens']} assistant tokens to learn; chat "
            f"template from the {'base model' if facts['chat_template_source'] == 'base' else 'default (ChatML)'}",
            metrics,
            headline=common.headline("sft-tokenize", metrics),
            artifacts=[value.manifest_uri, storage.join(output_uri, "stats.json"), *samples],
            parent_tags={"homegrown.chat_template": str(facts["chat_template_source"]), "homegrown.sft_base": base_uri},
            datasets=[common.DatasetRef(value.manifest_uri, "sft-packed", value.manifest.digest, "training")],
            outputs={"packed": common.manifest_output(value.manifest_uri)},
        ))  # fmt: skip


def pinned_version(uri: str) -> str:
    """models:/name@alias as models:/name/<version> the alias names now; any other URI as it is."""
    if not uri.startswith("models:/") or "@" not in uri:
        return uri
    from mlflow.tracking import MlflowClient

    name, alias = uri.removeprefix("models:/").split("@", 1)
    version = MlflowClient().get_model_version_by_alias(name, alias).version
    common.say(f"sft-tokenize: {uri} is version {version}; tuning models:/{name}/{version}")
    return f"models:/{name}/{version}"


def base_context_length(model_dir: Path) -> int:
    """The longest sequence the base model takes, from its config.json (no weights read)."""
    from transformers import AutoConfig

    from components.hf_model import context_length

    return context_length(AutoConfig.from_pretrained(model_dir))


def sft_tokenize(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
                 conversations: Any, base_uri: str, packed: Any, metrics: Any) -> None:
    """The KFP task: `packed` gets the sft-packed manifest the train step reads."""
    config = common.config_from_json(config_json)
    result = run(config, conversations.path, base_uri, common.step_dir(run_root, "sft-tokenize"),
                 common.mlflow_target(config, tracking_uri, parent_run_id))
    common.publish(result, metrics, packed=packed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown sft-tokenize`'s own arguments."""
    parser.add_argument("--input", required=True, help="manifest.json written by `homegrown sft-data`")
    parser.add_argument("--model", required=True, help="the model to tune: models:/name@alias, runs:/, s3:// or a "
                        "local Hugging Face directory (its tokenizer and chat template are used)")  # fmt: skip
    parser.add_argument("--output", required=True, help="output directory URI")
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown sft-tokenize`: prints the manifest's figures."""
    from pipelines.steps.sft_data import by_hand_config

    config = by_hand_config(args, "-")
    value = run(config, args.input, args.model, args.output, common.target_from_args(args, config)).value
    facts = value.manifest.facts
    common.print_values(f"sft-tokenize: {value.manifest_uri}", {
        key: facts[key] for key in ("conversations_in", "conversations_packed", "rows", "fill", "tokens",
                                    "labelled_tokens", "chat_template_source")
    } | {f"dropped {reason}": n for reason, n in facts.get("dropped", {}).items()})  # fmt: skip
    return 0


COMMAND = common.StepCommand(
    "sft-tokenize", "render conversations with the chat template, label assistant tokens, pack rows",
    add_arguments, by_hand,
)
