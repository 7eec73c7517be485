"""Language and script ID on real UDHR text from the demo corpus (tests/components/data)."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.clean.langid import (
    LangIdConfig,
    LangIdError,
    LanguageIdentifier,
    detect_script,
    is_space_delimited,
)

DATA = Path(__file__).parent / "data"
SCRIPT_OF = {"zh": "Hani", "hi": "Deva", "ja": "Jpan", "th": "Thai", "ar": "Arab", "ru": "Cyrl", "en": "Latn", "sw": "Latn", "yo": "Latn"}


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text(encoding="utf-8").splitlines()]


UDHR = records("udhr_articles.jsonl")


@pytest.fixture(scope="module")
def ident() -> LanguageIdentifier:
    return LanguageIdentifier()


def test_fixture_covers_every_language():
    counts = Counter(r["lang_hint"] for r in UDHR)
    assert set(counts) == set(SCRIPT_OF)
    assert min(counts.values()) >= 9
    assert all(len(r["text"]) >= 100 for r in UDHR)


@pytest.mark.parametrize("lang", sorted(SCRIPT_OF))
def test_language_accuracy_on_udhr(ident, lang):
    texts = [r["text"] for r in UDHR if r["lang_hint"] == lang]
    found = [ident.identify(t)[0] for t in texts]
    assert sum(f == lang for f in found) / len(texts) >= 0.9, Counter(found)


@pytest.mark.parametrize("lang", sorted(SCRIPT_OF))
def test_script_exact_on_udhr(lang):
    texts = [r["text"] for r in UDHR if r["lang_hint"] == lang]
    assert {detect_script(t) for t in texts} == {SCRIPT_OF[lang]}


def test_identify_confidence_is_a_probability(ident):
    for r in UDHR[:40]:
        lang, confidence, script = ident.identify(r["text"])
        assert 0.0 <= confidence <= 1.0
        assert script == SCRIPT_OF[r["lang_hint"]]


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("Hello, world", "Latn"),
        ("你好，世界。", "Hani"),
        ("すべての人は、生まれながらにして自由", "Jpan"),
        ("第７条", "Hani"),
        ("모든 인간은 태어날 때부터 자유로우며", "Hang"),
        ("सभी मनुष्यों को गौरव", "Deva"),
        ("ทุกคนมีสิทธิ", "Thai"),
        ("لكل إنسان حق", "Arab"),
        ("Все люди рождаются свободными", "Cyrl"),
        ("Όλοι οι άνθρωποι", "Grek"),
        ("ሁሉም የሰው ልጆች", "Ethi"),
        ("ყველა ადამიანი", "Geor"),
        ("Բոլոր մարդիկ", "Armn"),
        ("כל בני האדם", "Hebr"),
        ("மனிதக் குடும்பத்தினைச்", "Taml"),
        ("12345 !!! 😀", "Zyyy"),
        ("", "Zyyy"),
        ("𠀀𠀁 ok", "Hani"),  # CJK extension B counts as Han
    ],
)
def test_detect_script_examples(text, script):
    assert detect_script(text) == script


def test_space_delimited():
    assert is_space_delimited("Latn") and is_space_delimited("Deva") and is_space_delimited("Hang")
    assert not any(is_space_delimited(s) for s in ("Hani", "Jpan", "Thai", "Khmr", "Mymr", "Laoo"))


def test_filter_keeps_wanted_and_names_the_rest():
    ident = LanguageIdentifier(LangIdConfig(languages=["zh", "hi"]))
    zh = next(r["text"] for r in UDHR if r["lang_hint"] == "zh")
    en = next(r["text"] for r in UDHR if r["lang_hint"] == "en")
    assert ident.filter(zh) == ("zh", "Hani", None)
    assert ident.filter(en) == ("en", "Latn", "language_not_wanted")
    assert ident.filter("1234 5678") == ("und", "Zyyy", "language_not_wanted")


def test_filter_without_languages_tags_all(ident):
    th = next(r["text"] for r in UDHR if r["lang_hint"] == "th")
    assert ident.filter(th) == ("th", "Thai", None)


def test_min_confidence_marks_uncertain():
    ident = LanguageIdentifier(LangIdConfig(min_confidence=0.999999))
    lang, script, reason = ident.filter("ok")
    assert (lang, reason) == ("und", "language_uncertain")
    confident = LanguageIdentifier(LangIdConfig(min_confidence=0.5))
    en = next(r["text"] for r in UDHR if r["lang_hint"] == "en")
    assert confident.filter(en) == ("en", "Latn", None)


def test_config_errors_say_what_to_change():
    with pytest.raises(ValidationError, match="ISO 639"):
        LangIdConfig(languages=["English"])
    with pytest.raises(ValidationError, match="empty"):
        LangIdConfig(languages=[])
    with pytest.raises(ValidationError):
        LangIdConfig(detector="fasttext")
    with pytest.raises(ValidationError):
        LangIdConfig(unknown_key=1)
    with pytest.raises(LangIdError, match="not labels"):
        LanguageIdentifier(LangIdConfig(languages=["zz"])).load()


def test_speed_sanity(ident):
    texts = [r["text"] for r in UDHR] * 5
    start = time.perf_counter()
    scripts = [detect_script(t) for t in texts]
    script_rate = len(texts) / (time.perf_counter() - start)
    start = time.perf_counter()
    langs = [ident.identify(t)[0] for t in texts[:200]]
    ident_rate = 200 / (time.perf_counter() - start)
    print(f"detect_script {script_rate:.0f} docs/s, identify {ident_rate:.0f} docs/s")
    assert len(scripts) == len(texts) and len(langs) == 200
