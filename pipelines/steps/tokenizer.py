"""Step `tokenizer`: train a byte-level BPE tokenizer, hold out the eval split, pack training
sequences (components.tokenizer.step). By hand: `homegrown tokenize`."""

import argparse
from typing import TYPE_CHECKING, Any

from kfp.dsl import Dataset, Input, Metrics, Output

from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.tokenizer.step import TokenizeResult


@common.component
def tokenize_op(
    config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
    documents: Input[Dataset], packed: Output[Dataset], metrics: Output[Metrics],
):  # fmt: skip
    """Train a byte-level BPE tokenizer, hold out the eval split, pack training sequences."""
    from pipelines.steps import tokenizer

    tokenizer.tokenize(config_json, run_root, tracking_uri, parent_run_id, documents, packed, metrics)


def run(config: RunConfig, documents_manifest_uri: str, output_uri: str,
        target: common.MlflowTarget | None = None) -> "common.StepResult[TokenizeResult]":
    """Tokenizer, eval split and packed sequences from a cleaned corpus's manifest."""
    from components.tokenizer.step import build_tokenizer_and_pack

    with common.step_run("tokenizer", target, config.tokenizer.model_dump()):
        value = build_tokenizer_and_pack(documents_manifest_uri, output_uri, config.tokenizer, config.model.base)
        m, facts = value.metrics, value.manifest.facts
        return common.logged(target, common.StepResult(
            value,
            f"tokenizer: vocab {m['vocab_size']:.0f}, {m['train_sequences']:.0f} sequences of "
            f"{config.tokenizer.seq_len} tokens, {m['eval_documents']:.0f} documents held out",
            m,
            headline=common.headline("tokenizer", m),
            artifacts=[value.manifest_uri],
            parent_tags={"homegrown.tokenizer_digest": str(facts.get("tokenizer_digest", "")),
                         "homegrown.eval_digest": str(facts["eval_digest"])},
            datasets=[common.DatasetRef(str(facts["eval_manifest_uri"]), "eval-set", str(facts["eval_digest"]),
                                        "evaluation")],
            outputs={"packed": common.manifest_output(value.manifest_uri)},
        ))  # fmt: skip


def tokenize(config_json: str, run_root: str, tracking_uri: str, parent_run_id: str,
             documents: Any, packed: Any, metrics: Any) -> None:
    """The KFP task: `documents` is the clean step's manifest; `packed` gets this step's."""
    config = common.config_from_json(config_json)
    result = run(config, documents.path, common.step_dir(run_root, "tokenizer"),
                 common.mlflow_target(config, tracking_uri, parent_run_id))
    common.publish(result, metrics, packed=packed)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown tokenize`'s own arguments."""
    parser.add_argument("--input", required=True, help="manifest.json written by `homegrown clean`")
    parser.add_argument("--output", required=True, help="output directory URI")
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown tokenize`: prints the metrics."""
    config = common.config_from_args(args, corpus=args.input)
    value = run(config, args.input, args.output, common.target_from_args(args, config)).value
    common.print_values(f"tokenize: {value.manifest_uri}", value.metrics)
    return 0


COMMAND = common.StepCommand(
    "tokenize", "train a tokenizer on cleaned shards, hold out an eval split, pack sequences", add_arguments, by_hand
)
