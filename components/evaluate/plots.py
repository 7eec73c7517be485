"""Figures for the evaluation report: the training loss curve and bits-per-byte per language,
challenger against champion. Rendered with matplotlib (Agg, no display) as figures for MLflow
and as one self-contained HTML page (inline SVG) for the KFP UI."""

from __future__ import annotations

import html
import io
from typing import Any


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def loss_figure(losses: list[float]):
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 3.2))
    ax.plot(range(1, len(losses) + 1), losses, linewidth=1.2)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.set_title("Training loss")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def languages_figure(results: dict[str, Any]):
    """Bits per byte per language; the champion's beside it when there is one."""
    plt = _pyplot()
    mine = results.get("per_language") or {}
    theirs = (results.get("champion") or {}).get("per_language") or {}
    langs = sorted(mine, key=lambda lang: -(mine[lang].get("documents") or 0))[:30]  # the 30 largest
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(langs) + 2), 3.6))
    width = 0.4 if theirs else 0.8
    xs = range(len(langs))
    ax.bar([x - (width / 2 if theirs else 0) for x in xs], [mine[lang]["bits_per_byte"] for lang in langs],
           width, label="challenger")  # fmt: skip
    if theirs:
        ax.bar([x + width / 2 for x in xs], [theirs.get(lang, {}).get("bits_per_byte") or 0 for lang in langs],
               width, label="champion")  # fmt: skip
        ax.legend()
    # names from data are text: "$...$" in one would otherwise be parsed as mathtext (and may not parse)
    ax.set_xticks(list(xs), langs, rotation=60, fontsize=8, parse_math=False)
    ax.set_ylabel("bits per byte (lower is better)")
    ax.set_title("Held-out bits per byte by language")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def _svg(fig) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg")
    _pyplot().close(fig)
    svg = buffer.getvalue()
    return svg[svg.index("<svg") :]  # drop the XML prolog and doctype: inline in HTML


def report_html(results: dict[str, Any], losses: list[float] | None, gate_markdown: str | None = None) -> str:
    """One page: headline figures, the two plots, (the gate)."""
    metrics = results["metrics"]
    champion = (results.get("champion") or {}).get("metrics") or {}
    rows = [("bits per byte", metrics.get("bits_per_byte"), champion.get("bits_per_byte")),
            ("perplexity", metrics.get("perplexity"), champion.get("perplexity")),
            ("loss", metrics.get("loss"), champion.get("loss"))]  # fmt: skip
    cell = lambda v: "–" if v is None else f"{v:.4f}"  # noqa: E731
    table = "".join(f"<tr><td>{name}</td><td>{cell(a)}</td><td>{cell(b)}</td></tr>" for name, a, b in rows)
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Evaluation</title>",
        "<style>body{font-family:sans-serif;margin:1.5em}td,th{padding:.2em .8em;text-align:right}"
        "td:first-child{text-align:left}</style></head><body>",
        f"<h1>Evaluation</h1><p>model <code>{html.escape(results['model_uri'])}</code>, eval set digest "
        f"<code>{html.escape(results.get('eval_digest', '')[:12])}</code></p>",
        f"<table><tr><th></th><th>challenger</th><th>champion</th></tr>{table}</table>",
    ]
    if losses:
        parts.append(_svg(loss_figure(losses)))
    if results.get("per_language"):
        parts.append(_svg(languages_figure(results)))
    if gate_markdown:
        parts.append(f"<h2>Gate</h2><pre>{html.escape(gate_markdown)}</pre>")
    parts.append("</body></html>")
    return "\n".join(parts)
