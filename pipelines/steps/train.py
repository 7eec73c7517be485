"""Step `train`: the causal LM trained with DeepSpeed (torchrun on this node, or a Kubeflow
Trainer TrainJob over cluster.train_nodes nodes: pipelines.cluster) and consolidated to
safetensors. By hand: `homegrown train`."""

import argparse
from typing import TYPE_CHECKING, Any

from kfp.dsl import Dataset, Input, Metrics, Model, Output

from components import storage
from components.manifest import Manifest
from pipelines.config import RunConfig
from pipelines.steps import common

if TYPE_CHECKING:
    from components.train.result import TrainResult


@common.component
def train_op(
    config_json: str, run_root: str, run_name: str, tracking_uri: str, parent_run_id: str,
    packed: Input[Dataset], model: Output[Model], metrics: Output[Metrics], stage: str = "pretrain",
):  # fmt: skip
    """Train the causal LM with DeepSpeed (torchrun, N ranks) and consolidate it to safetensors;
    stage "sft": instruction-tune the model the sft-packed manifest names, with sft.train."""
    from pipelines.steps import train

    train.train(config_json, run_root, run_name, tracking_uri, parent_run_id, packed, model, metrics, stage)


def run(config: RunConfig, packed_manifest_uri: str, output_uri: str, target: common.MlflowTarget | None = None,
        run_name: str = "", step: str = "train") -> "common.StepResult[TrainResult]":
    """Train on a packed manifest (packed-tokens, or sft-packed with config.sft_stage applied);
    `run_name` (the pipeline run) labels a multi-node TrainJob; `step` names the MLflow run."""
    from components.train.launch import train_local
    from components.train.preflight import check_train_inputs

    with common.step_run(step, target, step_params(config)) as active:
        env = {}
        if target is not None:
            # rank 0 of the torchrun job logs its curves into this step's run
            env = {"MLFLOW_RUN_ID": active.info.run_id, "MLFLOW_TRACKING_URI": target.uri}
        lora = config.model.lora
        check_train_inputs(output_uri, config.model.base, target.uri if target else None,
                           lora.target_modules if lora else None, data_uri=packed_manifest_uri)  # fmt: skip
        if config.cluster.train_nodes > 1:
            from pipelines import cluster

            value = cluster.train_on_trainjob(config, packed_manifest_uri, output_uri, env, run_name)
        else:
            value = train_local(packed_manifest_uri, output_uri, config.train, config.model, env=env)
        # the worker marks the run finished when it exits; MLflow still accepts the summary
        metrics = {"final_loss": value.final_loss, "tokens": value.tokens, "tokens_per_s": value.tokens_per_s,
                   "steps": value.steps, "duration_s": value.duration_s}  # fmt: skip
        if value.mfu is not None:
            metrics["mfu"] = value.mfu
        adapter = [storage.join(output_uri, "adapter", name) for name in ("adapter_config.json", "adapter_model.safetensors")]
        base = config.model.base
        return common.logged(target, common.StepResult(
            value,
            f"{step}: {value.steps} steps on {value.world_size} ranks, final loss {value.final_loss:.4f}, "
            f"{value.tokens_per_s:,.0f} tokens/s",
            metrics,
            headline=common.headline(step, metrics),
            artifacts=[storage.join(output_uri, "result.json"), *adapter],
            parent_tags={"homegrown.base_model": base, "homegrown.lora": str(config.model.lora is not None).lower()}
            if base else {},
            outputs={"model": model_output(value)},
        ))  # fmt: skip


def step_params(config: RunConfig) -> dict[str, Any]:
    """The train step run's params, logged under the step's name: train.zero_stage,
    train.model.base (sft-train.zero_stage, ...), never train.train.*."""
    return {**config.train.model_dump(), "model": config.model.model_dump()}


def train(config_json: str, run_root: str, run_name: str, tracking_uri: str, parent_run_id: str,
          packed: Any, model: Any, metrics: Any, stage: str = "pretrain") -> None:
    """The KFP task: `packed` is the tokenizer's (or sft-tokenize's) manifest; `model` gets the
    TrainResult JSON."""
    config = common.config_from_json(config_json)
    config, step = stage_config(config, packed.path, stage)
    result = run(config, packed.path, common.step_dir(run_root, step),
                 common.mlflow_target(config, tracking_uri, parent_run_id), run_name, step)
    common.publish(result, metrics, model=model)


def stage_config(config: RunConfig, manifest_uri: str, stage: str) -> tuple[RunConfig, str]:
    """The config the train step runs with and its step name: as given for "pretrain"; for
    "sft", config.sft_stage on the model the sft-packed manifest was tokenised for.
    Raises ValueError for another stage, or "sft" without an sft-packed manifest."""
    if stage == "pretrain":
        return config, "train"
    if stage != "sft":
        raise ValueError(f"unknown training stage {stage!r}: pretrain or sft")
    manifest = Manifest.load(manifest_uri)
    if manifest.kind != "sft-packed":
        raise ValueError(f"{manifest_uri}: the SFT stage trains on an 'sft-packed' manifest (homegrown sft-tokenize), "
                         f"got kind={manifest.kind!r}")  # fmt: skip
    return config.sft_stage(str(manifest.facts["base_uri"])), "sft-train"


def model_output(value: "TrainResult") -> common.Output:
    """The KFP Model artifact: the TrainResult as result.json has it (NaN losses kept as NaN, so
    a diverged run reads back) and where the model is as metadata."""
    return common.Output(value.to_json(), {"model_uri": value.model_uri, "checkpoint_uri": value.checkpoint_uri,
                                           "framework": "transformers", "format": "safetensors"})  # fmt: skip


def read_model(path: str) -> "TrainResult":
    """The train step's KFP Model artifact (model_output's text), as later steps read it."""
    from components.train.result import TrainResult

    return TrainResult.model_validate_json(storage.read_text(path))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """`homegrown train`'s own arguments."""
    parser.add_argument("--input", required=True, help="manifest.json written by `homegrown tokenize` (pretraining) "
                        "or `homegrown sft-tokenize` (instruction tuning, with the config's sft.train)")
    parser.add_argument("--output", required=True, help="output directory URI (checkpoints/, model/, result.json)")
    common.add_tracking_arguments(parser)


def by_hand(args: argparse.Namespace) -> int:
    """`homegrown train`: prints the TrainResult but its losses."""
    if Manifest.load(args.input).kind == "sft-packed":
        from pipelines.steps.sft_data import by_hand_config

        config, step = stage_config(by_hand_config(args, "-"), args.input, "sft")
    else:
        config, step = common.config_from_args(args, corpus=args.input), "train"
    value = run(config, args.input, args.output, common.target_from_args(args, config), step=step).value
    common.print_values(f"train: {value.model_uri}", {k: v for k, v in value.model_dump().items() if k != "losses"})
    return 0


COMMAND = common.StepCommand(
    "train", "train the model with DeepSpeed on packed sequences (torchrun, N ranks)", add_arguments, by_hand
)
