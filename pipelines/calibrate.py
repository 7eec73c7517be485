"""`homegrown calibrate --reference REF --output filters.yaml`: quality thresholds per language from
text you trust (components/clean/calibrate.py says how they are chosen).

REF is a JSONL (text under --text-field), Parquet or plain-text file (.txt: a document per
paragraph), local or s3://, read as `homegrown evaluate --text` reads one. The output is a run
config holding only `clean.quality.per_language` and `clean.langid.min_confidence_per_language`:
`homegrown clean --config filters.yaml` uses it as it is, or copy its keys into your run config.
Beside it: the report (filters.html: tables and histograms; filters.json: the same figures), and,
with --tracking-uri or $MLFLOW_TRACKING_URI, an MLflow run holding all three.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import yaml

HELP = "choose quality thresholds per language from a reference text you trust; writes a config for `clean`"
EXPERIMENT = "homegrown-calibrate"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--reference", required=True, metavar="URI",
                        help="clean text in your language(s): .jsonl/.jsonl.gz/.jsonl.zst, .parquet or .txt, local or s3://")
    parser.add_argument("--output", required=True, metavar="YAML", help="config file to write, e.g. filters.yaml")
    parser.add_argument("--language", metavar="CODE",
                        help="calibrate this language only (what the language ID calls it, e.g. sw), from every "
                        "document identified as it; default: each identified language with enough documents")
    parser.add_argument("--keep", type=float, default=0.98,
                        help="share of the reference the calibrated filters keep, per language (default: %(default)s)")
    parser.add_argument("--min-documents", type=int, default=50,
                        help="languages with fewer documents are reported, not calibrated (default: %(default)s)")
    parser.add_argument("--text-field", default="text", help="JSONL/Parquet field holding the text (default: %(default)s)")
    parser.add_argument("--config", help="run config whose clean section is the base (default: built-in defaults)")
    parser.add_argument("--tracking-uri", metavar="URI", help="log the calibration as an MLflow run here")


def cmd_calibrate(args: argparse.Namespace) -> int:
    from components.clean.calibrate import CalibrationSettings, calibrate, config_overrides
    from components.clean.calibration_report import report_html, summary
    from components.evaluate.text_file import read_documents_file
    from pipelines.config import load_config

    base = load_config(args.config).clean if args.config else None
    settings = CalibrationSettings(keep=args.keep, language=args.language, min_documents=args.min_documents)
    read = read_documents_file(args.reference, text_field=args.text_field)
    if read.quarantined:
        print(f"calibrate: {len(read.quarantined)} records of {args.reference} could not be read and are left out "
              f"(first: {read.quarantined[0].source}: {read.quarantined[0].reason})", file=sys.stderr)
    calibrations, reference = calibrate((doc.text for doc in read.documents), settings, base)
    if not calibrations:
        counts = ", ".join(f"{lang} {n}" for lang, n in sorted(reference.skipped.items())) or "none identified"
        print(f"calibrate: no language of {args.reference} has {args.min_documents} documents ({counts}); "
              "bring more text or lower --min-documents", file=sys.stderr)
        return 1
    output = Path(args.output)
    header = (f"# homegrown calibrate, {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC: from {args.reference}, keeping "
              f"{args.keep:.1%} of it per language; report: {output.with_suffix('.html').name}\n")
    output.write_text(header + yaml.safe_dump(config_overrides(calibrations), sort_keys=True, allow_unicode=True),
                      encoding="utf-8")
    figures = summary(calibrations, reference, args.keep)
    figures["reference"] = args.reference
    figures["unreadable_records"] = len(read.quarantined)
    output.with_suffix(".json").write_text(json.dumps(figures, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    output.with_suffix(".html").write_text(report_html(calibrations, reference, args.keep, args.reference), encoding="utf-8")
    for c in calibrations:
        changed = ", ".join(sorted(c.thresholds)) or "none (the base keeps enough)"
        print(f"{c.lang}: {c.documents} documents, kept {c.kept_base:.1%} with the base, {c.kept:.1%} calibrated; "
              f"loosened: {changed}; language-ID floor {c.min_confidence}")
    print(f"wrote {output} (+ {output.with_suffix('.html').name}, {output.with_suffix('.json').name})")
    tracking = args.tracking_uri or os.environ.get("MLFLOW_TRACKING_URI")
    if tracking:
        _log_run(tracking, args, calibrations, output)
    return 0


def _log_run(tracking_uri: str, args: argparse.Namespace, calibrations: list, output: Path) -> None:
    import mlflow

    from components import mlflow_runs

    mlflow_runs.configure(tracking_uri)
    # beside a SQLite store its artifacts go to mlartifacts/, not ./mlruns of wherever this runs
    experiment_id = mlflow_runs.ensure_experiment(tracking_uri, EXPERIMENT)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"calibrate-{output.stem}") as run:
        mlflow.log_params({"reference": args.reference, "keep": args.keep, "language": args.language or "all",
                           "min_documents": args.min_documents})  # fmt: skip
        for c in calibrations:
            mlflow.log_metrics({f"{c.lang}.documents": c.documents, f"{c.lang}.kept_base": c.kept_base,
                                f"{c.lang}.kept": c.kept})  # fmt: skip
        for path in (output, output.with_suffix(".html"), output.with_suffix(".json")):
            mlflow.log_artifact(str(path))
    print(f"MLflow run {run.info.run_id} in experiment {EXPERIMENT!r}")
