"""Document quality filters after Gopher (Rae et al. 2021), C4 and FineWeb, aware of the script.

    reason = quality_filter(text, lang, script, QualityConfig())   # None -> keep

One Rule per threshold (rules_for): a statistic of one precomputed view of the text
(quality_view.TextView), compared with its threshold; `statistics` gives every rule's number
for a text (what `homegrown calibrate` chooses thresholds from). They run in this order; the
first that fails names the drop (stable reason strings):
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
  gopher_top_<n>gram                 the most frequent n-gram covers too many characters (a higher
                                     limit below top_ngram_min_words words: keyword stuffing)
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

import functools
import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Literal

from pydantic import Field, PrivateAttr, model_validator

from components.clean.quality_view import TextView, count_words, text_view
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
        "接受所有", "全部接受", "接受全部", "全部拒绝", "使用 ?cookie", "プライバシーポリシー", "利用規約", "クッキー",
        "개인정보처리방침", "이용약관",
        # Hindi, Arabic, Swahili, Indonesian/Malay: cookies, privacy policy, terms, all rights reserved, accept all
        "कुकी", "कुकीज़", "गोपनीयता नीति", "नियम और शर्तें", "उपयोग की शर्तें", "सर्वाधिकार सुरक्षित", "सभी स्वीकार करें",
        "ملفات تعريف الارتباط", "سياسة الخصوصية", "الشروط والأحكام", "شروط الاستخدام", "جميع الحقوق محفوظة", "قبول الكل",
        r"\bvidakuzi\b", r"\bsera ya faragha\b", r"\bsheria na masharti\b", r"\bmasharti ya matumizi\b",
        r"\bhaki zote zimehifadhiwa\b", r"\bkubali (vyote|zote)\b",
        r"\bkebijakan privasi\b", r"\bsyarat dan ketentuan\b", r"\bketentuan penggunaan\b",
        r"\bhak cipta dilindungi\b", r"\bterima semua\b", r"\bmenggunakan cookie\b",
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
    short_top_ngram_max_share: dict[int, float] | None = Field(
        default_factory=lambda: {2: 0.4, 3: 0.4, 4: 0.4},
        description="word n -> largest share of the most frequent n-gram in a text under top_ngram_min_words words, "
        "counted only when it occurs 3 times or more (same reason, gopher_top_<n>gram): short keyword stuffing covers "
        "0.43-0.79, short real paragraphs at most 0.39 (prose set of tests/components/test_quality_prose.py, 1,240 "
        "paragraphs under 50 words in six languages); a phrase said twice is a dialogue's echo, not stuffing",
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
    boilerplate_line_max_words: int | None = Field(
        20, ge=1, description="a line with a boilerplate phrase counts as boilerplate only up to this many words: site "
        "furniture is short, while a privacy policy or licence quotes 'terms and conditions' in sentences of 20-80 words "
        "(measured on the prose set of tests/components/test_quality_prose.py); None: any length",
    )
    drop_lorem_ipsum: bool = Field(True, description="any 'lorem ipsum' drops the document (C4)")

    @model_validator(mode="after")
    def _ngram_sizes(self) -> "QualityThresholds":
        for name in ("top_ngram_max_share", "short_top_ngram_max_share", "duplicate_ngram_max_share"):
            for n, share in (getattr(self, name) or {}).items():
                if n < 1 or not 0 <= share <= 1:
                    raise ValueError(f"{name}: {n}: {share} needs n >= 1 and a share in [0, 1]")
        return self


BUILTIN_DEFAULTS_FILE = Path(__file__).with_name("quality_defaults.json")


@functools.lru_cache(maxsize=1)
def builtin_thresholds() -> dict[str, dict[str, Any]]:
    """{language: thresholds} calibrated from the UDHR (pipelines/gen_quality_defaults.py writes the file)."""
    data = json.loads(BUILTIN_DEFAULTS_FILE.read_text(encoding="utf-8"))
    return {lang: entry["thresholds"] for lang, entry in data["languages"].items() if entry["thresholds"]}


class QualityConfig(Section):
    default: QualityThresholds = Field(default_factory=QualityThresholds, description="thresholds for every language")
    builtin_per_language: bool = Field(
        True,
        description="loosen `default` where the thresholds calibrated per language from the UDHR (quality_defaults.json, "
        "pipelines/gen_quality_defaults.py) are looser: e.g. min_words 8 for Kannada, whose shortest articles are 8 "
        "words; never tightens, and a rule `default` turns off stays off",
    )
    per_language: dict[str, QualityThresholds] = Field(
        default_factory=dict,
        description="language code -> overrides; only the fields written here replace the default's (and the built-in)",
    )
    _merged: dict[str, QualityThresholds] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _forget_merged(self) -> "QualityConfig":
        self._merged = {}  # runs on construction and on every assignment (validate_assignment)
        return self

    def thresholds_for(self, lang: str) -> QualityThresholds:
        """`default`, loosened by the built-in thresholds of `lang`, then `per_language[lang]`'s fields."""
        merged = self._merged.get(lang)
        if merged is None:
            merged = self.default
            builtin = builtin_thresholds().get(lang) if self.builtin_per_language else None
            if builtin:
                merged = loosened(merged, QualityThresholds.model_validate(builtin))
            override = self.per_language.get(lang)
            if override is not None:
                merged = merged.model_copy(update={name: getattr(override, name) for name in override.model_fields_set})
            self._merged[lang] = merged
        return merged


def loosened(base: QualityThresholds, other: QualityThresholds) -> QualityThresholds:
    """`base` with each threshold `other` sets (model_fields_set) replaced where it is looser: a
    larger maximum, a smaller minimum, per n for the n-gram shares. Off (None) in `base` stays off."""
    update: dict[str, Any] = {}
    for rule in rules_for(other):
        if rule.field not in other.model_fields_set:
            continue
        mine, theirs = rule.limit(base), rule.limit(other)
        if mine is None or theirs is None:
            continue
        looser = max(mine, theirs) if rule.bound == "max" else min(mine, theirs)
        if looser != mine:
            if rule.n is None:
                update[rule.field] = looser
            else:
                update.setdefault(rule.field, dict(getattr(base, rule.field)))[rule.n] = looser
    return base.model_copy(update=update) if update else base


def _ngrams(units: list[str] | str, n: int) -> list:
    """Word n-grams as tuples, character n-grams as strings."""
    if isinstance(units, str):
        return [units[i : i + n] for i in range(len(units) - n + 1)]
    return list(zip(*(units[k:] for k in range(n))))


def _top_ngram_share(units: list[str] | str, n: int, total: int, min_count: int = 2) -> float:
    """Characters in all occurrences of the most frequent n-gram, if it occurs min_count times or more."""
    key, count = Counter(_ngrams(units, n)).most_common(1)[0]
    if count < min_count:
        return 0.0
    length = len(key) if isinstance(key, str) else sum(map(len, key))
    return min(1.0, count * length / total)  # overlapping occurrences ("哈哈哈哈") would count characters twice


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


def _ends_in(line: str, marks: str) -> bool:
    line = line.rstrip(_CLOSERS + " ")
    return bool(line) and line[-1] in marks


# ---- the rules: one statistic per threshold, compared in the order of the module docstring ----
# A statistic is None where its rule does not apply to the text (too few lines, an unspaced
# script, ...). The filter and `homegrown calibrate` read the same functions, so a calibrated
# threshold is compared with exactly the number it was chosen from.


def _boilerplate_lines(v: TextView, t: QualityThresholds) -> float:
    limit = t.boilerplate_line_max_words
    furniture = sum(1 for line in v.lines if BOILERPLATE_LINE.search(line) and (limit is None or count_words(line) <= limit))
    return furniture / v.n_lines_or_1


def _words(v: TextView, t: QualityThresholds) -> float:
    return float(v.n_words)


def _mean_word_length(v: TextView, t: QualityThresholds) -> float | None:
    return (v.n_letters + v.n_digits) / v.n_words if v.spaced and v.n_words else None


def _symbols_per_word(v: TextView, t: QualityThresholds) -> float:
    return (v.text.count("#") + v.text.count("...") + v.text.count("…")) / max(v.n_words, 1)


def _digit_ratio(v: TextView, t: QualityThresholds) -> float:
    return v.n_digits / max(v.n_nonspace, 1)


def _alpha_ratio(v: TextView, t: QualityThresholds) -> float:
    return v.n_letters / max(v.n_nonspace, 1)


def _bullet_lines(v: TextView, t: QualityThresholds) -> float | None:
    if len(v.lines) < t.line_ratios_min_lines:
        return None
    return sum(1 for line in v.lines if line.startswith(_BULLETS)) / v.n_lines_or_1


def _ellipsis_lines(v: TextView, t: QualityThresholds) -> float | None:
    if len(v.lines) < t.line_ratios_min_lines:
        return None
    return sum(1 for line in v.lines if line.endswith(_ELLIPSES)) / v.n_lines_or_1


def _dup_paragraphs(v: TextView, t: QualityThresholds) -> float | None:
    return v.repeated_paragraphs[0] / len(v.paragraphs) if len(v.paragraphs) > 1 else None


def _dup_paragraph_chars(v: TextView, t: QualityThresholds) -> float | None:
    return v.repeated_paragraphs[1] / len(v.text) if len(v.paragraphs) > 1 else None


def _dup_lines(v: TextView, t: QualityThresholds) -> float | None:
    return v.repeated_lines[0] / len(v.lines) if len(v.lines) > 1 else None


def _dup_line_chars(v: TextView, t: QualityThresholds) -> float | None:
    return v.repeated_lines[1] / len(v.text) if len(v.lines) > 1 else None


def _top_ngram(n: int, short: bool = False) -> Callable[[TextView, QualityThresholds], float | None]:
    """The top n-gram share of texts of top_ngram_min_words words or more (short: of shorter ones)."""

    def statistic(v: TextView, t: QualityThresholds) -> float | None:
        size = v.ngram_size(n)
        if (v.n_words < t.top_ngram_min_words) != short or len(v.units) < size:
            return None
        # in a short text, a phrase said twice is a conversation's echo; stuffing repeats it more
        return _top_ngram_share(v.units, size, v.unit_chars, 3 if short else 2)

    return statistic


def _dup_ngram(n: int) -> Callable[[TextView, QualityThresholds], float | None]:
    def statistic(v: TextView, t: QualityThresholds) -> float | None:
        size = v.ngram_size(n)
        if len(v.units) < size:
            return None
        if v.repeat_free_from is not None and size >= v.repeat_free_from:
            return 0.0  # nothing repeats at a shorter length, so nothing repeats at this one
        share = _dup_ngram_share(v.units, size, v.unit_chars)
        if share == 0.0:
            v.repeat_free_from = size if v.repeat_free_from is None else min(size, v.repeat_free_from)
        return share

    return statistic


def _short_lines(v: TextView, t: QualityThresholds) -> float | None:
    if len(v.lines) < t.line_ratios_min_lines or t.short_line_chars is None:
        return None
    limit = t.short_line_chars if v.spaced else round(t.short_line_chars * v.chars_per_word / _LATIN_CHARS_PER_WORD_AND_SPACE)
    return sum(1 for line in v.lines if len(line) < limit) / v.n_lines_or_1


def _lines_ending_in_punctuation(v: TextView, t: QualityThresholds) -> float | None:
    marks = TERMINAL_PUNCTUATION.get(v.script, _COMMON_TERMINAL)
    if len(v.lines) < t.line_ratios_min_lines or marks is None or not v.lines:
        return None
    return sum(1 for line in v.lines if _ends_in(line, marks)) / len(v.lines)


Statistic = Callable[[TextView, QualityThresholds], "float | None"]


@dataclass(frozen=True)
class Rule:
    """One quality rule: drop with `reason` when `statistic` is above (bound "max") or below
    (bound "min") the threshold in QualityThresholds.`field` (`field`[n] for the n-gram rules)."""

    reason: str
    field: str
    bound: Literal["min", "max"]
    statistic: Statistic
    n: int | None = None

    @property
    def key(self) -> str:
        """The threshold's name: the field, or `field.n` for an n-gram rule (top_ngram_max_share.2)."""
        return self.field if self.n is None else f"{self.field}.{self.n}"

    def limit(self, t: QualityThresholds) -> float | None:
        """The threshold in `t`; None when the rule is off."""
        value = getattr(t, self.field)
        return value if self.n is None else (value or {}).get(self.n)

    def fails(self, value: float, limit: float) -> bool:
        return value < limit if self.bound == "min" else value > limit


_FIXED_BEFORE_NGRAMS = (
    Rule("boilerplate", "max_boilerplate_lines_fraction", "max", _boilerplate_lines),
    Rule("gopher_too_few_words", "min_words", "min", _words),
    Rule("gopher_too_many_words", "max_words", "max", _words),
    Rule("gopher_mean_word_length_low", "min_mean_word_length", "min", _mean_word_length),
    Rule("gopher_mean_word_length_high", "max_mean_word_length", "max", _mean_word_length),
    Rule("gopher_symbol_ratio", "max_symbol_to_word_ratio", "max", _symbols_per_word),
    Rule("high_digit_ratio", "max_digit_ratio", "max", _digit_ratio),
    Rule("low_alpha_ratio", "min_alpha_ratio", "min", _alpha_ratio),
    Rule("gopher_bullet_lines", "max_bullet_lines_ratio", "max", _bullet_lines),
    Rule("gopher_ellipsis_lines", "max_ellipsis_lines_ratio", "max", _ellipsis_lines),
    Rule("gopher_dup_para_frac", "max_duplicate_paragraph_fraction", "max", _dup_paragraphs),
    Rule("gopher_dup_para_char_frac", "max_duplicate_paragraph_char_fraction", "max", _dup_paragraph_chars),
    Rule("gopher_dup_line_frac", "max_duplicate_line_fraction", "max", _dup_lines),
    Rule("gopher_dup_line_char_frac", "max_duplicate_line_char_fraction", "max", _dup_line_chars),
)
_FIXED_AFTER_NGRAMS = (
    Rule("fineweb_short_lines", "max_short_lines_fraction", "max", _short_lines),
    Rule("c4_line_punctuation", "min_lines_ending_in_punctuation", "min", _lines_ending_in_punctuation),
)


@functools.lru_cache(maxsize=64)
def _rules(top: tuple[int, ...], short_top: tuple[int, ...], dup: tuple[int, ...]) -> tuple[Rule, ...]:
    ngrams = [Rule(f"gopher_top_{n}gram", "top_ngram_max_share", "max", _top_ngram(n), n) for n in top]
    ngrams += [Rule(f"gopher_top_{n}gram", "short_top_ngram_max_share", "max", _top_ngram(n, short=True), n) for n in short_top]
    ngrams += [Rule(f"gopher_dup_{n}gram", "duplicate_ngram_max_share", "max", _dup_ngram(n), n) for n in dup]
    return _FIXED_BEFORE_NGRAMS + tuple(ngrams) + _FIXED_AFTER_NGRAMS


def rules_for(t: QualityThresholds) -> tuple[Rule, ...]:
    """Every rule `t` can set, in the order they are checked (the module docstring's table); one
    n-gram rule per n in t's top_ngram_max_share, short_top_ngram_max_share and duplicate_ngram_max_share."""
    return _rules(tuple(sorted(t.top_ngram_max_share or {})), tuple(sorted(t.short_top_ngram_max_share or {})),
                  tuple(sorted(t.duplicate_ngram_max_share or {})))  # fmt: skip


def quality_filter(text: str, lang: str, script: str, config: QualityConfig | QualityThresholds) -> str | None:
    """None to keep `text`, else the reason to drop it (the first failing rule of rules_for).

    `lang` picks the thresholds from `config` (QualityConfig.thresholds_for); `script` is the
    text's dominant ISO 15924 script (langid.detect_script), which sets how words, n-grams,
    short lines and terminal punctuation are counted.
    """
    t = config.thresholds_for(lang) if isinstance(config, QualityConfig) else config
    view = text_view(text, script)
    if t.drop_lorem_ipsum and _LOREM.search(view.text):
        return "boilerplate"
    for rule in rules_for(t):
        limit = rule.limit(t)
        if limit is None:
            continue
        value = rule.statistic(view, t)
        if value is not None and rule.fails(value, limit):
            return rule.reason
    return None


def statistics(text: str, script: str, t: QualityThresholds) -> dict[str, float | None]:
    """{Rule.key: the rule's statistic for `text`} for every rule of rules_for(t), whether on or
    off; None where a rule does not apply to this text. The numbers quality_filter compares."""
    view = text_view(text, script)
    return {rule.key: rule.statistic(view, t) for rule in rules_for(t)}
