"""The per-document stages of the clean step, run in order on every record.

A stage is a callable that may rewrite `doc.text` / `doc.meta` in place and returns None to
keep the document or a reason string to drop it. A pipeline is a plain list of stages built
from the config; `run_stages` counts, per stage, documents in, out and dropped by reason.
"""

from __future__ import annotations

from typing import Callable

from components.clean.config import CleanConfig
from components.clean.filters import length_filter
from components.clean.normalize import normalize
from components.shards import Document
from components.stats import StepStats

Stage = Callable[[Document], "str | None"]


def normalise_stage(config: CleanConfig) -> Stage:
    def stage(doc: Document) -> str | None:
        doc.text = normalize(doc.text, config.normalization)
        return None

    return stage


def length_stage(config: CleanConfig) -> Stage:
    def stage(doc: Document) -> str | None:
        return length_filter(doc.text, config.min_chars, config.max_chars)

    return stage


def build_stages(config: CleanConfig) -> list[tuple[str, Stage]]:
    """The stages this config turns on, in order."""
    stages: list[tuple[str, Stage]] = [("normalise", normalise_stage(config)), ("length", length_stage(config))]
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
