"""Scoring your own text: one or more models on a text file the user brought, exactly as the
evaluate step scores its held-out set (the same `score_documents` through step._score_model:
rolling windows, evaluate.stride, bits per byte over UTF-8 bytes), one column per model.

    scores = score_text_file(["models:/m@champion", "runs:/<id>/model"], "my.jsonl", "out/", EvaluateConfig())

Formats, told by the file's name (local or s3://):
- JSONL (`.jsonl`, `.json`, `.jsonl.gz`, `.json.gz`, `.jsonl.zst`, `.json.zst`): one JSON object per
  line, the text under `text_field`; read by components.shards as the clean step reads its input.
- Parquet (`.parquet`): the text in column `text_field` (string, large_string, string_view or
  dictionary of strings); other columns are metadata.
- Plain text (`.txt`): one document per paragraph, a paragraph being the lines between blank lines
  (a blank line holds only whitespace). A document's text is its lines joined by "\\n", exactly as
  written otherwise (CRLF line ends read as LF; a UTF-8 byte-order mark opening the file skipped).

Decisions a reader might not guess:
- None of the clean step's transforms (normalisation, filters, dedup, PII masking) runs: the text is
  scored as written. What cannot be scored (a record without text, an empty text, invalid JSON,
  bytes that are not UTF-8, a paragraph over max_line_bytes) is quarantined with its reason, counted
  in results.json and listed in quarantine.jsonl, never dropped silently.
- A document's language is its `lang_field` value when it has one (by default `lang_hint`, the
  label homegrown's own documents carry and the evaluate step groups by, else `lang`), otherwise
  the clean step's language ID (components/clean/langid.py `identify`, under the run config's
  clean.langid thresholds; "und" where it cannot tell). results.json says how many came from each.
- Documents are held in memory, as the evaluate step holds its held-out set, and every model
  scores the same list in the same order: the table compares like with like.
"""

from __future__ import annotations

import codecs
import io
import json
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterator

from components import shards as shard_io
from components import storage
from components.clean.langid import LangIdConfig, LanguageIdentifier
from components.evaluate.config import EvaluateConfig
from components.evaluate.report import _fmt
from components.evaluate.step import _block, _device, _json_safe, _score_model, flat_metrics
from components.manifest import file_digest
from components.shards import Document, Quarantined

KIND = "text-file"  # results.json "kind"
FORMAT_NAMES = {"jsonl": "JSONL", "parquet": "Parquet", "text": "plain text, a document per paragraph"}
TEXT_SUFFIXES = (".txt",)
JSONL_SUFFIXES = tuple(s for s in shard_io.DOCUMENT_SUFFIXES if s != ".parquet")
DEFAULT_LANG_FIELDS = ("lang_hint", "lang")
LANGID = "langid"  # results.json language_from key for documents whose language the model identified
_WIDE_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
              (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))  # fmt: skip


class TextFileError(ValueError):
    """A text file that cannot be scored as a whole; the message names it and what to do."""


@dataclass
class TextDocuments:
    """What was read from a text file: the documents to score, each with meta['lang_hint'] set,
    what was quarantined, and how many documents took their language from each source
    ("field <name>" or LANGID)."""

    uri: str
    format: str  # "jsonl" | "parquet" | "text"
    documents: list[Document]
    quarantined: list[Quarantined] = field(default_factory=list)
    language_from: dict[str, int] = field(default_factory=dict)


@dataclass
class TextScores:
    results: dict[str, Any]  # as written to results.json
    report_markdown: str
    results_uri: str


def file_format(uri: str) -> str | None:
    """"jsonl", "parquet" or "text" from the file's name; None for a name none of them has."""
    name = uri.lower()
    if name.endswith(".parquet"):
        return "parquet"
    if name.endswith(JSONL_SUFFIXES):
        return "jsonl"
    if name.endswith(TEXT_SUFFIXES):
        return "text"
    return None


# ---- reading ------------------------------------------------------------------------------------


def read_text_file(uri: str, text_field: str = "text", lang_field: str | None = None,
                   langid: LangIdConfig | None = None, max_line_bytes: int | None = None) -> TextDocuments:  # fmt: skip
    """The documents of a JSONL, Parquet or .txt file (see the module docstring), languages assigned.

    lang_field: the record field naming a document's language (None: lang_hint, else lang);
    langid: thresholds for documents without one (None: LangIdConfig's defaults).
    Raises TextFileError naming the file for a name of no known format, a Parquet file without a
    text column `text_field`, UTF-16/32 or binary plain text, or a file with nothing to score;
    StorageError when it cannot be read."""
    read = read_documents_file(uri, text_field, max_line_bytes)
    read.language_from = assign_languages(read.documents, lang_field, langid)
    return read


def read_documents_file(uri: str, text_field: str = "text", max_line_bytes: int | None = None) -> TextDocuments:
    """read_text_file without the languages (language_from empty): `homegrown calibrate` identifies
    them itself, as the clean step does. Raises as read_text_file does."""
    fmt = file_format(uri)
    if fmt is None:
        raise TextFileError(
            f"{uri}: cannot tell the format from the name; name it .jsonl (one JSON object per line, the text "
            f"under {text_field!r}; also .jsonl.gz, .jsonl.zst), .parquet (a {text_field!r} string column) or .txt "
            "(plain text, one document per paragraph between blank lines)"
        )
    if fmt == "parquet":
        items = list(_parquet_items(uri, text_field, max_line_bytes))
    elif fmt == "text":
        items = list(_paragraphs(uri, max_line_bytes))
    else:
        items = list(shard_io.read_documents(uri, text_field, max_line_bytes=max_line_bytes))
    docs = [item for item in items if isinstance(item, Document)]
    quarantined = [item for item in items if isinstance(item, Quarantined)]
    if not docs:
        raise TextFileError(_nothing_to_score(uri, fmt, text_field, quarantined))
    return TextDocuments(uri, fmt, docs, quarantined)


def _nothing_to_score(uri: str, fmt: str, text_field: str, quarantined: list[Quarantined]) -> str:
    if not quarantined:
        return f"{uri}: empty, no document to score"
    reasons = Counter(q.reason for q in quarantined)
    first = quarantined[0]
    what = f"{uri}: no document to score: every record was quarantined ({_reasons(reasons)}); the first, " \
           f"{first.source}: {first.reason}{' (' + first.detail + ')' if first.detail else ''}"  # fmt: skip
    if fmt == "jsonl" and set(reasons) <= {f"missing_{text_field}", f"{text_field}_not_a_string"}:
        return f"{what}. Name the field holding the text with --text-field (it was {text_field!r})"
    return f"{what}. Fix the file, or give another"


def _parquet_items(uri: str, text_field: str, max_chars: int | None) -> Iterator[Document | Quarantined]:
    """Parquet rows through components.shards, after checking the text column here (its error names
    --text-field); an S3 object is downloaded once, and rows are named by the URI, not the copy."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    with storage.local_copy(uri) as path:
        try:
            schema = pq.read_schema(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise TextFileError(f"{uri}: not a readable Parquet file ({exc}); write it again, or name it for "
                                "its real format (.jsonl, .txt)") from exc  # fmt: skip
        if text_field not in schema.names:
            raise TextFileError(f"{uri}: no column {text_field!r} (columns: {schema.names}); name the text column "
                                "with --text-field")  # fmt: skip
        if not shard_io.is_text_type(schema.field(text_field).type):
            raise TextFileError(f"{uri}: column {text_field!r} is {schema.field(text_field).type}, not text; name "
                                "a string column with --text-field")  # fmt: skip
        local = str(path)
        # shards' Parquet reader on the copy itself: read_documents would tell the format from the copy's
        # name (an S3 object's temporary file has none) or download the object a second time
        for item in shard_io._parquet_documents(local, text_field, "id", max_chars):
            if isinstance(item, Quarantined):
                item.source = _renamed(item.source, local, uri)
            else:
                item.id = _renamed(item.id, local, uri)
            yield item


def _renamed(where: str, local: str, uri: str) -> str:
    return uri + where[len(local):] if where.startswith(local + ":") else where


def _paragraphs(uri: str, max_bytes: int | None) -> Iterator[Document | Quarantined]:
    """A .txt file's paragraphs as Documents (id "<uri>:<first line>"), or Quarantined: `not_utf8`
    (the paragraph holds bytes that are not UTF-8), `line_too_long` (over max_bytes, skipped without
    being held whole). Raises TextFileError for UTF-16/32 or binary content."""
    with storage.open_read(uri) as raw:
        handle = raw if isinstance(raw, io.BufferedReader) else io.BufferedReader(raw)  # s3 bodies are plain streams
        _check_plain_text(uri, handle.peek(4096))
        lines: list[bytes] = []  # the open paragraph's lines, without their line ends
        start = size = line_no = 0  # start 0: no paragraph open
        head = b""  # a paragraph's first bytes, for its quarantine row
        too_long = continued = False
        limit = max_bytes + 1 if max_bytes is not None else -1
        while chunk := handle.readline(limit):
            at_start, continued = not continued, not chunk.endswith(b"\n")
            if at_start:
                line_no += 1
                if line_no == 1:
                    chunk = chunk.removeprefix(codecs.BOM_UTF8)
                if _blank(chunk):
                    if start:
                        yield _paragraph(uri, start, lines, too_long, head, max_bytes)
                    lines, start, size, head, too_long = [], 0, 0, b"", False
                    continue
            if not start:
                start = line_no
            size += len(chunk)
            if len(head) < 200:
                head += chunk[: 200 - len(head)]
            if too_long or (max_bytes is not None and size > max_bytes):
                lines, too_long = [], True  # let go of what was read; skip to the next blank line
                continue
            lines.append(chunk.removesuffix(b"\n").removesuffix(b"\r"))
        if start:
            yield _paragraph(uri, start, lines, too_long, head, max_bytes)


def _check_plain_text(uri: str, head: bytes) -> None:
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            raise TextFileError(f"{uri}: {encoding} text, but text files must be UTF-8: re-encode it, e.g. "
                                f"`iconv -f {encoding} -t UTF-8 IN > OUT`")  # fmt: skip
    if b"\x00" in head:
        raise TextFileError(f"{uri}: NUL bytes near the start: binary data or UTF-16/32 text, not UTF-8 plain text; "
                            "convert it to UTF-8 text, or give a .jsonl or .parquet file")  # fmt: skip


def _blank(line: bytes) -> bool:
    """Whitespace only (Unicode whitespace too, e.g. U+3000); undecodable bytes are not blank."""
    try:
        return not line.decode("utf-8").strip()
    except UnicodeDecodeError:
        return False


def _paragraph(uri: str, start: int, lines: list[bytes], too_long: bool, head: bytes,
               max_bytes: int | None) -> Document | Quarantined:  # fmt: skip
    where = f"{uri}:{start}"
    shown = head.decode("utf-8", "backslashreplace")
    if too_long:
        return Quarantined(where, "line_too_long", shown, f"a paragraph over max_line_bytes ({max_bytes:,} bytes), "
                           "skipped without reading it whole; split it with blank lines")  # fmt: skip
    body = b"\n".join(lines)
    try:
        return Document(id=where, text=body.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = start + body.count(b"\n", 0, exc.start)
        return Quarantined(where, "not_utf8", shown, f"line {line}: byte 0x{body[exc.start]:02x} is not UTF-8; text "
                           "files must be UTF-8 (from cp1252/latin-1: `iconv -f cp1252 -t UTF-8 IN > OUT`)")  # fmt: skip


def assign_languages(docs: list[Document], lang_field: str | None = None,
                     langid: LangIdConfig | None = None) -> dict[str, int]:  # fmt: skip
    """Set each document's meta['lang_hint'] (what the evaluate step groups by): its `lang_field`
    value (None: lang_hint, else lang) when that is a non-empty string, else the language the clean
    step's identifier gives its text. Returns the count per source: "field <name>" or LANGID."""
    fields = (lang_field,) if lang_field else DEFAULT_LANG_FIELDS
    identifier: LanguageIdentifier | None = None
    sources: Counter[str] = Counter()
    for doc in docs:
        for name in fields:
            value = doc.meta.get(name)
            if isinstance(value, str) and value.strip():
                doc.meta["lang_hint"] = value.strip()
                sources[f"field {name}"] += 1
                break
        else:
            identifier = identifier or LanguageIdentifier(langid or LangIdConfig())
            doc.meta["lang_hint"] = identifier.identify(doc.text)[0]
            sources[LANGID] += 1
    return dict(sorted(sources.items()))


def _reasons(counts: Counter[str] | dict[str, int]) -> str:
    return ", ".join(f"{reason} {n}" for reason, n in sorted(counts.items()))


# ---- scoring ------------------------------------------------------------------------------------


def score_text_file(model_uris: list[str], text_uri: str, output_uri: str, config: EvaluateConfig, *,
                    text_field: str = "text", lang_field: str | None = None, langid: LangIdConfig | None = None,
                    max_line_bytes: int | None = None) -> TextScores:  # fmt: skip
    """Score each model (a Hugging Face model directory, s3:// prefix, models:/ or runs:/ URI; see
    step.load_model) on the file's documents, and write under output_uri:

        results.json     kind "text-file", the file (uri, format, sha256), documents, quarantined
                         {total, reasons}, language_from, config, and per model (in the order given) the
                         evaluate step's block: model_uri, metrics, per_language, per_source, metrics_flat,
                         eval_seconds
        report.md        the comparison table (render_text_report)
        quarantine.jsonl one row per quarantined record (source, reason, raw, detail), when any

    Raises TextFileError (see read_text_file), ValueError for an empty model list or a stride over
    a model's context, ModelDirError for a model that cannot be loaded."""
    if not model_uris:
        raise ValueError("no model to score: give at least one")
    read = read_text_file(text_uri, text_field, lang_field, langid, max_line_bytes)
    sha256, size = file_digest(text_uri)
    device = _device(config)
    blocks = []
    for uri in model_uris:
        scored, seconds, _ = _score_model(uri, read.documents, config, device, samples=False)
        block = _block(uri, scored)
        block["metrics_flat"] = flat_metrics(block)
        block["eval_seconds"] = seconds
        blocks.append(block)
    reasons = Counter(q.reason for q in read.quarantined)
    results: dict[str, Any] = {
        "kind": KIND,
        "text_uri": text_uri,
        "format": read.format,
        "text_field": text_field if read.format != "text" else None,
        "sha256": sha256,
        "bytes": size,
        "documents": len(read.documents),
        "quarantined": {"total": len(read.quarantined), "reasons": dict(sorted(reasons.items()))},
        "language_from": read.language_from,
        "config": config.model_dump(mode="json"),
        "models": blocks,
    }
    if read.quarantined:
        shard_io.write_records(storage.join(output_uri, "quarantine.jsonl"),
                               ({"source": q.source, "reason": q.reason, "raw": q.raw, "detail": q.detail}
                                for q in read.quarantined))  # fmt: skip
    report = render_text_report(results)
    storage.write_text(storage.join(output_uri, "report.md"), report)
    results_uri = storage.join(output_uri, "results.json")
    storage.write_text(results_uri, json.dumps(_json_safe(results), indent=2, ensure_ascii=False) + "\n")
    return TextScores(results, report, results_uri)


# ---- the report ---------------------------------------------------------------------------------

_MODEL_ROWS = [
    ("loss", "loss (nats/token)", "{:.4f}"),
    ("perplexity", "perplexity", "{:.2f}"),
    ("tokens", "tokens", "{:,.0f}"),
    ("tokens_per_char", "tokens/char", "{:.3f}"),
    ("eval_seconds", "seconds", "{:.2f}"),
]


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def render_text_report(results: dict[str, Any]) -> str:
    """Markdown: the file, what was quarantined, and bits per byte overall and per language (one
    column per model), then each model's loss, perplexity and tokens."""
    models = results["models"]
    heads = " | ".join(f"`{_cell(m['model_uri'])}`" for m in models)
    quarantined = results["quarantined"]
    field_note = f", text field `{results['text_field']}`" if results.get("text_field") else ""
    lines = [
        "# Scores on your text",
        "",
        f"- file: `{results['text_uri']}` ({FORMAT_NAMES[results['format']]}{field_note}, sha256 `{results['sha256'][:12]}`)",
        f"- documents scored: {results['documents']:,}",
        f"- quarantined (not scored): {quarantined['total']:,}"
        + (f" ({_reasons(quarantined['reasons'])}; each in quarantine.jsonl)" if quarantined["total"] else ""),
        "- language from: " + ", ".join(f"{'language ID' if k == LANGID else k} {n:,}"
                                        for k, n in results["language_from"].items()),  # fmt: skip
        "",
        "## Bits per byte",
        "",
        f"| | documents | bytes | {heads} |",
        "|---|---:|---:|" + "---:|" * len(models),
    ]
    first = models[0]

    def row(label: str, key: str | None) -> str:
        figures = [m["metrics"] if key is None else m["per_language"].get(key, {}) for m in models]
        base = first["metrics"] if key is None else first["per_language"][key]
        cells = " | ".join(_fmt("{:.4f}", f.get("bits_per_byte")) for f in figures)
        return f"| {label} | {base['documents']:,.0f} | {base['bytes']:,.0f} | {cells} |"

    lines.append(row("**all**", None))
    lines += [row(_cell(lang), lang) for lang in first["per_language"]]
    lines += ["", "Lower is better. Bits per byte compare across tokenizers; loss and perplexity (below) are per "
              "token, so they compare only between models sharing a tokenizer.", "",
              "## Per model", "", f"| | {heads} |", "|---|" + "---:|" * len(models)]  # fmt: skip
    for key, label, fmt in _MODEL_ROWS:
        cells = " | ".join(_fmt(fmt, m["eval_seconds"] if key == "eval_seconds" else m["metrics"].get(key))
                           for m in models)  # fmt: skip
        lines.append(f"| {label} | {cells} |")
    return "\n".join(lines) + "\n"
