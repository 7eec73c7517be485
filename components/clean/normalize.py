'''Text normalisation: line breaks, control and invisible characters, Unicode normal form, spacing.

The rule every stage here follows: nothing that carries meaning in the document's script is
removed or changed. What each character does is taken from The Unicode Standard, Version 16.0
(Core Specification, "§" below) and its annexes (UAX #9 bidi, UAX #14 line breaking, UAX #15
normalisation, UAX #29 segmentation, UTS #51 emoji).

Normal form (`form`):
- "NFC" (the default): canonical composition. Canonically equivalent strings are by definition
  the same text (§3.7 conformance C6, UAX #15), so this changes only how a character is spelt
  in code points. It is what W3C Character Model and most corpus pipelines use. One visible
  effect: the 12 CJK compatibility ideographs with canonical mappings (U+F900 block) become
  their unified ideographs, as every NFC process does.
- "NFC_FULLWIDTH_ALNUM": NFC, then full-width Latin letters and digits (U+FF10–FF19,
  U+FF21–FF3A, U+FF41–FF5A) become ASCII: "ＡＢＣ１２３" -> "ABC123". They are width variants
  kept for round trips to East Asian legacy encodings (§18.5, decomposition tag <wide>), so
  a number or name reads the same and regexes, dedup and tokenizers see one spelling.
  Full-width punctuation ("，：（）！？"), the ideographic space U+3000 and half-width katakana
  are left: they are the native forms of Chinese and Japanese text, not wide ASCII.
- "NFKC": compatibility composition. It rewrites meaning: "x²" -> "x2", "H₂O" -> "H2O",
  "85 ㎡" -> "85 m2", "第①条" -> "第1条", "ﬁ" -> "fi", the Chinese comma "，" -> ",",
  no-break spaces (also the Mongolian suffix separator U+202F) -> " ". Only on request.

Line breaks:
- \\r\\n and \\r become \\n (the newline functions of §5.8, R1).
- \\v and \\f are mandatory breaks (UAX #14 class BK) and \\x1c–\\x1e are paragraph separators
  (UAX #9 class B): each becomes \\n. \\x1f is a segment separator (UAX #9 class S, like tab):
  it becomes \\t. Removing any of them would glue the words on either side.
- U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR and U+0085 NEXT LINE are kept as they are
  (§5.8: unambiguous line/paragraph separators; NEL is also what a Windows-1252 "…" becomes when
  decoded as Latin-1, so turning it into either would guess). `repair_mojibake` keeps them too.
  Spacing next to them is trimmed as at any line end.

Removed, in every script:
- C0/C1 control characters other than \\t, \\n and U+0085 (§23.1: no meaning in text);
  lone surrogates (they cannot be written as UTF-8).
- U+00AD SOFT HYPHEN: a hint where a word may be hyphenated at a line end, invisible anywhere
  else (§23.2 "Hyphenation"); the word is the same without it ("co\\u00adoperate" -> "cooperate").
- U+FEFF at the start of the text or of a line: a byte order mark, an encoding signature, not
  text (§23.8); inside a line it is the deprecated ZERO WIDTH NO-BREAK SPACE and becomes
  U+2060 WORD JOINER, the character §23.8 says to use instead (same meaning).
- U+200B ZERO WIDTH SPACE outside Southeast Asian text (see below).

U+200B ZERO WIDTH SPACE marks a word boundary where no visible space is written (§23.2). Thai,
Lao, Khmer, Myanmar and the Tai scripts have no other word separator: their letters are class
SA in UAX #14 (line breaks need a dictionary), so there it is the only record of where words end
and is kept (a run of them becomes one). Next to any other script it marks nothing the text does
not already mark (spaces separate words; between Han/kana characters every boundary is already a
break opportunity, UAX #14 class ID), and in practice it is an artefact: the demo corpus's
Japanese has it inside words ("言\\u200b\\u200bえば"), so it is removed there. Kept means: a
U+200B whose neighbour on either side is an SA character (ranges below, LineBreak.txt).

Kept, in every script (they change spelling, shaping, order or meaning):
- U+200C ZWNJ and U+200D ZWJ (§23.2 "Cursive Connection and Ligatures"): Persian and Indic
  spelling (ZWNJ: "می\\u200cخواهم"), Malayalam chillu and Indic half forms, emoji ZWJ sequences
  (UTS #51: "👩\\u200d💻" is one emoji, "technologist").
- U+2060 WORD JOINER (§23.2, UAX #14 class WJ): forbids a break; in SA text it says "no word
  boundary here", the counterpart of U+200B.
- Bidi controls U+200E, U+200F, U+061C, U+202A–202E, U+2066–2069 (UAX #9): they decide the
  display order of mixed right-to-left and left-to-right text.
- Variation selectors U+FE00–FE0F, U+E0100–E01EF (§23.4): emoji vs text presentation (VS16),
  ideographic variants of CJK names; tag characters U+E0020–E007F (emoji subdivision flags);
  U+034F COMBINING GRAPHEME JOINER; Mongolian U+180B–180F; invisible math operators U+2061–2064.

Spacing (after the normal form): lines are split on \\n, U+2028, U+2029 and U+0085; spacing at
each line's ends is trimmed; tabs are kept; a run of two or more other spaces becomes one (the
same character when the run is one kind, else U+0020); a single space character between two
others is kept as written: U+00A0/U+2007/U+202F no-break spaces glue what they join (UAX #14
class GL; U+202F separates Mongolian suffixes and changes their shape, §13.5), U+3000 is the
CJK space. Three or more \\n become two (paragraph breaks survive); the text is stripped.
'''

from __future__ import annotations

import re
import unicodedata
from typing import Literal

NormalForm = Literal["NFC", "NFC_FULLWIDTH_ALNUM", "NFKC"]

# Line_Break=SA code points (UAX #14, LineBreak.txt as shipped with the `regex` package 2026.11.15):
# Thai, Lao, Myanmar, Khmer, Tai Le, New Tai Lue, Tai Tham, Tai Viet, Myanmar Extended-A/B, Ahom.
SA_RANGES: tuple[tuple[int, int], ...] = (
    (0x0E01, 0x0E3A), (0x0E40, 0x0E4E), (0x0E81, 0x0E82), (0x0E84, 0x0E84), (0x0E86, 0x0E8A),
    (0x0E8C, 0x0EA3), (0x0EA5, 0x0EA5), (0x0EA7, 0x0EBD), (0x0EC0, 0x0EC4), (0x0EC6, 0x0EC6),
    (0x0EC8, 0x0ECE), (0x0EDC, 0x0EDF), (0x1000, 0x103F), (0x1050, 0x108F), (0x109A, 0x109F),
    (0x1780, 0x17D3), (0x17D7, 0x17D7), (0x17DC, 0x17DD), (0x1950, 0x196D), (0x1970, 0x1974),
    (0x1980, 0x19AB), (0x19B0, 0x19C9), (0x19DE, 0x19DF), (0x1A20, 0x1A5E), (0x1A60, 0x1A7C),
    (0x1AA0, 0x1AAD), (0xA9E0, 0xA9EF), (0xA9FA, 0xA9FE), (0xAA60, 0xAAC2), (0xAADB, 0xAADF),
    (0x11700, 0x1171A), (0x1171D, 0x1172B), (0x1173A, 0x1173B), (0x1173F, 0x11746),
)  # fmt: skip
_SA = "".join(f"{chr(a)}-{chr(b)}" for a, b in SA_RANGES)
_ZWSP_IN_SA = re.compile(f"(?<=[{_SA}])\u200b+|\u200b+(?=[{_SA}])")
_ZWSP_RUN = re.compile("\u200b+")

_LINE_BREAKS = re.compile(r"\r\n?|[\x0b\x0c\x1c-\x1e]")
_BOM_AT_LINE_START = re.compile("(^|[\n\x85\u2028\u2029])([^\\S\n\x85\u2028\u2029]*)\ufeff+")
_REMOVE = {
    cp: None
    for cp in [*range(0x00, 0x20), *range(0x7F, 0xA0), *range(0xD800, 0xE000), 0x00AD]
    if cp not in (0x09, 0x0A, 0x85)
}
_REMOVE[0x1F] = "\t"  # unit separator: a segment separator like tab (UAX #9 class S)
_REMOVE[0xFEFF] = "\u2060"  # mid-line ZWNBSP -> WORD JOINER (§23.8); BOMs at line starts go first

_FULLWIDTH_ALNUM = {
    cp: cp - 0xFEE0 for cp in [*range(0xFF10, 0xFF1A), *range(0xFF21, 0xFF3B), *range(0xFF41, 0xFF5B)]
}

_SEPARATORS = re.compile("([\n\x85\u2028\u2029])")
_HSPACE = "[^\\S\n\x85\u2028\u2029\t]"  # whitespace that is neither a line break nor a tab
_SPACE_RUN = re.compile(f"{_HSPACE}{{2,}}")
_BLANK_LINES = re.compile(r"\n{3,}")


def unicode_form(text: str, form: NormalForm) -> str:
    """`text` in normal form `form` (see the module docstring for what each form changes).

    Raises ValueError for a form other than NFC, NFC_FULLWIDTH_ALNUM or NFKC.
    """
    if form == "NFC_FULLWIDTH_ALNUM":
        return unicodedata.normalize("NFC", text).translate(_FULLWIDTH_ALNUM)
    if form not in ("NFC", "NFKC"):
        raise ValueError(f"unknown normal form {form!r}: use NFC, NFC_FULLWIDTH_ALNUM or NFKC")
    return unicodedata.normalize(form, text)


def keep_zero_width_space_in_sa(text: str) -> str:
    """U+200B kept (one per run) next to Thai/Lao/Khmer/Myanmar/Tai letters, removed elsewhere."""
    if "\u200b" not in text:
        return text
    parts = _ZWSP_IN_SA.split(text)
    return "\u200b".join(_ZWSP_RUN.sub("", part) for part in parts)


def remove_invisible(text: str) -> str:
    """Line breaks to \\n (U+2028/2029/0085 kept), controls, soft hyphens, BOMs and non-SA U+200B out.

    What goes and what stays, character by character, is in the module docstring.
    """
    text = _LINE_BREAKS.sub("\n", text)
    text = _BOM_AT_LINE_START.sub(r"\1\2", text)
    return keep_zero_width_space_in_sa(text.translate(_REMOVE))


def _collapse_run(match: re.Match[str]) -> str:
    run = match.group()
    return run[0] if run.count(run[0]) == len(run) else " "


def normalize_whitespace(text: str) -> str:
    """Trim spacing at line ends, collapse runs of spaces, at most one blank line in a row.

    Lines end at \\n, U+2028, U+2029 and U+0085, which are kept; single space characters between
    two others are kept as written (no-break and ideographic spaces carry meaning).
    """
    pieces = _SEPARATORS.split(text)
    for i in range(0, len(pieces), 2):  # even indices are lines, odd ones their separators
        pieces[i] = _SPACE_RUN.sub(_collapse_run, pieces[i].strip())
    return _BLANK_LINES.sub("\n\n", "".join(pieces)).strip()


def normalize(text: str, form: NormalForm = "NFC") -> str:
    """All stages in order: invisible characters, normal form, spacing.

    The normal form comes after the removals so that removing a soft hyphen between a letter and
    its combining mark still leaves NFC text. Idempotent: normalize(normalize(t)) == normalize(t).
    """
    return normalize_whitespace(unicode_form(remove_invisible(text), form))


def _byte_of(ch: str) -> int | None:
    """The byte a mis-decoded character stood for (Latin-1, else Windows-1252), None if none."""
    if ord(ch) < 0x100:
        return ord(ch)
    try:
        return ch.encode("cp1252")[0]
    except UnicodeEncodeError:
        return None


def _inside_mojibake(text: str, i: int) -> bool:
    """Whether text[i] is a byte of a UTF-8 character read as Latin-1/Windows-1252 ("Ñ\\x85" is "х")."""
    for start in range(max(0, i - 3), i + 1):
        for end in range(i + 1, min(len(text), start + 4) + 1):
            codes = [_byte_of(ch) for ch in text[start:end]]
            if end - start < 2 or None in codes:
                continue
            try:
                decoded = bytes(codes).decode("utf-8")  # type: ignore[arg-type]
            except UnicodeDecodeError:
                continue
            if len(decoded) == 1:
                return True
    return False


def repair_mojibake(text: str) -> str:
    """Undo mis-decoded UTF-8 ("donÃ¢â‚¬â„¢t" → "don’t") with ftfy; other text is left alone.

    U+0085, U+2028 and U+2029 survive byte-identical: ftfy reads a lone U+0085 as the Windows-1252
    "…" decoded as Latin-1, but it is as likely a NEXT LINE, so the text between separators is
    repaired piece by piece. A U+0085 that is a byte of a mis-decoded UTF-8 character ("Ñ\\x85"
    is "х", "Ã\\x85" is "Å") is repaired with its character.
    """
    import ftfy

    cuts = [
        m.start()
        for m in re.finditer("[\x85\u2028\u2029]", text)
        if m.group() != "\x85" or not _inside_mojibake(text, m.start())
    ]
    if not cuts:
        return ftfy.fix_encoding(text)
    out, prev = [], 0
    for cut in cuts:
        out += [ftfy.fix_encoding(text[prev:cut]), text[cut]]
        prev = cut + 1
    out.append(ftfy.fix_encoding(text[prev:]))
    return "".join(out)


_HTML_BLOCKS = re.compile(r"<(script|style|noscript)\b[^>]*>.*?</\1\s*>", re.IGNORECASE | re.DOTALL)
_HTML_BREAKS = re.compile(r"<\s*(br|/p|/div|/li|/h[1-6]|/tr)\b[^>]*>", re.IGNORECASE)
_HTML_TAG = re.compile(r"</?[a-zA-Z][a-zA-Z0-9:-]*(\s[^<>]*)?/?>|<!--.*?-->", re.DOTALL)


def strip_html(text: str) -> str:
    """Remnants of HTML out: script/style blocks, tags (block ends become line breaks), entities."""
    import html

    text = _HTML_BLOCKS.sub(" ", text)
    text = _HTML_BREAKS.sub("\n", text)
    return html.unescape(_HTML_TAG.sub("", text))
