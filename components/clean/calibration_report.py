"""The report of `homegrown calibrate`: per language, per rule, the reference's distribution, the
chosen threshold and where it came from, as one self-contained HTML page (histograms,
matplotlib Agg, inline PNG) and as JSON (the same figures, without the histograms, for scripts and MLflow)."""

from __future__ import annotations

import base64
import html
import io
from typing import Any

import numpy as np

from components.clean.calibrate import LanguageCalibration, Reference, RuleCalibration
from components.evaluate.plots import _pyplot


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "off"
    return f"{value:g}" if float(value).is_integer() else f"{value:.{digits}f}"


def rule_summary(rule: RuleCalibration) -> dict[str, Any]:
    """One table row: rule, reason, bound, base, threshold, source quantile, how many documents
    the rule applies to, share it keeps alone, bootstrap spreads (None where not computed)."""
    return {
        "rule": rule.key, "reason": rule.reason, "bound": rule.bound, "base": rule.base, "threshold": rule.threshold,
        "quantile": rule.quantile, "applies_to": int(len(rule.values)), "kept_alone": rule.kept_alone,
        "spread_harrell_davis": rule.spread_hd, "spread_sample_quantile": rule.spread_sample,
    }  # fmt: skip


def summary(calibrations: list[LanguageCalibration], reference: Reference, keep: float) -> dict[str, Any]:
    """The report as JSON-ready data."""
    return {
        "keep": keep,
        "not_calibrated": {"dropped_before_quality": dict(reference.dropped), "identified_as": dict(reference.identified_as),
                           "too_few_documents": reference.skipped},  # fmt: skip
        "languages": {
            c.lang: {
                "documents": c.documents, "scripts": dict(c.scripts), "tail": c.tail, "kept_with_base": c.kept_base,
                "kept_calibrated": c.kept, "min_confidence": c.min_confidence, "identified": c.identified,
                "overrides": c.thresholds, "rules": [rule_summary(r) for r in c.rules],
            }  # fmt: skip
            for c in calibrations
        },
    }


def _histograms(c: LanguageCalibration) -> str:
    """One PNG (inline, base64) of small histograms: each rule's reference values, base and calibrated threshold."""
    plt = _pyplot()
    rules = [r for r in c.rules if len(r.values)]
    if not rules:
        return ""
    cols = 4
    fig, axes = plt.subplots((len(rules) + cols - 1) // cols, cols, figsize=(12, 1.9 * ((len(rules) + cols - 1) // cols)),
                             squeeze=False)  # fmt: skip
    for ax, rule in zip(axes.flat, rules):
        values = rule.values[np.isfinite(rule.values)]
        ax.hist(values, bins=min(30, max(5, len(np.unique(values)))), color="#7a9cc6")
        if rule.base is not None:
            ax.axvline(rule.base, color="#888888", linestyle="--", linewidth=1)
        if rule.threshold is not None and rule.threshold != rule.base:
            ax.axvline(rule.threshold, color="#c0392b", linewidth=1.2)
        ax.set_title(rule.key, fontsize=7, loc="left")
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[len(rules):]:
        ax.axis("off")
    fig.suptitle(f"{c.lang}: reference distribution per rule (dashed: base threshold, red: calibrated)", fontsize=9)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.05, top=1 - 0.55 / fig.get_figheight(), hspace=0.7, wspace=0.2)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    return f"<img alt='histograms for {html.escape(c.lang)}' src='data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}'>"


def report_html(calibrations: list[LanguageCalibration], reference: Reference, keep: float, source: str) -> str:
    """One page: what was not calibrated and why, then per language a table and a histogram per rule."""
    esc = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Quality calibration</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:.15em .6em;text-align:right}"
        "td:first-child,td:nth-child(2){text-align:left}.figs{display:flex;flex-wrap:wrap}</style></head><body>",
        f"<h1>Quality calibration</h1><p>reference <code>{esc(source)}</code>; target: keep {keep:.1%} per language. "
        "Thresholds are Harrell-Davis quantiles of the reference, never stricter than the base config "
        "(components/clean/calibrate.py says why).</p>",
    ]
    if reference.dropped or reference.skipped or reference.identified_as:
        parts.append("<h2>Not calibrated</h2><ul>")
        for reason, count in sorted(reference.dropped.items()):
            parts.append(f"<li>{count} documents dropped before the quality rules: {esc(reason)}</li>")
        for lang, count in sorted(reference.identified_as.items()):
            parts.append(f"<li>{count} documents identified as {esc(lang)}</li>")
        for lang, count in sorted(reference.skipped.items()):
            parts.append(f"<li>{esc(lang)}: {count} documents, too few to calibrate</li>")
        parts.append("</ul>")
    for c in calibrations:
        parts.append(
            f"<h2>{esc(c.lang)}</h2><p>{c.documents} documents ({esc(', '.join(f'{s} {n}' for s, n in c.scripts.most_common()))}); "
            f"kept with the base config {c.kept_base:.1%}, calibrated {c.kept:.1%}; tail probability {c.tail:.4f}</p>"
        )
        head = ("rule", "drop reason", "bound", "base", "calibrated", "quantile", "applies to", "kept alone",
                "sd kept (Harrell-Davis)", "sd kept (sample quantile)")  # fmt: skip
        parts.append("<table><tr>" + "".join(f"<th>{h}</th>" for h in head) + "</tr>")
        for r in c.rules:
            cells = (r.key, r.reason, r.bound, _fmt(r.base), _fmt(r.threshold),
                     "base kept" if r.quantile is None else f"{r.quantile:.4f}", str(len(r.values)), f"{r.kept_alone:.1%}",
                     "" if r.spread_hd is None else f"{r.spread_hd:.4f}", "" if r.spread_sample is None else f"{r.spread_sample:.4f}")  # fmt: skip
            parts.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
        parts.append("</table>")
        parts.append(_histograms(c))
    parts.append("</body></html>")
    return "\n".join(parts)
