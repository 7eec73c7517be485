"""The per-document stages of the clean step's filter phase, run in order on every record.

A stage is a callable that may rewrite `doc.text` / `doc.meta` in place and returns None to
keep the document or a reason string to drop it. STAGES lists them in order; `build_stages`
builds those the config turns on, `run_stages` counts, per stage, documents in, out and
dropped by reason. Adding a stage: one factory function and one STAGES line (and, for a stage
that can be turned off, its section in CleanConfig).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from components.clean.config import CleanConfig
from components.clean.filters import length_filter
from components.clean.langid import LangIdConfig, LanguageIdentifier, detect_script
from components.clean.normalize import normalize, repair_mojibake, strip_html
from components.clean.pii import PiiConfig, mask_pii
from components.clean.quality import QualityConfig, quality_filter
from components.shards import Document
from components.stats import StepStats

Stage = Callable[[Document], "str | None"]


def normalise_stage(config: CleanConfig, stats: StepStats) -> Stage:
    def stage(doc: Document) -> str | None:
        text = doc.text
        if config.strip_html:
            stripped = strip_html(text)
            stats.count("html_stripped", stripped != text)
            text = stripped
        if config.fix_mojibake:
            repaired = repair_mojibake(text)
            stats.count("mojibake_repaired", repaired != text)
            text = repaired
        doc.text = normalize(text, config.normalization)
        return None

    return stage


def length_stage(config: CleanConfig, stats: StepStats) -> Stage:
    def stage(doc: Document) -> str | None:
        return length_filter(doc.text, config.min_chars, config.max_chars)

    return stage


def langid_stage(config: LangIdConfig, stats: StepStats) -> Stage:
    identifier = LanguageIdentifier(config)

    def stage(doc: Document) -> str | None:
        decision = identifier.filter(doc.text)
        doc.meta["lang"], doc.meta["script"] = decision.lang, decision.script
        if decision.confusable:  # kept as a requested language the model confuses with the identified one
            doc.meta["lang_identified"] = decision.identified
            stats.count("langid_confusable_accepted")
            stats.count(f"langid_{decision.identified}_as_{decision.lang}")
        return decision.reason

    return stage


def quality_stage(config: QualityConfig, stats: StepStats) -> Stage:
    def stage(doc: Document) -> str | None:
        script = doc.meta.get("script") or detect_script(doc.text)
        return quality_filter(doc.text, doc.meta.get("lang", "und"), script, config)

    return stage


def pii_stage(config: PiiConfig, stats: StepStats) -> Stage:
    def stage(doc: Document) -> str | None:
        # the langid stage (when on) tagged the language; it picks the regions phones are read in
        doc.text, counts = mask_pii(doc.text, config, lang=doc.meta.get("lang"))
        for kind, n in counts.items():
            stats.count(f"pii_{kind}", n)
        return None

    return stage


@dataclass(frozen=True)
class StageEntry:
    name: str  # the stage's key in StepStats.stages
    section: str | None  # the CleanConfig field that turns it on when not None; None: always on
    build: Callable[[Any, StepStats], Stage]  # (that section, or the CleanConfig if None; stats) -> stage


# In order: langid tags lang/script for quality and pii; PII after the filters, which its masks would skew.
STAGES: tuple[StageEntry, ...] = (
    StageEntry("normalise", None, normalise_stage),
    StageEntry("length", None, length_stage),
    StageEntry("langid", "langid", langid_stage),
    StageEntry("quality", "quality", quality_stage),
    StageEntry("pii", "pii", pii_stage),
)


def build_stages(config: CleanConfig, stats: StepStats) -> list[tuple[str, Stage]]:
    """(name, stage) for each entry of STAGES this config turns on, in order; only those are built."""
    stages: list[tuple[str, Stage]] = []
    for entry in STAGES:
        section = config if entry.section is None else getattr(config, entry.section)
        if section is not None:
            stages.append((entry.name, entry.build(section, stats)))
    return stages


def run_stages(doc: Document, stages: list[tuple[str, Stage]], stats: StepStats) -> str | None:
    """Pass one document through the stages; the first drop reason ends it (and is returned),
    counted by stage and by the document's language ("und" before the language ID has run)."""
    for name, stage in stages:
        stats.stage(name, "in")
        reason = stage(doc)
        if reason is not None:
            stats.stage(name, reason)
            stats.language(doc.meta.get("lang", "und"), reason)
            return reason
        stats.stage(name, "out")
    return None
