"""Text normalisation: Unicode normal form, invisible characters, whitespace.

Decisions a reader might not guess:
- Line breaks of every kind (\\r\\n, \\r, \\v, \\f, U+0085, U+2028, U+2029) become \\n.
- Removed: C0/C1 control characters other than \\t and \\n, lone surrogates (they cannot be
  written as UTF-8), and the invisible zero-width characters U+200B, U+2060, U+FEFF, U+00AD.
  ZWNJ/ZWJ (U+200C/U+200D) are kept: they change spelling in Persian and Indic scripts and
  join emoji sequences, so removing them would corrupt text rather than clean it.
- Horizontal whitespace other than \\t collapses to one space; lines are stripped; three or
  more newlines become two (paragraph breaks survive); the text is stripped.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Literal

ZERO_WIDTH = "\u200b\u2060\ufeff\u00ad"

_REMOVE = {
    cp: None
    for cp in [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000), *map(ord, ZERO_WIDTH)]
    if cp not in (0x09, 0x0A)
}
_SPACES = re.compile(r"[^\S\t\n]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def unicode_form(text: str, form: Literal["NFC", "NFKC"]) -> str:
    return unicodedata.normalize(form, text)


def remove_invisible(text: str) -> str:
    """Unify line breaks to \\n, then drop control, surrogate and zero-width characters."""
    return "\n".join(text.splitlines()).translate(_REMOVE)


def normalize_whitespace(text: str) -> str:
    lines = (_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def normalize(text: str, form: Literal["NFC", "NFKC"] = "NFKC") -> str:
    """All stages in order: normal form, invisible characters, whitespace."""
    return normalize_whitespace(remove_invisible(unicode_form(text, form)))


def repair_mojibake(text: str) -> str:
    """Undo mis-decoded UTF-8 ("donÃ¢â‚¬â„¢t" → "don't") with ftfy; other text is left alone."""
    import ftfy

    return ftfy.fix_encoding(text)


_HTML_BLOCKS = re.compile(r"<(script|style|noscript)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9:-]*(\s[^<>]*)?/?>|<!--.*?-->", re.DOTALL)


def strip_html(text: str) -> str:
    """Remnants of HTML out: script/style blocks, tags (block ends become line breaks), entities."""
    import html

    text = _HTML_BLOCKS.sub(" ", text)
    text = _HTML_BREAKS.sub("\n", text)
    return html.unescape(_HTML_TAG.sub("", text))
