"""Entry point of `make bench`: python -m benchmarks.run [--quick] [--only clean]

Runs in .venv-bench (benchmarks/setup_env.sh), never in the project's .venv.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="homegrown benchmarks against peer tools")
    parser.add_argument("--quick", action="store_true", help="shorter run: x1 rows at workers=1, flatness x1 vs x3")
    parser.add_argument("--output", type=Path, default=None, help="results JSON (default benchmarks/results/clean.json)")
    args = parser.parse_args(argv)

    from benchmarks import clean_vs_datatrove

    clean_vs_datatrove.main(quick=args.quick, output=args.output)


if __name__ == "__main__":
    main()
