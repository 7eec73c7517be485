"""Document quality filters after Gopher (Rae et al. 2021), C4 and FineWeb, aware of the script.

    reason = quality_filter(text, lang, script, QualityConfig())   # None -> keep

One function per rule family (CHECKS: boilerplate, gopher_words, character_ratios,
gopher_line_marks, gopher_repeated_blocks, gopher_ngrams, fineweb_short_lines,
c4_line_punctuation), all reading one precomputed view of the text (quality_view.TextView).
They run in this order; the first that fails names the drop (stable reason strings):
  boilerplate                        "lorem ipsum" anywhere, or too many boilerplate lines
  gopher_too_few_words               fewer than min_words words
  gopher_too_many_words              more than max_words words
  gopher_mean_word_length_low/high   mean word length outside the bounds (space-delimited scripts)
  gopher_symbol_ratio                ("#" + "..." + "…") per word above the limit
  high_digit_ratio                   digits / non-space characters above the limit
  low_alpha_ratio                    letters of any script / non-space characters below the limit
  gopher_bullet_lines                share of lines starting with a bullet above the limit
  gopher_ellipsis_lines              share of lines ending in an ellipsis above the limit
  gopher_dup_para_frac / gopher_dup_para_char_frac   repeated paragraphs (count / characters)
  gopher_dup_line_frac / gopher_dup_line_char_frac   repeated lines (count / characters)
  gopher_top_<n>gram                 the most frequent n-gram covers too many characters
  gopher_dup_<n>gram                 repeated n-grams cover too many characters
  fineweb_short_lines                share of short lines above the limit
  c4_line_punctuation                share of lines ending in terminal punctuation below the limit

How the script changes the checks (decisions a reader might not guess):
- Words: `str.split()` for space-delimited scripts. For scripts written without spaces
  (Han, Japanese, Thai, Lao, Khmer, Myanmar, Tibetan) the word count is letters divided by
  quality_view.CHARS_PER_WORD[script] (Chinese words average about 1.5 characters), so `min_words` means
  the same amount of text in every language. Mean-word-length checks are skipped there.
  U+200B ZERO WIDTH SPACE counts as a space; where a writer separated words with it (Thai,
  Lao, Khmer, Myanmar), the word count is at least the number of separated tokens.
- Lines end at \n, U+2028, U+2029 and U+0085; paragraphs at a blank line or U+2029.
- N-grams: word n-grams for space-delimited scripts; character n-grams over letters and
  digits (punctuation and spaces removed) otherwise, with n scaled to the same span of text:
  n_chars = max(n + 1, round(n * CHARS_PER_WORD[script])), e.g. Chinese word 2-gram -> 3
  characters, 10-gram -> 15. Shares are characters inside the n-grams over the characters of
  all tokens. A "top" n-gram must occur at least twice: in a short document every n-gram is
  "the most frequent" once, and counting it (as datatrove does) drops short clean text.
- Letters are Unicode letters and combining marks of every script (Devanagari vowel signs
  are marks), not ASCII letters.
- Line punctuation uses the script's own terminal marks (。！？ for CJK, । ॥ for Indic,
  ۔ ؟ for Arabic script, ። for Ethiopic, ။ for Myanmar, ។ for Khmer) together with . ! ? …;
  closing quotes and brackets after the mark are ignored. Thai and Lao end sentences with a
  space, not a mark, so the check is off for them.
- Short lines: `short_line_chars` is for space-delimited scripts; for the others it is
  scaled to the same number of words: round(short_line_chars * CHARS_PER_WORD / 6).
- Characters outside the Basic Multilingual Plane (emoji) count as neither letters nor digits.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Callable

from pydantic import Field, PrivateAttr, model_validator

from components.clean.quality_view import TextView, text_view
from components.config import Section

_LATIN_CHARS_PER_WORD_AND_SPACE = 6

_COMMON_TERMINAL = ".!?…"
TERMINAL_PUNCTUATION: dict[str, str | None] = {
    # a Chinese semicolon closes a clause in formal and legal prose (NFKC, if chosen, folds "；" to ";")
    "Hani": _COMMON_TERMINAL + "。！？．｡；;",
    "Jpan": _COMMON_TERMINAL + "。！？．｡",
    "Hang": _COMMON_TERMINAL + "。！？",
    "Deva": _COMMON_TERMINAL + "।॥", "Beng": _COMMON_TERMINAL + "।॥", "Guru": _COMMON_TERMINAL + "।॥",
    "Gujr": _COMMON_TERMINAL + "।॥", "Orya": _COMMON_TERMINAL + "।॥",
    "Arab": _COMMON_TERMINAL + "۔؟", "Thaa": _COMMON_TERMINAL + "؟",
    "Ethi": _COMMON_TERMINAL + "።፧፨",
    "Mymr": _COMMON_TERMINAL + "။",
    "Khmr": _COMMON_TERMINAL + "។៕",
    "Tibt": _COMMON_TERMINAL + "།༎",
    "Armn": _COMMON_TERMINAL + "։՜՞",
    "Grek": _COMMON_TERMINAL + ";;",
    "Thai": None, "Laoo": None,
}
_CLOSERS = "\"')]}»”’」』）】〉》›"
_BULLETS = ("•", "●", "○", "◦", "▪", "▫", "■", "□", "‣", "⁃", "∙", "·", "- ", "* ", "– ", "— ", "> ")
_ELLIPSES = ("...", "…")

# Lines that are site furniture, not text. A line counts when it matches anywhere.
BOILERPLATE_LINE = re.compile(
    "|".join([
        r"\b(accept|allow|reject)( all)? cookies\b", r"\bcookie (policy|settings|preferences|consent)\b",
        r"\b(we|this (site|website)) uses? cookies\b", r"\buse of cookies\b",
        r"\bprivacy policy\b", r"\bterms (of use|of service|and conditions)\b",
        r"\b(enable|requires?) javascript\b", r"\bjavascript (is )?(disabled|required|must be enabled)\b",
        r"\bskip to (main )?content\b", r"\ball rights reserved\b",
        r"\bdatenschutzerkl[aä]rung\b", r"\balle cookies akzeptieren\b", r"\bimpressum\b",
        r"\bpolitique de confidentialit[eé]\b", r"\baccepter (tous )?les cookies\b", r"\bmentions l[eé]gales\b",
        r"\bpol[ií]tica de privacidad(e)?\b", r"\baceptar (todas las )?cookies\b", r"\bt[eé]rminos y condiciones\b",
        r"\bполитика конфиденциальности\b",
        "隐私政策", "隱私權政策", "使用条款", "使用條款", "版权所有", "版權所有", "跳到主要内容",
        "接受所有", "プライバシーポリシー", "利用規約", "クッキー", "개인정보처리방침", "이용약관",
    ]),
    re.IGNORECASE,
)
_LOREM = re.compile(r"lorem ipsum", re.IGNORECASE)


class QualityThresholds(Section):
    """One value per check; None turns that check off."""

    min_words: int | None = Field(10, ge=0, description="fewer words -> gopher_too_few_words (Gopher: 50; our documents are short)")
    max_words: int | None = Field(100_000, ge=1, description="more words -> gopher_too_many_words (Gopher)")
    min_mean_word_length: float | None = Field(2.0, ge=0, description="space-delimited only (Gopher: 3; lowered for Vietnamese, Yoruba)")
    max_mean_word_length: float | None = Field(15.0, ge=0, description="space-delimited only (Gopher: 10; raised for Dravidian, Finnish)")
    max_symbol_to_word_ratio: float | None = Field(0.1, ge=0, description="('#' + ellipses) per word (Gopher)")
    max_digit_ratio: float | None = Field(0.3, ge=0, le=1, description="digits / non-space characters")
    min_alpha_ratio: float | None = Field(0.5, ge=0, le=1, description="letters (any script) / non-space characters")
    max_bullet_lines_ratio: float | None = Field(0.9, ge=0, le=1, description="lines starting with a bullet (Gopher)")
    max_ellipsis_lines_ratio: float | None = Field(0.3, ge=0, le=1, description="lines ending in an ellipsis (Gopher)")
    max_duplicate_paragraph_fraction: float | None = Field(0.3, ge=0, le=1, description="repeated paragraphs / paragraphs (Gopher)")
    max_duplicate_paragraph_char_fraction: float | None = Field(0.2, ge=0, le=1, description="characters in repeated paragraphs (Gopher)")
    max_duplicate_line_fraction: float | None = Field(0.3, ge=0, le=1, description="repeated lines / lines (Gopher)")
    max_duplicate_line_char_fraction: float | None = Field(0.2, ge=0, le=1, description="characters in repeated lines (Gopher)")
    top_ngram_max_share: dict[int, float] | None = Field(
        default_factory=lambda: {2: 0.20, 3: 0.18, 4: 0.16},
        description="word n -> largest share of characters in the most frequent n-gram (Gopher)",
    )
    duplicate_ngram_max_share: dict[int, float] | None = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="word n -> largest share of characters in repeated n-grams (Gopher)",
    )
    top_ngram_min_words: int = Field(
        50, ge=0, description="top n-gram checks only from this many words (Gopher's minimum document); shorter texts repeat a phrase by chance"
    )
    short_line_chars: int | None = Field(30, ge=1, description="a line shorter than this is short (FineWeb); scaled for unspaced scripts")
    max_short_lines_fraction: float | None = Field(0.67, ge=0, le=1, description="short lines / lines (FineWeb)")
    min_lines_ending_in_punctuation: float | None = Field(
        0.05, ge=0, le=1, description="lines ending in terminal punctuation / lines (FineWeb: 0.12; 0.05 keeps the UDHR preamble: 11 lines, one ending in a full stop); off for Thai, Lao"
    )
    line_ratios_min_lines: int = Field(
        3, ge=1, description="bullet, ellipsis, short-line and punctuation shares only from this many non-empty lines"
    )
    max_boilerplate_lines_fraction: float | None = Field(0.3, ge=0, le=1, description="boilerplate lines / lines")
    drop_lorem_ipsum: bool = Field(True, description="any 'lorem ipsum' drops the document (C4)")

    @model_validator(mode="after")
    def _ngram_sizes(self) -> "QualityThresholds":
        for name in ("top_ngram_max_share", "duplicate_ngram_max_share"):
            for n, share in (getattr(self, name) or {}).items():
                if n < 1 or not 0 <= share <= 1:
                    raise ValueError(f"{name}: {n}: {share} needs n >= 1 and a share in [0, 1]")
        return self


class QualityConfig(Section):
    default: QualityThresholds = Field(default_factory=QualityThresholds, description="thresholds for every language")
    per_language: dict[str, QualityThresholds] = Field(
        default_factory=dict,
        description="language code -> overrides; only the fields written here replace the default's",
    )
    _merged: dict[str, QualityThresholds] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _forget_merged(self) -> "QualityConfig":
        self._merged = {}  # runs on construction and on every assignment (validate_assignment)
        return self

    def thresholds_for(self, lang: str) -> QualityThresholds:
        merged = self._merged.get(lang)
        if merged is None:
            override = self.per_language.get(lang)
            if override is None:
                merged = self.default
            else:
                update = {name: getattr(override, name) for name in override.model_fields_set}
                merged = self.default.model_copy(update=update)
            self._merged[lang] = merged
        return merged


def _ngrams(units: list[str] | str, n: int) -> list:
    """Word n-grams as tuples, character n-grams as strings."""
    if isinstance(units, str):
        return [units[i : i + n] for i in range(len(units) - n + 1)]
    return list(zip(*(units[k:] for k in range(n))))


def _top_ngram_share(units: list[str] | str, n: int, total: int) -> float:
    """Characters in all occurrences of the most frequent n-gram, if it occurs twice or more."""
    key, count = Counter(_ngrams(units, n)).most_common(1)[0]
    if count < 2:
        return 0.0
    length = len(key) if isinstance(key, str) else sum(map(len, key))
    return count * length / total


def _dup_ngram_share(units: list[str] | str, n: int, total: int) -> float:
    """Characters covered by n-grams that repeat an earlier one (Gopher's duplicate n-gram share)."""
    grams = _ngrams(units, n)
    if len(set(grams)) == len(grams):
        return 0.0
    seen: set = set()
    covered = bytearray(len(units))
    ones = b"\x01" * n
    for i, gram in enumerate(grams):
        if gram in seen:
            covered[i : i + n] = ones
        else:
            seen.add(gram)
    if isinstance(units, str):
        return covered.count(1) / total
    return sum(len(u) for u, c in zip(units, covered) if c) / total


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


def _ends_in(line: str, marks: str) -> bool:
    line = line.rstrip(_CLOSERS + " ")
    return bool(line) and line[-1] in marks


# ---- the checks, one per rule family: (view, thresholds) -> None to pass, else the reason ----


def boilerplate(v: TextView, t: QualityThresholds) -> str | None:
    """C4's "lorem ipsum" anywhere, or a share of site-furniture lines above the limit."""
    if t.drop_lorem_ipsum and _LOREM.search(v.text):
        return "boilerplate"
    if t.max_boilerplate_lines_fraction is not None:
        if sum(1 for line in v.lines if BOILERPLATE_LINE.search(line)) / v.n_lines_or_1 > t.max_boilerplate_lines_fraction:
            return "boilerplate"
    return None


def gopher_words(v: TextView, t: QualityThresholds) -> str | None:
    """Gopher's word rules: word count, mean word length (spaced scripts), symbols per word."""
    if t.min_words is not None and v.n_words < t.min_words:
        return "gopher_too_few_words"
    if t.max_words is not None and v.n_words > t.max_words:
        return "gopher_too_many_words"
    if v.spaced and v.n_words:
        mean = (v.n_letters + v.n_digits) / v.n_words
        if t.min_mean_word_length is not None and mean < t.min_mean_word_length:
            return "gopher_mean_word_length_low"
        if t.max_mean_word_length is not None and mean > t.max_mean_word_length:
            return "gopher_mean_word_length_high"
    if t.max_symbol_to_word_ratio is not None:
        symbols = v.text.count("#") + v.text.count("...") + v.text.count("…")
        if symbols / max(v.n_words, 1) > t.max_symbol_to_word_ratio:
            return "gopher_symbol_ratio"
    return None


def character_ratios(v: TextView, t: QualityThresholds) -> str | None:
    """Digits and letters (any script) per non-space character."""
    if t.max_digit_ratio is not None and v.n_digits / max(v.n_nonspace, 1) > t.max_digit_ratio:
        return "high_digit_ratio"
    if t.min_alpha_ratio is not None and v.n_letters / max(v.n_nonspace, 1) < t.min_alpha_ratio:
        return "low_alpha_ratio"
    return None


def gopher_line_marks(v: TextView, t: QualityThresholds) -> str | None:
    """Gopher's shares of lines starting with a bullet and ending in an ellipsis."""
    if len(v.lines) < t.line_ratios_min_lines:
        return None
    if t.max_bullet_lines_ratio is not None:
        if sum(1 for line in v.lines if line.startswith(_BULLETS)) / v.n_lines_or_1 > t.max_bullet_lines_ratio:
            return "gopher_bullet_lines"
    if t.max_ellipsis_lines_ratio is not None:
        if sum(1 for line in v.lines if line.endswith(_ELLIPSES)) / v.n_lines_or_1 > t.max_ellipsis_lines_ratio:
            return "gopher_ellipsis_lines"
    return None


def gopher_repeated_blocks(v: TextView, t: QualityThresholds) -> str | None:
    """Gopher's repeated paragraphs, then repeated lines: by count and by characters."""
    if t.max_duplicate_paragraph_fraction is not None or t.max_duplicate_paragraph_char_fraction is not None:
        paragraphs = v.paragraphs
        if len(paragraphs) > 1:
            dup, dup_chars = _duplicates(paragraphs)
            if t.max_duplicate_paragraph_fraction is not None and dup / len(paragraphs) > t.max_duplicate_paragraph_fraction:
                return "gopher_dup_para_frac"
            if t.max_duplicate_paragraph_char_fraction is not None and dup_chars / len(v.text) > t.max_duplicate_paragraph_char_fraction:
                return "gopher_dup_para_char_frac"
    if len(v.lines) > 1:
        dup, dup_chars = _duplicates(v.lines)
        if t.max_duplicate_line_fraction is not None and dup / len(v.lines) > t.max_duplicate_line_fraction:
            return "gopher_dup_line_frac"
        if t.max_duplicate_line_char_fraction is not None and dup_chars / len(v.text) > t.max_duplicate_line_char_fraction:
            return "gopher_dup_line_char_frac"
    return None


def gopher_ngrams(v: TextView, t: QualityThresholds) -> str | None:
    """Gopher's repetition: the most frequent n-gram's share, then the repeated n-grams' share."""
    units, total = v.units, v.unit_chars
    top = t.top_ngram_max_share if v.n_words >= t.top_ngram_min_words else None
    for n, limit in sorted((top or {}).items()):
        size = v.ngram_size(n)
        if len(units) >= size and _top_ngram_share(units, size, total) > limit:
            return f"gopher_top_{n}gram"
    for n, limit in sorted((t.duplicate_ngram_max_share or {}).items()):
        size = v.ngram_size(n)
        if len(units) < size:
            break
        share = _dup_ngram_share(units, size, total)
        if share > limit:
            return f"gopher_dup_{n}gram"
        if share == 0.0:
            break  # nothing repeats at this length, so nothing longer repeats either
    return None


def fineweb_short_lines(v: TextView, t: QualityThresholds) -> str | None:
    """FineWeb's share of short lines; the length is scaled to the same words for unspaced scripts."""
    if len(v.lines) < t.line_ratios_min_lines or t.short_line_chars is None or t.max_short_lines_fraction is None:
        return None
    limit = t.short_line_chars if v.spaced else round(t.short_line_chars * v.chars_per_word / _LATIN_CHARS_PER_WORD_AND_SPACE)
    if sum(1 for line in v.lines if len(line) < limit) / v.n_lines_or_1 > t.max_short_lines_fraction:
        return "fineweb_short_lines"
    return None


def c4_line_punctuation(v: TextView, t: QualityThresholds) -> str | None:
    """C4/FineWeb's share of lines ending in the script's terminal punctuation (off for Thai, Lao)."""
    if len(v.lines) < t.line_ratios_min_lines or t.min_lines_ending_in_punctuation is None:
        return None
    marks = TERMINAL_PUNCTUATION.get(v.script, _COMMON_TERMINAL)
    if marks is not None and v.lines:
        ending = sum(1 for line in v.lines if _ends_in(line, marks))
        if ending / len(v.lines) < t.min_lines_ending_in_punctuation:
            return "c4_line_punctuation"
    return None


Check = Callable[[TextView, QualityThresholds], "str | None"]
# In this order: the first failing check names the drop (the order of the module docstring's table).
CHECKS: tuple[Check, ...] = (
    boilerplate, gopher_words, character_ratios, gopher_line_marks, gopher_repeated_blocks, gopher_ngrams,
    fineweb_short_lines, c4_line_punctuation,
)


def quality_filter(text: str, lang: str, script: str, config: QualityConfig | QualityThresholds) -> str | None:
    """None to keep `text`, else the reason to drop it (the first failing check of CHECKS).

    `lang` picks the thresholds from `config` (QualityConfig.thresholds_for); `script` is the
    text's dominant ISO 15924 script (langid.detect_script), which sets how words, n-grams,
    short lines and terminal punctuation are counted.
    """
    t = config.thresholds_for(lang) if isinstance(config, QualityConfig) else config
    view = text_view(text, script)
    for check in CHECKS:
        reason = check(view, t)
        if reason is not None:
            return reason
    return None
