"""The folded view every PII rule matches on: every script's digits, spaces and full-width forms as ASCII.

The clean step normalises to NFC, which
keeps full-width forms, no-break spaces and the digits of each script as written. So every rule
matches on a folded VIEW of the text (`fold`): one code point for one code point, the same
length, where
- every decimal digit (Unicode category Nd: Arabic-Indic ٠-٩, Persian ۰-۹, Devanagari ०-९,
  Bengali, Thai, full-width １, ...) is its ASCII digit (`unicodedata.decimal`);
- full-width ASCII (U+FF01-FF5E: ＡＢＣ, ＠, ．, ＋, （）, ，, ：) is ASCII;
- every space separator (category Zs: U+00A0 and U+202F no-break spaces of French typography,
  thin spaces, the ideographic space U+3000, ...) is U+0020;
- hyphens, figure dash, en dash and minus signs (U+2010-2013, U+2212, U+FE63, U+FF0D) are "-"
  (em dash U+2014 and U+2015 stay: they separate words, not digits, and folding them would
  glue a word to an e-mail address after "—");
- the Arabic decimal and thousands separators U+066B / U+066C are "." and ",".
A rule's matches are spans of the view, and the placeholders replace the same spans of the
ORIGINAL text: everything outside a masked span is left exactly as written. Patterns are
ASCII on the view with ASCII-only boundaries, so numbers glued to Chinese, Hindi or Arabic text
are found. libphonenumber reads these digits itself too, but the prefilter, the date, year and
thousands checks and the grouping comparison are ASCII patterns: it is given the view.
"""

from __future__ import annotations

import sys
import unicodedata
from functools import cache

# one-character replacements besides digits, spaces and full-width ASCII (see the module doc)
_DASHES = "\u2010\u2011\u2012\u2013\u2212\ufe63"  # hyphen, non-breaking hyphen, figure dash, en dash, minus, small hyphen-minus
_ARABIC_SEPARATORS = {0x066B: ".", 0x066C: ","}  # ARABIC DECIMAL SEPARATOR, ARABIC THOUSANDS SEPARATOR


@cache
def fold_table() -> dict[int, int]:
    """The `str.translate` table of `fold`: code point -> ASCII code point, one for one.

    Built from the running Python's `unicodedata` (Unicode 14.0 on Python 3.11) in about 0.05 s
    on first use; 758 entries there: 650 non-ASCII decimal digits, 16 non-ASCII space
    separators, the 94 full-width ASCII forms (10 of them digits), 6 hyphens/dashes and the
    2 Arabic number separators.
    """
    table: dict[int, int] = {}
    for cp in range(0x80, sys.maxunicode + 1):
        ch = chr(cp)
        digit = unicodedata.decimal(ch, None)  # defined exactly for category Nd
        if digit is not None:
            table[cp] = 0x30 + digit
        elif ch.isspace() and unicodedata.category(ch) == "Zs":
            table[cp] = 0x20
    table.update({cp: cp - 0xFEE0 for cp in range(0xFF01, 0xFF5F)})  # full-width ! .. ~
    table.update({ord(ch): ord("-") for ch in _DASHES})
    table.update({cp: ord(ch) for cp, ch in _ARABIC_SEPARATORS.items()})
    return table


def fold(text: str) -> str:
    """`text` as the rules read it: the same length, each character folded per `fold_table`.

    Position i of the result is position i of `text`, so a span matched in it is the span to
    replace in `text`. ASCII text is returned as is (same object).
    """
    if text.isascii():
        return text
    view = text.translate(fold_table())
    assert len(view) == len(text), "fold_table maps one code point to one code point"
    return view
