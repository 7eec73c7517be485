"""Entry point of `make bench`: python -m benchmarks.run [--quick] [--only clean|scale|train|families]

Runs in .venv-bench (benchmarks/setup_env.sh), never in the project's .venv. The training-loop
benchmark (benchmarks.train_loop) and the model-family comparison (benchmarks.model_families)
run as subprocesses in the project's .venv when there is one (where training runs, with the same
torch / DeepSpeed / MLflow), else in this interpreter.
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def train_python() -> str:
    project = ROOT / ".venv" / "bin" / "python"
    if project.exists():
        return str(project)
    if importlib.util.find_spec("deepspeed") is None:
        raise SystemExit("the training benchmarks need deepspeed: run `make install` (the project's .venv) first")
    return sys.executable


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="homegrown benchmarks against peer tools")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="shorter runs: clean x1 rows at workers=1 and flatness x1 vs x3; scale 10^5 documents only; "
        "train 1 round of 20 steps; families 100 steps per model",
    )
    parser.add_argument("--only", choices=("clean", "scale", "train", "families"), default=None, help="run one benchmark only")
    parser.add_argument(
        "--output", type=Path, default=None, help="clean results JSON (default benchmarks/results/clean.json)"
    )
    args = parser.parse_args(argv)

    if args.only in (None, "clean"):
        from benchmarks import clean_vs_datatrove

        clean_vs_datatrove.main(quick=args.quick, output=args.output)
    if args.only in (None, "scale"):
        from benchmarks import clean_scale

        clean_scale.main(quick=args.quick)
    if args.only in (None, "train"):
        command = [train_python(), "-m", "benchmarks.train_loop", *(["--quick"] if args.quick else [])]
        print(f"[bench] {' '.join(command)}", flush=True)
        subprocess.run(command, cwd=ROOT, check=True)
    if args.only in (None, "families"):
        command = [train_python(), "-m", "benchmarks.model_families", *(["--quick"] if args.quick else [])]
        print(f"[bench] {' '.join(command)}", flush=True)
        subprocess.run(command, cwd=ROOT, check=True)


if __name__ == "__main__":
    main()
