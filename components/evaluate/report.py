"""The Markdown report: challenger vs champion, per language, samples."""

from __future__ import annotations

from typing import Any

ROWS = [
    ("bits_per_byte", "bits per byte", "{:.4f}"),
    ("loss", "loss (nats/token)", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("tokens", "tokens", "{:,.0f}"),
    ("bytes", "bytes", "{:,.0f}"),
    ("documents", "documents", "{:,.0f}"),
]


def _fmt(fmt: str, value: Any) -> str:
    return "–" if value is None or value != value else fmt.format(value)  # None or NaN


def _fence(text: str) -> str:
    ticks = "```"
    while ticks in text:
        ticks += "`"
    return f"{ticks}text\n{text}\n{ticks}"


def metrics_table(metrics: dict[str, Any], champion: dict[str, Any] | None,
                  rows: list[tuple[str, str, str]]) -> list[str]:
    """The metrics as Markdown table lines: (key, label, format) per row; challenger, champion and
    their difference (bits per byte, loss) when a champion block is given."""
    if not champion:
        return ["| metric | value |", "|---|---:|",
                *(f"| {label} | {_fmt(fmt, metrics.get(key))} |" for key, label, fmt in rows)]  # fmt: skip
    lines = ["| metric | challenger | champion | Δ |", "|---|---:|---:|---:|"]
    for key, label, fmt in rows:
        mine, theirs = metrics.get(key), champion["metrics"].get(key)
        delta = _fmt("{:+.4f}", mine - theirs) if key in ("bits_per_byte", "loss") else ""
        lines.append(f"| {label} | {_fmt(fmt, mine)} | {_fmt(fmt, theirs)} | {delta} |")
    return lines + ["", "Lower bits per byte is better; Δ = challenger − champion."]


def render_report(results: dict[str, Any]) -> str:
    metrics = results["metrics"]
    champion = results.get("champion")
    lines = [
        "# Evaluation report",
        "",
        f"- model: `{results['model_uri']}`",
        f"- eval set: `{results['eval_manifest_uri']}` (digest `{results['eval_digest'][:12]}`)",
    ]
    if champion:
        lines.append(f"- champion: `{champion['model_uri']}`")
    lines += ["", "## Metrics", ""]
    lines += metrics_table(metrics, champion, ROWS)

    per_language = results.get("per_language") or {}
    if per_language:
        lines += ["", "## Per language", ""]
        champ_lang = (champion or {}).get("per_language") or {}
        header = "| language | documents | tokens | bytes | tokens/char | tokens/word | bits per byte |"
        rule = "|---|---:|---:|---:|---:|---:|---:|"
        if champion:
            header += " champion bits per byte |"
            rule += "---:|"
        lines += [header, rule]
        for lang, m in per_language.items():
            row = (
                f"| {lang} | {m['documents']:,.0f} | {m['tokens']:,.0f} | {m['bytes']:,.0f} | "
                f"{_fmt('{:.3f}', m.get('tokens_per_char'))} | {_fmt('{:.3f}', m.get('tokens_per_word'))} | "
                f"{m['bits_per_byte']:.4f} |"
            )
            if champion:
                row += f" {_fmt('{:.4f}', champ_lang.get(lang, {}).get('bits_per_byte'))} |"
            lines.append(row)

    per_source = results.get("per_source") or {}
    if per_source:
        champ_source = (champion or {}).get("per_source") or {}
        lines += ["", "## Per source", "", "| source | documents | bits per byte | champion bits per byte |",
                  "|---|---:|---:|---:|"]  # fmt: skip
        for source, m in per_source.items():
            theirs = champ_source.get(source, {}).get("bits_per_byte")
            lines.append(f"| {source} | {m['documents']:,.0f} | {m['bits_per_byte']:.4f} | {_fmt('{:.4f}', theirs)} |")

    samples = results.get("samples") or []
    if samples:
        lines += ["", "## Samples", ""]
        for s in samples:
            lines += [f"### Prompt: `{s['prompt']}`", "", "Greedy:", "", _fence(s["prompt"] + s["greedy"]), ""]
            lines += ["Sampled:", "", _fence(s["prompt"] + s["sampled"]), ""]
    return "\n".join(lines).rstrip() + "\n"
