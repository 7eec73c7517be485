"""The per-document stages of the clean step, run in order on every record.

A stage is a callable that may rewrite `doc.text` / `doc.meta` in place and returns None to
keep the document or a reason string to drop it. A pipeline is a plain list of stages built
from the config; `run_stages` counts, per stage, documents in, out and dropped by reason.
"""

from __future__ import annotations

from typing import Callable

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


def length_stage(config: CleanConfig) -> Stage:
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


def quality_stage(config: QualityConfig) -> Stage:
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


def build_stages(config: CleanConfig, stats: StepStats) -> list[tuple[str, Stage]]:
    """The stages this config turns on, in order (PII after the filters, which it would skew)."""
    stages: list[tuple[str, Stage]] = [("normalise", normalise_stage(config, stats)), ("length", length_stage(config))]
    if config.langid is not None:
        stages.append(("langid", langid_stage(config.langid, stats)))
    if config.quality is not None:
        stages.append(("quality", quality_stage(config.quality)))
    if config.pii is not None:
        stages.append(("pii", pii_stage(config.pii, stats)))
    return stages


def run_stages(doc: Document, stages: list[tuple[str, Stage]], stats: StepStats) -> str | None:
    """Pass one document through the stages; the first drop reason ends it (and is returned)."""
    for name, stage in stages:
        stats.stage(name, "in")
        reason = stage(doc)
        if reason is not None:
            stats.stage(name, reason)
            return reason
        stats.stage(name, "out")
    return None
