"""Language and script identification, offline.

    ident = LanguageIdentifier(LangIdConfig(languages=["zh", "en"], min_confidence=0.5))
    lang, script, reason = ident.filter(text)     # reason None -> keep

Decisions a reader might not guess:
- The language model is py3langid's bundled naive-Bayes model (140 labels, shipped in the
  wheel, nothing downloaded at run time), with normalised probabilities so `confidence` is in
  [0, 1]. It is loaded once per process, on first use or by `load()`, and never restricted
  with `set_languages`: restricting it would force every text into a wanted language and
  defeat the filter.
- Traditional and simplified Chinese are both "zh"; the script tells them apart only as
  "Hani" (they share the block), so keep "zh" to keep both.
- `detect_script` counts letters and combining marks (Indic vowel signs are marks) through
  one `str.translate` table over the Basic Multilingual Plane, so the per-character work runs
  in C. Characters outside the BMP count only when they are CJK ideographs (extensions B-G);
  emoji and other symbols never count.
- Japanese is "Jpan" when kana make up at least a tenth of the Han+kana letters; a Japanese
  text written almost only in kanji reads as "Hani".
- Text with no letters at all is script "Zyyy" and language "und" with confidence 0.0; the
  model is not consulted.
"""

from __future__ import annotations

import importlib.util
import threading
import unicodedata
from collections import Counter
from typing import Literal

from pydantic import Field, field_validator

from components.config import Section

UNDETERMINED = "und"
COMMON = "Zyyy"

# (first, last, script) over code points; letters and marks inside them count for the script.
_RANGES: list[tuple[int, int, str]] = [
    (0x0041, 0x005A, "Latn"), (0x0061, 0x007A, "Latn"), (0x00C0, 0x024F, "Latn"),
    (0x0250, 0x02AF, "Latn"), (0x1D00, 0x1DBF, "Latn"), (0x1E00, 0x1EFF, "Latn"),
    (0x2C60, 0x2C7F, "Latn"), (0xA720, 0xA7FF, "Latn"), (0xAB30, 0xAB6F, "Latn"),
    (0xFF21, 0xFF3A, "Latn"), (0xFF41, 0xFF5A, "Latn"),
    (0x0370, 0x03FF, "Grek"), (0x1F00, 0x1FFF, "Grek"),
    (0x0400, 0x052F, "Cyrl"), (0x1C80, 0x1C8F, "Cyrl"), (0x2DE0, 0x2DFF, "Cyrl"), (0xA640, 0xA69F, "Cyrl"),
    (0x0530, 0x058F, "Armn"), (0xFB13, 0xFB17, "Armn"),
    (0x0590, 0x05FF, "Hebr"), (0xFB1D, 0xFB4F, "Hebr"),
    (0x0600, 0x06FF, "Arab"), (0x0750, 0x077F, "Arab"), (0x0870, 0x08FF, "Arab"),
    (0xFB50, 0xFDFF, "Arab"), (0xFE70, 0xFEFF, "Arab"),
    (0x0780, 0x07BF, "Thaa"),
    (0x0900, 0x097F, "Deva"), (0xA8E0, 0xA8FF, "Deva"),
    (0x0980, 0x09FF, "Beng"),
    (0x0A00, 0x0A7F, "Guru"),
    (0x0A80, 0x0AFF, "Gujr"),
    (0x0B00, 0x0B7F, "Orya"),
    (0x0B80, 0x0BFF, "Taml"),
    (0x0C00, 0x0C7F, "Telu"),
    (0x0C80, 0x0CFF, "Knda"),
    (0x0D00, 0x0D7F, "Mlym"),
    (0x0D80, 0x0DFF, "Sinh"),
    (0x0E00, 0x0E7F, "Thai"),
    (0x0E80, 0x0EFF, "Laoo"),
    (0x0F00, 0x0FFF, "Tibt"),
    (0x1000, 0x109F, "Mymr"), (0xA9E0, 0xA9FF, "Mymr"), (0xAA60, 0xAA7F, "Mymr"),
    (0x10A0, 0x10FF, "Geor"), (0x1C90, 0x1CBF, "Geor"), (0x2D00, 0x2D2F, "Geor"),
    (0x1100, 0x11FF, "Hang"), (0x3130, 0x318F, "Hang"), (0xA960, 0xA97F, "Hang"),
    (0xAC00, 0xD7FF, "Hang"), (0xFFA0, 0xFFDC, "Hang"),
    (0x1200, 0x139F, "Ethi"), (0x2D80, 0x2DDF, "Ethi"), (0xAB00, 0xAB2F, "Ethi"),
    (0x1780, 0x17FF, "Khmr"), (0x19E0, 0x19FF, "Khmr"),
    (0x3040, 0x309F, "Hira"),
    (0x30A0, 0x30FF, "Kana"), (0x31F0, 0x31FF, "Kana"), (0xFF66, 0xFF9D, "Kana"),
    (0x2E80, 0x2FDF, "Hani"), (0x3005, 0x3007, "Hani"), (0x3021, 0x3029, "Hani"),
    (0x3400, 0x4DBF, "Hani"), (0x4E00, 0x9FFF, "Hani"), (0xF900, 0xFAFF, "Hani"),
]
_ASTRAL_HANI = (0x20000, 0x323AF)

SCRIPTS: tuple[str, ...] = tuple(dict.fromkeys(s for _, _, s in _RANGES)) + ("Jpan", COMMON)

# Scripts written without spaces between words: word statistics must use characters.
NOT_SPACE_DELIMITED = frozenset({"Hani", "Hira", "Kana", "Jpan", "Thai", "Laoo", "Khmr", "Mymr", "Tibt"})


def _build_table() -> tuple[dict[int, str | None], dict[str, str]]:
    """BMP code point -> one-character script code (letters and marks) or None (everything else)."""
    codes = {script: chr(0xE000 + i) for i, script in enumerate(SCRIPTS)}  # private-use stand-ins
    table: dict[int, str | None] = dict.fromkeys(range(0x10000))
    for first, last, script in _RANGES:
        code = codes[script]
        for cp in range(first, last + 1):
            if unicodedata.category(chr(cp))[0] in "LM":
                table[cp] = code
    return table, {code: script for script, code in codes.items()}


_TABLE, _CODE_TO_SCRIPT = _build_table()
_HANI_CODE = next(c for c, s in _CODE_TO_SCRIPT.items() if s == "Hani")


def script_counts(text: str) -> Counter[str]:
    """Letters (and combining marks) per script; characters of no listed script are not counted."""
    raw = Counter(text.translate(_TABLE))
    counts: Counter[str] = Counter()
    for code, n in raw.items():
        script = _CODE_TO_SCRIPT.get(code)
        if script is not None:
            counts[script] += n
        elif _ASTRAL_HANI[0] <= ord(code) <= _ASTRAL_HANI[1]:
            counts["Hani"] += n
    return counts


def detect_script(text: str) -> str:
    """The dominant script of the letters of `text` (ISO 15924 codes), "Zyyy" when it has none.

    Han and kana are counted together against the other scripts; the winner is "Jpan" when
    kana are at least a tenth of them, else "Hani".
    """
    counts = script_counts(text)
    if not counts:
        return COMMON
    kana = counts.pop("Hira", 0) + counts.pop("Kana", 0)
    if kana:
        counts["Jpan"] = kana + counts.pop("Hani", 0)
    script, n = counts.most_common(1)[0]
    if script == "Jpan" and kana * 10 < n:
        return "Hani"
    return script


def is_space_delimited(script: str) -> bool:
    """False for scripts written without spaces between words (Han, Japanese, Thai, Lao, Khmer, Myanmar, Tibetan)."""
    return script not in NOT_SPACE_DELIMITED


class LangIdConfig(Section):
    languages: list[str] | None = Field(
        None, description="keep only these language codes (ISO 639-1 as py3langid labels them); None keeps all, tagged"
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="below this probability the language is 'und' and the document dropped; 0 turns it off"
    )
    detector: Literal["py3langid"] = Field("py3langid", description="language model; the only one bundled offline")
    sample_chars: int = Field(
        4096, ge=64, description="characters from the start of a document given to the model; bounds its cost on long documents"
    )

    @field_validator("languages")
    @classmethod
    def _codes(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        if not value:
            raise ValueError("languages is empty: list the codes to keep, or leave it unset (null) to keep all")
        bad = [code for code in value if not (code.isascii() and code.isalpha() and code.islower() and 2 <= len(code) <= 3)]
        if bad:
            raise ValueError(f"language codes {bad} are not ISO 639 codes: write them lower-case, e.g. 'zh', 'hi', 'en'")
        return value


class LangIdError(ValueError):
    """The identifier cannot be built; the message says what to change."""


_MODEL = None
_MODEL_LOCK = threading.Lock()


def _load_model():
    global _MODEL
    with _MODEL_LOCK:
        if _MODEL is None:
            from py3langid.langid import MODEL_FILE
            from py3langid.langid import LanguageIdentifier as _Py3LangId

            _MODEL = _Py3LangId.from_model_file(MODEL_FILE, norm_probs=True)
    return _MODEL


class LanguageIdentifier:
    """Language, confidence and script per text; `filter` applies `LangIdConfig`."""

    def __init__(self, config: LangIdConfig | None = None):
        self.config = config or LangIdConfig()
        if importlib.util.find_spec("py3langid") is None:
            raise LangIdError("language identification needs py3langid: pip install py3langid==0.4.0")
        self._wanted = frozenset(self.config.languages) if self.config.languages is not None else None
        self._model = None

    def load(self) -> None:
        """Load the model now (about 0.7 s) and check `languages` against its labels."""
        if self._model is not None:
            return
        model = _load_model()
        if self._wanted is not None:
            unknown = sorted(self._wanted - set(model.labels))
            if unknown:
                raise LangIdError(f"languages {unknown} are not labels of the {self.config.detector} model; known: {sorted(model.labels)}")
        self._model = model

    def identify(self, text: str) -> tuple[str, float, str]:
        """(language, confidence in [0, 1], script); language "und" below `min_confidence` or without letters."""
        script = detect_script(text)
        if script == COMMON:
            return UNDETERMINED, 0.0, script
        self.load()
        lang, confidence = self._model.classify(text[: self.config.sample_chars])
        if confidence < self.config.min_confidence:
            lang = UNDETERMINED
        return lang, confidence, script

    def filter(self, text: str) -> tuple[str, str, str | None]:
        """(language, script, reason): reason None keeps the document.

        `language_uncertain`: confidence below `min_confidence` (a threshold above 0 is set).
        `language_not_wanted`: the language is not in `languages` (set).
        """
        lang, confidence, script = self.identify(text)
        if self.config.min_confidence > 0 and confidence < self.config.min_confidence:
            return lang, script, "language_uncertain"
        if self._wanted is not None and lang not in self._wanted:
            return lang, script, "language_not_wanted"
        return lang, script, None
