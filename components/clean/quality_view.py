"""One precomputed view of a document for the quality checks (components/clean/quality.py).

    view = text_view(text, script)   # lines, words or letter units, letter/digit counts, once

Every check reads the same view, so the text is split into lines and classified character by
character once per document, whatever checks are on. The counting rules (what a word, a
letter, a line is per script) are described in quality.py's docstring.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from dataclasses import dataclass
from functools import cached_property

from components.clean.langid import NOT_SPACE_DELIMITED, is_space_delimited, letter_scripts

# Letters per word for scripts written without spaces (rough means; CJK from segmented corpora).
CHARS_PER_WORD: dict[str, float] = {
    "Hani": 1.5, "Jpan": 2.0, "Hira": 2.0, "Kana": 2.0,
    "Thai": 5.0, "Laoo": 5.0, "Khmr": 5.0, "Mymr": 4.0, "Tibt": 4.0,
}
# normalize.py keeps U+2028 LINE SEPARATOR, U+2029 PARAGRAPH SEPARATOR and U+0085 NEXT LINE as written
_LINE_BREAK = re.compile("[\n\x85\u2028\u2029]")
_PARAGRAPH_BREAK = re.compile("\n\n|\u2029")


def _class_table() -> dict[int, str]:
    """BMP code point -> 'a' letter or mark, '0' digit, ' ' whitespace, '.' anything else."""
    table: dict[int, str] = {}
    for cp in range(0x10000):
        ch = chr(cp)
        if ch.isspace():
            table[cp] = " "
            continue
        cat = unicodedata.category(ch)
        table[cp] = "a" if cat[0] in "LM" else "0" if cat == "Nd" else "."
    return table


_CLASSES = _class_table()
# Deletes everything but letters, marks and digits: the character stream of unspaced scripts.
_TOKEN_CHARS = {cp: None for cp, cls in _CLASSES.items() if cls not in ("a", "0")}


# Letters of the scripts written without spaces, by words per letter: h Han, k kana, t Thai/Lao/Khmer,
# m Myanmar/Tibetan; `_UNSPACED_CLASS` maps them to these and deletes everything else.
_UNSPACED_WORDS_PER_LETTER = {"h": 1 / 1.5, "k": 1 / 2.0, "t": 1 / 5.0, "m": 1 / 4.0}
_UNSPACED_CLASS_OF = {"Hani": "h", "Hira": "k", "Kana": "k", "Thai": "t", "Laoo": "t", "Khmr": "t", "Mymr": "m", "Tibt": "m"}
_UNSPACED_CLASS = dict.fromkeys(range(0x10000))
_UNSPACED_CLASS.update({cp: _UNSPACED_CLASS_OF[script] for cp, script in letter_scripts().items() if script in NOT_SPACE_DELIMITED})
# Unspaced letters as spaces: what is left are the tokens of spaced scripts (and digits).
_UNSPACED_AS_SPACE = {cp: " " for cp, cls in _UNSPACED_CLASS.items() if cls is not None}


def _char_class(cps: list[int]) -> str:
    """A regex character class body for these code points, as ranges."""
    out, start = [], None
    for i, cp in enumerate(cps):
        if start is None:
            start = cp
        if i + 1 == len(cps) or cps[i + 1] != cp + 1:
            out.append(re.escape(chr(start)) + ("-" + re.escape(chr(cp)) if cp != start else ""))
            start = None
    return "".join(out)


# A mixed text's n-gram units: each unspaced letter alone, or a run of anything else but spaces
_UNSPACED_LETTERS = _char_class(sorted(_UNSPACED_AS_SPACE))
_ANY_UNSPACED = re.compile(f"[{_UNSPACED_LETTERS}]")
_MIXED_UNITS = re.compile(f"[{_UNSPACED_LETTERS}]|[^\\s{_UNSPACED_LETTERS}]+")


def count_words(text: str) -> float:
    """Words in `text` as text_view counts them in mixed text: a fraction of a word per unspaced
    letter (Han 1/1.5, kana 1/2, Thai/Lao/Khmer 1/5, Myanmar/Tibetan 1/4), one per other token
    holding a letter or digit. For one line (the boilerplate rule); text_view counts documents."""
    unspaced = text.translate(_UNSPACED_CLASS) if _ANY_UNSPACED.search(text) else ""
    rest = text.translate(_UNSPACED_AS_SPACE) if unspaced else text
    tokens = sum(1 for k in rest.translate(_CLASSES).split() if "a" in k or "0" in k)
    # characters above U+FFFF (emoji) pass str.translate unchanged: they are no unspaced letters
    return tokens + sum(_UNSPACED_WORDS_PER_LETTER.get(c, 0.0) * n for c, n in Counter(unspaced).items())


def _words(text: str, classes: str) -> list[str]:
    """Space-separated tokens that hold a letter or digit, lower-cased.

    `classes` has the same whitespace as `text`, so its tokens line up one to one.
    """
    return [w for w, k in zip(text.lower().split(), classes.split()) if "a" in k or "0" in k]


def _duplicates(items: list[str]) -> tuple[int, int]:
    """(number of items that repeat an earlier one, their characters)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars



@dataclass
class TextView:
    """What the quality checks count in one document (built by `text_view`).

    `units` are the n-gram units: the words (list[str]) for a space-delimited script, else
    the lower-cased letters and digits as one string; `unit_chars` is their character count.
    """

    text: str  # the text with word separators that are not spaces (U+1361, U+200B) made spaces
    script: str  # ISO 15924, as langid.detect_script names it
    spaced: bool  # the script separates words with spaces
    chars_per_word: float  # CHARS_PER_WORD[script], 1.0 for scripts not listed
    lines: list[str]  # stripped, non-empty lines
    n_letters: int  # letters and combining marks of every script (BMP)
    n_digits: int  # decimal digits (Unicode Nd, BMP)
    n_nonspace: int  # characters that are not whitespace
    n_words: int  # words, or letters / chars_per_word for unspaced scripts
    units: list[str] | str
    unit_chars: int
    repeat_free_from: int | None = None  # the shortest n-gram size found not to repeat (filled by the checks)

    @property
    def n_lines_or_1(self) -> int:
        """The denominator of line shares (1 for a text without lines, so shares are 0)."""
        return len(self.lines) or 1

    @cached_property
    def paragraphs(self) -> list[str]:
        """Stripped, non-empty paragraphs (split at a blank line or U+2029); computed on first use."""
        paragraphs = [p.strip() for p in _PARAGRAPH_BREAK.split(self.text)]
        return [p for p in paragraphs if p]

    @cached_property
    def repeated_paragraphs(self) -> tuple[int, int]:
        """(paragraphs that repeat an earlier one, their characters)."""
        return _duplicates(self.paragraphs)

    @cached_property
    def repeated_lines(self) -> tuple[int, int]:
        """(lines that repeat an earlier one, their characters)."""
        return _duplicates(self.lines)

    def ngram_size(self, n: int) -> int:
        """Units in a word n-gram: n words, or n words' worth of characters (at least n + 1)."""
        return n if self.spaced else max(n + 1, round(n * self.chars_per_word))


def text_view(text: str, script: str) -> TextView:
    """The view of `text` whose dominant script is `script` (ISO 15924); O(len(text))."""
    spaced = is_space_delimited(script)
    if script == "Ethi":
        text = text.replace("\u1361", " ")  # Ethiopic wordspace separates words where spaces are not used
    zwsp_separated = "\u200b" in text
    if zwsp_separated:  # ZERO WIDTH SPACE separates words in Thai, Lao, Khmer, Myanmar (normalize keeps it there)
        text = text.replace("\u200b", " ")
    lines = [line.strip() for line in _LINE_BREAK.split(text)]
    classes = text.translate(_CLASSES)
    n_letters = classes.count("a")
    chars_per_word = CHARS_PER_WORD.get(script, 1.0)
    # Mixed text (a Chinese manual quoting `apt-get install`, a Thai page naming Python) counts
    # words per kind of letter, whichever script has the most letters: each unspaced letter as a
    # fraction of a word, each space-separated token of the other scripts as one word.
    unspaced = text.translate(_UNSPACED_CLASS) if _ANY_UNSPACED.search(text) else ""
    rest = text.translate(_UNSPACED_AS_SPACE) if unspaced else text
    rest_classes = rest.translate(_CLASSES) if unspaced else classes
    tokens = [(w, k) for w, k in zip(rest.lower().split(), rest_classes.split()) if "a" in k or "0" in k]
    mixed = bool(unspaced) and any("a" in k for _, k in tokens)
    units: list[str] | str
    if spaced and not unspaced:
        units = [w for w, _ in tokens]
        n_words = len(units)
        unit_chars = sum(map(len, units))
    else:
        per_letter = dict(_UNSPACED_WORDS_PER_LETTER, h=1 / chars_per_word) if script == "Jpan" else _UNSPACED_WORDS_PER_LETTER
        counted = tokens if spaced else [(w, k) for w, k in tokens if "a" in k]  # an unspaced text's digits are no words
        n_words = round(sum(per_letter.get(c, 0.0) * n for c, n in Counter(unspaced).items()) + len(counted))
        if mixed:
            units = [u for u in (m.translate(_TOKEN_CHARS) for m in _MIXED_UNITS.findall(text.lower())) if u]
            unit_chars = sum(map(len, units))
        elif spaced:
            units = [w for w, _ in tokens]
            unit_chars = sum(map(len, units))
        else:
            units = text.translate(_TOKEN_CHARS).lower()
            unit_chars = len(units)
        if zwsp_separated and not spaced:  # the writer marked words: at least as many as the separated tokens
            n_words = max(n_words, len(_words(text, classes)))
    return TextView(
        text=text,
        script=script,
        spaced=spaced,
        chars_per_word=chars_per_word,
        lines=[line for line in lines if line],
        n_letters=n_letters,
        n_digits=classes.count("0"),
        n_nonspace=len(text) - classes.count(" "),
        n_words=n_words,
        units=units,
        unit_chars=unit_chars,
    )
