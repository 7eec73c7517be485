"""`homegrown dropped CLEAN_OUTPUT --reason R [--language L]`: dropped documents of one reason (and
language) beside the number that dropped them and its threshold, to judge in a minute whether a
rule is wrong for a language (then `homegrown calibrate` it from text you trust). The table of
drops per language is CLEAN_OUTPUT/languages.md; the samples are CLEAN_OUTPUT/dropped/<reason>.jsonl
(clean.dropped_samples per reason and language)."""

from __future__ import annotations

import argparse
import textwrap

HELP = "show dropped documents of a reason (and language) beside the statistic and threshold that dropped them"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("output", metavar="CLEAN_OUTPUT", help="the clean step's output (local or s3://)")
    parser.add_argument("--reason", help="drop reason, e.g. gopher_top_2gram (default: list the table of drops)")
    parser.add_argument("--language", metavar="CODE", help="only documents the language ID gave this code")
    parser.add_argument("-n", type=int, default=5, help="documents to show (default: %(default)s)")
    parser.add_argument("--chars", type=int, default=400, help="characters of each text to show (default: %(default)s)")
    parser.add_argument("--config", help="the run config the clean step ran with (default: built-in defaults)")


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:g}" if float(value).is_integer() else f"{value:.4f}"


def cmd_dropped(args: argparse.Namespace) -> int:
    from components import storage
    from components.clean import audit
    from components.clean.config import CleanConfig
    from pipelines.config import load_config

    if not args.reason:
        print(storage.read_text(storage.join(args.output, "languages.md")))
        return 0
    config = load_config(args.config, {"corpus": args.output}).clean if args.config else CleanConfig()
    rows = audit.explained(audit.samples(args.output, args.reason, args.language, args.n), config)
    if not rows:
        print(f"no samples of {args.reason} for language {args.language} in {args.output}; see its languages.md")
        return 1
    for row in rows:
        print(f"── {row['id']}  [{row['lang']} {row['script']}]  {row['reason']}: {_number(row['value'])} vs "
              f"threshold {_number(row['threshold'])}  ({row['detail']})")
        text = row["text"] if len(row["text"]) <= args.chars else row["text"][: args.chars] + " …"
        print(textwrap.indent(text, "   "))
    return 0
