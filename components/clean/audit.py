"""Auditing the clean step's drops: the per-language table of its report, and dropped documents
shown beside the number that dropped them, so a person sees in a minute whether a rule is wrong
for their language.

    language_table(stats)                      # Markdown: per language, in / kept / dropped by reason
    explain(doc, config)                       # {"reason", "value", "threshold", "detail"} for one sample
    samples(output_uri, "gopher_top_2gram", "zh", 5)   # the kept samples of a reason (and language)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from components import shards, storage
from components.clean.config import CleanConfig
from components.clean.langid import LanguageIdentifier, detect_script
from components.clean.quality import QualityConfig, rules_for, statistics
from components.shards import Document
from components.stats import StepStats

KEPT = "kept"


def language_table(stats: StepStats, top_reasons: int = 6) -> str:
    """Markdown table, one row per language (most documents first): documents in, kept, kept
    share, then the `top_reasons` most frequent drop reasons overall as columns and the rest
    summed in "other". Languages are those the language ID gave ("und": not determined, which
    includes documents dropped before it ran, e.g. too short)."""
    totals: dict[str, int] = {}
    for counts in stats.languages.values():
        for key, n in counts.items():
            if key != KEPT:
                totals[key] = totals.get(key, 0) + n
    reasons = sorted(totals, key=lambda r: (-totals[r], r))[:top_reasons]
    head = ["language", "in", "kept", "kept %", *reasons, "other"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = sorted(stats.languages.items(), key=lambda item: (-sum(item[1].values()), item[0]))
    for lang, counts in rows:
        total = sum(counts.values())
        kept = counts.get(KEPT, 0)
        other = total - kept - sum(counts.get(r, 0) for r in reasons)
        cells = [lang, str(total), str(kept), f"{kept / total:.1%}", *(str(counts.get(r, 0)) for r in reasons), str(other)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


@dataclass(frozen=True)
class Explanation:
    """Why one document was dropped: the drop reason, the number compared and the threshold it
    crossed (None where the reason has no single number: duplicates, boilerplate phrases), and a
    sentence saying which side of the threshold drops."""

    reason: str
    value: float | None
    threshold: float | None
    detail: str


def explain(doc: Document, config: CleanConfig, identifier: LanguageIdentifier | None = None) -> Explanation:
    """The number behind a dropped sample's `meta.drop_reason`, recomputed under `config` (the
    config the clean run used): quality rules for the sample's language and script, language-ID
    confidence, text length. The sample's text is what the rule saw (normalised), unless it was
    cut for the sample (meta.sample_cut_from_chars)."""
    reason = doc.meta.get("drop_reason", "")
    lang = doc.meta.get("lang", "und")
    script = doc.meta.get("script") or detect_script(doc.text)
    quality = config.quality or QualityConfig()
    thresholds = quality.thresholds_for(lang)
    values = statistics(doc.text, script, thresholds)
    candidates = [r for r in rules_for(thresholds) if r.reason == reason and values[r.key] is not None and r.limit(thresholds) is not None]
    failing = [r for r in candidates if r.fails(values[r.key], r.limit(thresholds))]
    if reason == "boilerplate" and not failing:
        return Explanation(reason, None, None, "'lorem ipsum' in the text (drop_lorem_ipsum)")
    if failing or candidates:
        rule = (failing or candidates)[0]
        side = "below the minimum" if rule.bound == "min" else "above the maximum"
        return Explanation(reason, values[rule.key], rule.limit(thresholds), f"{rule.key} for {lang} ({script}): {side} drops")
    if reason in ("language_uncertain", "language_undetermined", "language_not_wanted", "script_not_wanted"):
        identifier = identifier or LanguageIdentifier(config.langid)
        decision = identifier.filter(doc.text)
        floor = identifier.config.min_confidence_per_language.get(decision.identified, identifier.config.min_confidence)
        return Explanation(reason, decision.confidence, floor,
                           f"identified as {decision.identified} ({decision.script}); wanted: {identifier.config.languages}")
    if reason in ("empty", "too_short", "too_long"):
        chars = doc.meta.get("sample_cut_from_chars", len(doc.text))
        limit = config.max_chars if reason == "too_long" else config.min_chars
        return Explanation(reason, float(chars), float(limit), "characters after normalising")
    return Explanation(reason, None, None, "no single number: see the clean step's docs for this reason")


def samples(output_uri: str, reason: str, lang: str | None = None, n: int = 10) -> list[Document]:
    """Up to `n` dropped samples of `reason` (of language `lang`) from a clean output.
    Raises FileNotFoundError naming the reasons that have samples when there are none of `reason`."""
    uri = storage.join(output_uri, "dropped", f"{reason}.jsonl")
    if not storage.exists(uri):
        folder = storage.join(output_uri, "dropped")
        have = sorted(u.rsplit("/", 1)[-1].removesuffix(".jsonl") for u in storage.list_files(folder)) if storage.exists(folder) else []
        raise FileNotFoundError(f"{uri}: no dropped samples for {reason!r}; reasons with samples: {', '.join(have) or 'none'}")
    rows = shards.read_json_lines(uri)
    docs = [Document(r["id"], r["text"], r["meta"]) for r in rows]
    return [d for d in docs if lang is None or d.meta.get("lang") == lang][:n]


def explained(docs: list[Document], config: CleanConfig) -> list[dict[str, Any]]:
    """samples() with their Explanation, as rows: id, lang, script, value, threshold, detail, text."""
    identifier = LanguageIdentifier(config.langid) if config.langid is not None else None
    out = []
    for doc in docs:
        why = explain(doc, config, identifier)
        out.append({"id": doc.id, "lang": doc.meta.get("lang", "und"), "script": doc.meta.get("script", ""),
                    "reason": why.reason, "value": why.value, "threshold": why.threshold, "detail": why.detail,
                    "text": doc.text})  # fmt: skip
    return out
