"""`homegrown serve MODEL_URI`: serve a model over the OpenAI API (/v1/models, /v1/completions,
/v1/chat/completions, streamed or not) on the CPU, with /health/live and /health/ready.

MODEL_URI is resolved as `homegrown chat` resolves it (pipelines/chat.py): `models:/name@alias`,
`models:/name/version` or `runs:/…` at --tracking-uri, an `s3://` prefix or a local directory. The
model is served under the name --model-name (default: MODEL_URI); clients pass it as `model`.
The server is transformers' own (`transformers serve`), narrowed to this one model (components/serve).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

HELP = "serve a model over the OpenAI API on the CPU: a registered alias, a run, an s3:// prefix or a directory"
REFUSED = 2  # exit status: no model there


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model_uri", metavar="MODEL_URI",
                        help="models:/name@alias, models:/name/version, runs:/<run id>/model, s3://… or a directory")
    parser.add_argument("--port", type=int, default=8000, help="port to listen on (default: %(default)s)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to listen on; 0.0.0.0 for every interface (default: %(default)s)")
    parser.add_argument("--model-name", metavar="NAME", help="the model's name in the API (default: MODEL_URI)")
    parser.add_argument("--tracking-uri", metavar="URI",
                        help="MLflow tracking URI for models:/ and runs:/ (default: $MLFLOW_TRACKING_URI, runs/mlflow.db)")


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from components import mlflow_runs
    from components.hf_model import ModelDirError
    from components.serve.app import build_app
    from pipelines.chat import chat_model_dir

    if args.model_uri.startswith(("models:/", "runs:/")):
        mlflow_runs.configure(mlflow_runs.resolve_tracking_uri(args.tracking_uri))
    name = args.model_name or args.model_uri
    with tempfile.TemporaryDirectory(prefix="homegrown-serve-") as tmp:
        try:
            app = build_app(chat_model_dir(args.model_uri, Path(tmp)), name)
        except ModelDirError as exc:
            print(f"homegrown serve: {exc}", file=sys.stderr)
            return REFUSED
        print(f"serving {name} at http://{args.host}:{args.port}/v1 (OpenAI API); Ctrl-C stops", file=sys.stderr)
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    return 0
