"""The chat evaluation's report: challenger against champion, per language, which conversations
were scored, and generated replies beside the reference (and the champion's), as Markdown
(report.md, MLflow) and as one HTML page (the KFP HTML artifact) built on plots.report_html."""

from __future__ import annotations

import html
from typing import Any

from components.evaluate import plots
from components.evaluate.report import _fence, _fmt, metrics_table

ROWS = [
    ("bits_per_byte", "bits per byte", "{:.4f}"),
    ("loss", "loss (nats/assistant token)", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("tokens", "assistant tokens", "{:,.0f}"),
    ("bytes", "reply bytes", "{:,.0f}"),
    ("documents", "conversations", "{:,.0f}"),
]
DEFINITION = (
    "Scored: the assistant's tokens (each reply and its end-of-turn token) given the conversation before them, "
    "rendered with each model's own chat template; bits per byte = their nats / ln 2 / the UTF-8 bytes of the "
    "replies' text, so models with different tokenizers compare on the same conversations."
)


def _sample_rows(sample: dict[str, Any]) -> list[tuple[str, str, bool | None]]:
    """(label, reply, stopped) for each reply a sample holds, reference first."""
    rows: list[tuple[str, str, bool | None]] = [
        ("reference", sample["reference"], None),
        ("greedy", sample["greedy"], sample.get("greedy_stopped")),
        ("sampled", sample["sampled"], sample.get("sampled_stopped")),
    ]
    if "champion_greedy" in sample:
        rows.append(("champion greedy", sample["champion_greedy"], sample.get("champion_greedy_stopped")))
    return rows


def _stop_note(stopped: bool | None) -> str:
    return "" if stopped is None or stopped else " (no end of turn within max_new_tokens)"


def render_chat_report(results: dict[str, Any]) -> str:
    """Markdown from a chat results.json (components/evaluate/chat.py)."""
    metrics, champion = results["metrics"], results.get("champion")
    counts = results.get("conversations") or {}
    template = results.get("chat_template") or {}
    lines = [
        "# Chat evaluation report",
        "",
        f"- model: `{results['model_uri']}` (chat template: {template.get('source', '?')}, end of turn "
        f"`{template.get('end_of_turn', '?')}`)",
        f"- held-out conversations: `{results['eval_manifest_uri']}` (digest `{results['eval_digest'][:12]}`)",
    ]
    if champion:
        lines.append(f"- champion: `{champion['model_uri']}`" + (" (cached scores)" if champion.get("cached") else ""))
    lines += ["", DEFINITION, "", "## Metrics", ""]
    lines += metrics_table(metrics, champion, ROWS)

    if counts:
        lines += ["", "## Conversations", "", f"{counts['scored']:,} of {counts['total']:,} scored"
                  + (f", {counts['over_context']:,} of them longer than the model's context (scored in rolling "
                     "windows)" if counts.get("over_context") else "") + "."]  # fmt: skip
        if counts.get("unscored"):
            lines += ["", "| not scored: reason | conversations | ids (first few) |", "|---|---:|---|"]
            for reason, n in counts["unscored"].items():
                ids = ", ".join(f"`{i}`" for i in counts.get("unscored_ids", {}).get(reason, []))
                lines.append(f"| {reason} | {n:,} | {ids} |")

    per_language = results.get("per_language") or {}
    if per_language:
        champ_lang = (champion or {}).get("per_language") or {}
        lines += ["", "## Per language", "",
                  "| language | conversations | assistant tokens | reply bytes | bits per byte |"
                  + (" champion bits per byte |" if champion else ""),
                  "|---|---:|---:|---:|---:|" + ("---:|" if champion else "")]  # fmt: skip
        for lang, m in per_language.items():
            row = (f"| {lang} | {m['documents']:,.0f} | {m['tokens']:,.0f} | {m['bytes']:,.0f} | "
                   f"{_fmt('{:.4f}', m['bits_per_byte'])} |")  # fmt: skip
            if champion:
                row += f" {_fmt('{:.4f}', champ_lang.get(lang, {}).get('bits_per_byte'))} |"
            lines.append(row)

    samples = results.get("samples") or []
    if samples:
        lines += ["", "## Replies to held-out prompts", ""]
        for s in samples:
            lines += [f"### `{s['id']}`" + (f" ({s['lang']})" if s.get("lang") else ""), "", "Prompt:", "",
                      _fence(s["prompt"]), ""]  # fmt: skip
            for label, reply, stopped in _sample_rows(s):
                lines += [f"{label.capitalize()}{_stop_note(stopped)}:", "", _fence(reply), ""]
    return "\n".join(lines).rstrip() + "\n"


def _samples_html(samples: list[dict[str, Any]]) -> str:
    parts = ["<h2>Replies to held-out prompts</h2>"]
    for s in samples:
        title = html.escape(s["id"]) + (f" ({html.escape(str(s['lang']))})" if s.get("lang") else "")
        parts.append(f"<details open><summary><code>{title}</code></summary>"
                     f"<pre class='prompt'>{html.escape(s['prompt'])}</pre><table class='replies'>")  # fmt: skip
        for label, reply, stopped in _sample_rows(s):
            parts.append(f"<tr><th>{html.escape(label)}{html.escape(_stop_note(stopped))}</th>"
                         f"<td><pre>{html.escape(reply)}</pre></td></tr>")  # fmt: skip
        parts.append("</table></details>")
    return "\n".join(parts)


def report_html(results: dict[str, Any], losses: list[float] | None = None, gate_markdown: str | None = None) -> str:
    """plots.report_html's page (headline figures, loss curve, bits per byte by language, gate)
    with the conversation counts and the replies added: one self-contained page for KFP's HTML
    artifact and MLflow."""
    page = plots.report_html(results, losses, gate_markdown)
    body, end = page.rsplit("</body></html>", 1)
    counts = results.get("conversations") or {}
    parts = [
        "<style>.replies th{text-align:left;vertical-align:top;white-space:nowrap}.replies td{text-align:left}"
        "pre{white-space:pre-wrap;margin:.2em 0}.prompt{background:#f4f4f4;padding:.4em}</style>",
        f"<p>{html.escape(DEFINITION)}</p>",
    ]
    if counts:
        unscored = "; ".join(f"{html.escape(r)}: {n}" for r, n in counts.get("unscored", {}).items())
        parts.append(f"<p>{counts['scored']} of {counts['total']} held-out conversations scored, "
                     f"{counts.get('over_context', 0)} in rolling windows (longer than the context)"
                     + (f"; not scored: {unscored}" if unscored else "") + ".</p>")  # fmt: skip
    if results.get("samples"):
        parts.append(_samples_html(results["samples"]))
    body = body.replace("<h1>Evaluation</h1>", "<h1>Chat evaluation</h1>", 1)
    return body + "\n".join(parts) + "\n</body></html>" + end
