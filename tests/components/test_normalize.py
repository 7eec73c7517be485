"""Normalisation keeps meaning: real UDHR and chatterbot text from data/demo-corpus, exact values."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest

from components import shards
from components.clean.clean import clean_corpus
from components.clean.config import CleanConfig
from components.clean.normalize import normalize, repair_mojibake
from components.clean.quality import QualityThresholds, quality_filter

CORPUS = Path(__file__).resolve().parents[2] / "data" / "demo-corpus"
ZWSP = "\u200b"


def corpus() -> dict[str, dict]:
    docs = (json.loads(line) for path in sorted(CORPUS.glob("*.jsonl")) for line in path.open(encoding="utf-8"))
    return {d["id"]: d for d in docs}


DOCS = corpus()


def line(doc_id: str, n: int) -> str:
    return DOCS[doc_id]["text"].split("\n")[n]


# UDHR article 3, segmented into words with U+200B as Thai, Khmer and Myanmar writers do ("|")
SEGMENTED = {
    "th": ("udhr-716", "คน|ทุก|คน|มี|สิทธิ|ใน|การ|ดำรง|ชีวิต เสรีภาพ และ|ความ|มั่นคง|แห่ง|ตัว|ตน"),
    "km": ("udhr-747", "បុគ្គល|ម្នាក់ៗ មាន|សិទ្ធិ|រស់រាន|មាន|ជីវិត សេរីភាព និង|សន្ដិសុខ|ផ្ទាល់|ខ្លួន។"),
    "my": ("udhr-778", "လူ|တိုင်း|၌ အသက်|ရှင်|ရန် လွတ်လပ်|ခွင့်|နှင့် လုံခြုံ|စိတ်ချ|ခွင့် ရှိ|သည်။"),
}


def test_default_is_nfc_and_keeps_meaning():
    assert CleanConfig().normalization == "NFC"
    for text in ["(x + y)²", "H₂O", "85 ㎡", "第①条", "ﬁnal", "电话：１３８１２３４５６７８，好"]:
        assert normalize(text) == text
    assert normalize("(x + y)² H₂O 85 ㎡ 第①条", "NFKC") == "(x + y)2 H2O 85 m2 第1条"  # why NFKC is opt-in
    # the targeted fold: full-width letters and digits only; CJK punctuation stays native
    assert normalize("电话：１３８１２３４５６７８，ＡＢＣ　ok", "NFC_FULLWIDTH_ALNUM") == "电话：13812345678，ABC　ok"
    assert normalize("Vie\u0302\u0323t") == "Việt"  # canonical composition is what NFC changes


def test_udhr_in_42_languages_changes_only_by_canonical_equivalence():
    udhr = [d["text"] for d in DOCS.values() if d["source"] == "udhr"]
    assert len(udhr) == 1301
    assert [normalize(t) for t in udhr] == [unicodedata.normalize("NFC", t) for t in udhr]
    joiners = "".join(udhr)
    out = "".join(normalize(t) for t in udhr)
    assert (out.count("\u200c"), out.count("\u200d")) == (joiners.count("\u200c"), joiners.count("\u200d")) == (230, 187)


def test_zero_width_space_kept_as_the_word_separator_of_thai_khmer_myanmar():
    for doc_id, marked in SEGMENTED.values():
        assert marked.replace("|", "") == line(doc_id, 1)  # the real UDHR sentence
        text = marked.replace("|", ZWSP)
        assert normalize(text) == text
        assert normalize(marked.replace("|", ZWSP * 2)) == text  # a run becomes one
    thai = SEGMENTED["th"][1].replace("|", ZWSP)
    assert normalize(f"Python{ZWSP}{thai}{ZWSP}!") == f"Python{ZWSP}{thai}{ZWSP}!"  # an SA neighbour on one side
    # Japanese has no word separator: the demo corpus's U+200B pairs sit inside words (言えば, もっと)
    assert DOCS["chatterbot-corpus-4002"]["text"].count(ZWSP) == 2
    assert normalize(DOCS["chatterbot-corpus-4002"]["text"]) == (
        "あなたは不滅です\n機能的に言えば、私はそれに非常に近い。私は多くのシステムにバックアップして配置することができます。"
    )
    assert normalize(f"zero{ZWSP}width") == "zerowidth"


@pytest.mark.parametrize(
    "text",
    [
        "👩\u200d💻 👨\u200d👩\u200d👧 🏳\ufe0f\u200d🌈",  # emoji ZWJ sequences (UTS #51)
        "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f ❤\ufe0f ☺\ufe0e",  # tag sequence, VS16, VS15
        "می\u200cخواهم",  # Persian ZWNJ
        "क्\u200dष",  # Devanagari half form with ZWJ
        "\u05e9\u05dc\u05d5\u05dd \u2067abc 123\u2069 \u200fעולם\u200e.",  # bidi isolates and marks in Hebrew
        "\u0645\u0631\u062d\u0628\u0627 \u202bRLE\u202c \u061c",  # embedding and ARABIC LETTER MARK
        "ᠮᠣᠩᠭᠣᠯ\u202fᠤᠨ ᠬᠡᠯᠡ",  # Mongolian suffix after NARROW NO-BREAK SPACE
        "100\u00a0km, «\u202fbonjour\u202f»",  # no-break spaces glue what they join
        "葛\U000e0100城市 漢\ufe00",  # ideographic variation sequence, standardized variant
        "a\u2060b f\u2061(x) a\u2062b",  # WORD JOINER, invisible math operators
        "日本語\u3000テキスト",  # the ideographic space between two words
        "a\u034fb",  # COMBINING GRAPHEME JOINER
    ],
)
def test_invisible_characters_that_carry_meaning_are_kept(text):
    assert normalize(text) == text


def test_characters_without_meaning_are_removed_and_the_rest_spaced():
    assert normalize("co\u00adoperate Silben\u00adtrennung") == "cooperate Silbentrennung"  # soft hyphens
    assert normalize("\ufeffHello\n  \ufeffworld a\ufeffb") == "Hello\nworld a\u2060b"  # BOMs; ZWNBSP -> WJ
    assert normalize("ctl\x00\x07\x1b\x7f\x9b chars\tkept\ud800") == "ctl chars\tkept"
    assert normalize("a  \u00a0 b\u00a0\u00a0c\u3000\u3000d \t e") == "a b\u00a0c\u3000d \t e"
    assert normalize("\u00a0 first\u00a0\n\u3000second\u2003") == "first\nsecond"


def test_line_separators_survive_and_other_breaks_are_decided():
    assert normalize("a\u2028b\u2029c\x85d") == "a\u2028b\u2029c\x85d"
    assert normalize("a \u2028 b  \u2029\tc") == "a\u2028b\u2029c"  # spacing at line ends is trimmed
    assert normalize("a\r\nb\rc\vd\fe\x1cf\x1dg\x1eh\x1fi") == "a\nb\nc\nd\ne\nf\ng\nh\ti"
    assert normalize("a\n\n\n\nb") == "a\n\nb"
    for text in ["a\x85b", "line\u2028next", "para\u2029next", "café\x85next"]:
        assert repair_mojibake(text) == text  # ftfy alone reads U+0085 as a Windows-1252 "…"
    assert repair_mojibake("Ñ\x85орошо Ã\x85ngström a\x85b") == "хорошо Ångström a\x85b"  # bytes of mojibake


def test_normalize_is_idempotent_on_the_demo_corpus():
    texts = [d["text"] for d in DOCS.values()]
    once = [normalize(t) for t in texts]
    assert [normalize(t) for t in once] == once


def test_zero_width_space_separated_words_are_counted():
    only_words = QualityThresholds(
        min_words=14, top_ngram_max_share=None, duplicate_ngram_max_share=None, min_alpha_ratio=None
    )
    doc_id, marked = SEGMENTED["th"]
    assert quality_filter(line(doc_id, 1), "th", "Thai", only_words) == "gopher_too_few_words"  # 55 letters / 5
    assert quality_filter(marked.replace("|", ZWSP), "th", "Thai", only_words) is None  # 16 words
    doc_id, marked = SEGMENTED["km"]
    assert quality_filter(marked.replace("|", ZWSP), "km", "Khmr", only_words.model_copy(update={"min_words": 15})) == (
        "gopher_too_few_words"  # 12 words
    )


def test_clean_step_keeps_separators_and_thai_words_byte_identical(tmp_path):
    thai = SEGMENTED["th"][1].replace("|", ZWSP)
    texts = [f"first line\u2028second line\u2029third\x85fourth line", thai + "\n" + line("udhr-747", 1)]
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": str(i), "text": t}, ensure_ascii=False) + "\n" for i, t in enumerate(texts)))
    basic = {"langid": None, "quality": None, "pii": None, "near_dedup": None}
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**basic))
    kept = [d.text for d in shards.iter_texts(s.uri for s in result.manifest.shards)]
    assert kept == texts
