"""`homegrown`: run the pipeline locally, compile, submit or upload it, run one step by hand
(the steps' own commands, from pipelines/steps/<step>.py's COMMAND, in the DAG's order), or chat
with or serve a model (pipelines/chat.py, pipelines/serve.py), roll the champion back
(pipelines/rollback.py), calibrate the quality filters or audit what they dropped
(pipelines/calibrate.py, pipelines/audit.py)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Sequence

from pipelines.config import ConfigError, RunConfig
from pipelines.steps.common import config_from_args, print_values

UI_HINT = "make ui   (or: mlflow ui --backend-store-uri {uri}), then open {url}"


# ---- pipeline commands ----------------------------------------------------------------


def cmd_run(args: argparse.Namespace) -> int:
    from components import mlflow_runs
    from pipelines.local import run_local

    config = config_from_args(args)
    summary = run_local(config, args.run_name, args.tracking_uri, args.data_root, args.work_dir, args.verbose)
    m, t = summary.metrics, summary.tags
    rows: dict[str, Any] = {}
    if "pretrain" in config.stages:
        rows.update({
            "documents in / kept": f"{m.get('clean.documents_in', 0):.0f} / {m.get('clean.documents_kept', 0):.0f}",
            "tokens trained": f"{m.get('train.tokens', 0):.0f}",
            "final train loss": m.get("train.final_loss", float("nan")),
        })  # fmt: skip
    if "sft" in config.stages:
        rows.update({
            "conversations in / kept": f"{m.get('sft.conversations_in', 0):.0f} / {m.get('sft.conversations_kept', 0):.0f}",
            "token slots tuned on": f"{m.get('sft-train.tokens', 0):.0f} (prompts and padding included)",
            "final SFT loss": m.get("sft-train.final_loss", float("nan")),
        })  # fmt: skip
    print_values(f"pipeline run {summary.run_name}: {summary.status}", {
        **rows,
        "bits per byte (held out)": m.get("eval.bits_per_byte", float("nan")),
        "perplexity (held out)": m.get("eval.perplexity", float("nan")),
        "registered model": summary.model,
        "gate": t.get("homegrown.gate", "?"),
        "champion now": f"v{t['homegrown.champion_version']}" if "homegrown.champion_version" in t else "unchanged",
    })
    url = mlflow_runs.run_link(summary.experiment_id, summary.parent_run_id, "http://127.0.0.1:5000")
    print(f"\nMLflow run {summary.parent_run_id} in {summary.tracking_uri}")
    print("look at it: " + UI_HINT.format(uri=summary.tracking_uri, url=url))
    return 0


def cmd_compile(args: argparse.Namespace) -> int:
    from pipelines.dag import compile_pipeline

    config = config_from_args(args)
    compile_pipeline(config, args.output)
    print(f"compiled pipeline for a cluster: {args.output} (config digest {config.digest[:12]})")
    return 0


def submission(config: RunConfig, package: str, run_name: str | None) -> dict[str, Any]:
    """The arguments of kfp.Client.create_run_from_pipeline_package for this config."""
    from pipelines.steps.start import new_run_name

    return {
        "pipeline_file": package,
        "arguments": {"config_json": config.model_dump_json(), "run_name": run_name or ""},
        "run_name": run_name or new_run_name(config),
        "experiment_name": config.mlflow.experiment,
        "enable_caching": False,
    }


def cmd_submit(args: argparse.Namespace) -> int:
    import kfp

    from pipelines.dag import compile_pipeline

    config = config_from_args(args)
    package = args.output or str(Path("runs") / "pipeline.yaml")
    Path(package).parent.mkdir(parents=True, exist_ok=True)
    compile_pipeline(config, package)
    client = kfp.Client(host=args.host, namespace=args.namespace, existing_token=None)
    result = client.create_run_from_pipeline_package(**submission(config, package, args.run_name))
    print(f"submitted run {result.run_id} to {args.host}")
    return 0


def cmd_upload(args: argparse.Namespace) -> int:
    import tempfile

    import kfp
    import urllib3
    from kfp_server_api.exceptions import ApiException

    from pipelines.dag import PIPELINE_NAME, compile_pipeline

    config = config_from_args(args)
    name = args.pipeline_name or PIPELINE_NAME
    version = args.version_name or f"{config.name}-{config.digest[:12]}"
    with tempfile.TemporaryDirectory(prefix="homegrown-upload-") as tmp:
        package = str(Path(tmp) / "pipeline.yaml")
        compile_pipeline(config, package)
        try:
            client = kfp.Client(host=args.host, namespace=args.namespace, existing_token=None)
            pipeline_id = client.get_pipeline_id(name)
            if pipeline_id is None:  # the first upload creates the pipeline with its first version
                pipeline = client.upload_pipeline(package, pipeline_name=name, description=args.description,
                                                  namespace=args.namespace)
                print(f"uploaded new pipeline {name} ({pipeline.pipeline_id}) to {args.host}")
                return 0
            result = client.upload_pipeline_version(package, version, pipeline_id=pipeline_id,
                                                    description=args.description)
        except ApiException as exc:
            if exc.status == 409:  # a retried upload, or the same config again: the version is there
                print(f"pipeline {name} already has version {version}: nothing to upload")
                return 0
            raise RuntimeError(f"KFP at {args.host} answered {exc.status} {exc.reason}: {exc.body}") from None
        except urllib3.exceptions.HTTPError as exc:
            raise RuntimeError(f"cannot reach KFP at {args.host}: {exc}") from None
    print(f"uploaded pipeline {name} version {version} ({result.pipeline_version_id}) to {args.host}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="homegrown",
        description="Train your own language model: clean → tokenizer → train (DeepSpeed) → evaluate → register.",
        epilog="Start with `make demo`; see README.md.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func, help: str, config_required: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help, description=help)
        if config_required:
            p.add_argument("config", help="run config YAML, e.g. pipelines/configs/demo.yaml")
        else:
            p.add_argument("--config", help="run config YAML whose matching section is used (default: built-in defaults)")
        p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value, e.g. train.max_steps=10")
        p.set_defaults(func=func)
        return p

    p = add("run", cmd_run, "run the whole pipeline on this machine (kfp local runner, MLflow, torchrun)", True)
    p.add_argument("--run-name", help="name of this pipeline run (default: <config name>-<UTC time>)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI (default: config, $MLFLOW_TRACKING_URI, runs/mlflow.db)")
    p.add_argument("--data-root", help="where the run writes its data (default: config data_root)")
    p.add_argument("--work-dir", default="runs", help="kfp local outputs, logs and temp files (default: runs)")
    p.add_argument("-v", "--verbose", action="store_true", help="show every task's full log, not only progress")

    p = add("compile", cmd_compile, "compile the pipeline for Kubeflow Pipelines into a YAML package", True)
    p.add_argument("-o", "--output", default="pipeline.yaml", help="output file (default: pipeline.yaml)")

    p = add("submit", cmd_submit, "compile and create a run on a Kubeflow Pipelines endpoint", True)
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline-ui.kubeflow")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--run-name", help="run name (default: <config name>-<UTC time>)")
    p.add_argument("-o", "--output", help="also keep the compiled package here")

    p = add("upload", cmd_upload, "compile the pipeline and upload it to Kubeflow Pipelines as a new version", True)
    p.add_argument("--host", required=True, help="KFP API endpoint, e.g. http://ml-pipeline.kubeflow:8888")
    p.add_argument("--namespace", help="Kubeflow profile namespace (multi-user installs)")
    p.add_argument("--pipeline-name", help="pipeline to add the version to; created when missing (default: homegrown)")
    p.add_argument("--version-name", help="new version name, unique per pipeline (default: <config name>-<digest>)")
    p.add_argument("--description", help="description shown in the KFP UI")

    from pipelines.dag import STEPS

    for step in STEPS:  # one step by hand: `homegrown clean`, `homegrown tokenize`, ...
        if command := getattr(step, "COMMAND", None):
            command.add_arguments(add(command.name, command.handler, command.help))

    from pipelines import chat

    p = sub.add_parser("chat", help=chat.HELP, description=chat.HELP)
    chat.add_arguments(p)
    p.set_defaults(func=chat.cmd_chat)

    from pipelines import serve

    p = sub.add_parser("serve", help=serve.HELP, description=serve.HELP)
    serve.add_arguments(p)
    p.set_defaults(func=serve.cmd_serve)

    from pipelines import audit, calibrate, rollback, rollout

    p = sub.add_parser("rollback", help=rollback.HELP, description=rollback.HELP)
    rollback.add_arguments(p)
    p.set_defaults(func=rollback.cmd_rollback)

    p = sub.add_parser("rollout", help=rollout.HELP, description=rollout.HELP)
    rollout.add_arguments(p)
    p.set_defaults(func=rollout.cmd_rollout)

    p = sub.add_parser("calibrate", help=calibrate.HELP, description=calibrate.HELP)
    calibrate.add_arguments(p)
    p.set_defaults(func=calibrate.cmd_calibrate)

    p = sub.add_parser("dropped", help=audit.HELP, description=audit.HELP)
    audit.add_arguments(p)
    p.set_defaults(func=audit.cmd_dropped)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from components.storage import StorageError
    from components.train.launch import TrainError
    from pipelines.local import PipelineFailed

    try:
        return args.func(args)
    except (ConfigError, PipelineFailed, StorageError, TrainError) as exc:
        print(f"homegrown {args.command}: error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"homegrown {args.command}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
