"""The clean step on tiny inline corpora: exact counts, exact texts, byte-identical reruns."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from components import shards
from components.clean.clean import CleanError, clean_corpus
from components.clean.config import CleanConfig
from components.clean.normalize import normalize
from components.manifest import Manifest
from components.shards import read_json_lines

# the basic stages only (normalise, length, exact dedup): exact counts without the model-based ones
BASIC = {"langid": None, "quality": None, "pii": None, "near_dedup": None}
LONG = "The quick brown fox jumps over the lazy dog."  # 44 characters


def write_jsonl(path: Path, records: list[dict | bytes]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [r if isinstance(r, bytes) else json.dumps(r, ensure_ascii=False).encode() for r in records]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def kept_docs(result) -> list[shards.Document]:
    return list(shards.iter_texts(s.uri for s in result.manifest.shards))


def test_normalize_nfc_zero_width_and_whitespace():
    assert normalize("ＡＢＣ１２３") == "ＡＢＣ１２３"  # NFC (the default) keeps width; NFKC folds it on request
    assert normalize("ＡＢＣ１２３", "NFKC") == "ABC123"
    # outside Thai/Lao/Khmer/Myanmar U+200B marks nothing; a mid-line U+FEFF is a WORD JOINER
    assert normalize("zero\u200bwidth\ufeff and\u00adsoft") == "zerowidth\u2060 andsoft"
    assert normalize("ctl\x00\x07\x1b chars\tkept") == "ctl chars\tkept"
    assert normalize("  a   b  \r\n\n\n\n  c \u2028d  ") == "a b\n\nc\u2028d"  # U+2028 is kept
    assert normalize("می\u200cخواهم") == "می\u200cخواهم"  # ZWNJ is spelling in Persian


def test_clean_normalises_dedups_filters_and_conserves(tmp_path):
    inp = write_jsonl(
        tmp_path / "in" / "a.jsonl",
        [
            {"id": "a", "text": "Ｆｕｌｌ　ｗｉｄｔｈ text that is long enough", "source": "s1", "lang_hint": "en"},
            {"id": "b", "text": LONG},
            {"id": "c", "text": "  " + LONG.replace(" ", "   ") + "\u200b "},  # normalises to b's text
            {"id": "d", "text": "short"},
            {"id": "e", "text": "x" * 200},
            {"id": "f", "text": " \u200b\n\n "},
            {"id": "g", "text": LONG},
        ],
    )
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, min_chars=20, max_chars=100, dropped_samples=1))

    assert result.stats.model_dump(exclude={"stages", "counters"}) == {
        "records_in": 7,
        "kept": 2,
        "dropped": {"duplicate": 2, "empty": 1, "too_long": 1, "too_short": 1},
        "quarantined": {},
        "languages": {"und": {"duplicate": 2, "empty": 1, "kept": 2, "too_long": 1, "too_short": 1}},
    }
    assert (out / "languages.md").read_text(encoding="utf-8").splitlines()[2:] == [
        "| language | in | kept | kept % | duplicate | empty | too_long | too_short | other |",
        "|---|---|---|---|---|---|---|---|---|",
        "| und | 7 | 2 | 28.6% | 2 | 1 | 1 | 1 | 0 |",
    ]
    assert result.stats.stages == {
        "normalise": {"in": 7, "out": 7},
        "length": {"in": 7, "out": 4, "empty": 1, "too_short": 1, "too_long": 1},
        "dedup": {"in": 4, "out": 2, "duplicate": 2},
    }
    docs = kept_docs(result)
    # NFC (the default) keeps full-width letters and the ideographic space U+3000
    assert [(d.id, d.text) for d in docs] == [("a", "Ｆｕｌｌ　ｗｉｄｔｈ text that is long enough"), ("b", LONG)]
    assert docs[0].meta == {"source": "s1", "lang_hint": "en"}
    dup_samples = list(read_json_lines(str(out / "dropped" / "duplicate.jsonl")))
    assert [d["id"] for d in dup_samples] == ["c"]  # capped at dropped_samples=1
    assert dup_samples[0]["meta"]["drop_reason"] == "duplicate"
    assert sorted(p.name for p in (out / "dropped").iterdir()) == [
        "duplicate.jsonl", "empty.jsonl", "too_long.jsonl", "too_short.jsonl"
    ]  # fmt: skip
    assert json.loads((out / "stats.json").read_text()) == result.stats.model_dump()
    loaded = Manifest.load(str(out / "manifest.json"))
    assert loaded.kind == "documents" and loaded.records == 2
    assert loaded.facts == {"stats": result.stats.model_dump(), "text_field": "text"}
    assert not (out / "quarantine").exists()


def test_quarantine_reasons_are_counted_and_written(tmp_path):
    inp = write_jsonl(
        tmp_path / "in.jsonl",
        [
            {"id": "ok", "text": LONG},
            b'{"id": "bad", "text": "caf\xe9 latin-1 bytes here and more"}',
            b'{"id": "broken", "text": ',
            {"id": "notext", "body": LONG},
            {"id": "blank", "text": "  \n\t "},
        ],
    )
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC))
    assert result.stats.records_in == 5 and result.stats.kept == 1
    assert result.stats.quarantined == {"empty_text": 1, "invalid_json": 1, "missing_text": 1, "not_utf8": 1}
    rows = list(read_json_lines(str(out / "quarantine" / "part-00000.jsonl")))
    assert [(r["source"].rsplit(":", 1)[1], r["reason"]) for r in rows] == [
        ("2", "not_utf8"), ("3", "invalid_json"), ("4", "missing_text"), ("5", "empty_text")
    ]  # fmt: skip
    result.stats.check()


def test_directory_of_gz_and_jsonl_shards_sharded_output(tmp_path):
    first = tmp_path / "in" / "part-0.jsonl.gz"
    first.parent.mkdir()
    records = [{"id": f"z{i}", "text": f"{LONG} number {i}"} for i in range(3)]
    first.write_bytes(gzip.compress(b"".join(json.dumps(r).encode() + b"\n" for r in records)))
    write_jsonl(tmp_path / "in" / "part-1.jsonl", [{"id": "z0-again", "text": f"{LONG} number 0"}, {"id": "y", "text": LONG}])
    (tmp_path / "in" / "README.md").write_text("not a shard")  # counted, not silently left out
    out = tmp_path / "out"
    result = clean_corpus(str(tmp_path / "in"), str(out), CleanConfig(**BASIC, shard_max_records=2))
    assert result.stats.model_dump(exclude={"stages", "counters", "languages"}) == {
        "records_in": 6, "kept": 4, "dropped": {"duplicate": 1}, "quarantined": {"unsupported_file_type": 1}
    }  # fmt: skip
    assert [s.records for s in result.manifest.shards] == [2, 1, 1]  # per input shard, at most 2 each
    assert sorted(p.name for p in (out / "shards").iterdir()) == [
        "part-00000-000.jsonl.gz", "part-00000-001.jsonl.gz", "part-00001-000.jsonl.gz"
    ]  # fmt: skip
    assert [d.id for d in kept_docs(result)] == ["z0", "z1", "z2", "y"]


def test_rerun_is_byte_identical_and_removes_stale_shards(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{LONG} {i}"} for i in range(5)])
    out = tmp_path / "out"
    first = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, shard_max_records=1))
    before = {p.name: p.read_bytes() for p in (out / "shards").iterdir()}
    write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{LONG} {i}"} for i in range(3)])
    clean_corpus(str(inp), str(out), CleanConfig(**BASIC, shard_max_records=1))
    assert len(list((out / "shards").iterdir())) == 3  # shards of the longer run are gone
    write_jsonl(tmp_path / "in.jsonl", [{"id": str(i), "text": f"{LONG} {i}"} for i in range(5)])
    again = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, shard_max_records=1))
    assert {p.name: p.read_bytes() for p in (out / "shards").iterdir()} == before
    assert again.manifest.digest == first.manifest.digest


def test_chinese_survives_default_config(tmp_path):
    text = "这本书写得非常好，内容充实，推荐给所有想了解历史的朋友们阅读。"
    inp = write_jsonl(tmp_path / "zh.jsonl", [{"id": "zh", "text": text, "lang_hint": "zh"}])
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert [(d.id, d.text) for d in kept_docs(result)] == [("zh", text)]  # NFC (the default) keeps "，"
    nfkc = clean_corpus(str(inp), str(tmp_path / "out-nfkc"), CleanConfig(**BASIC, normalization="NFKC"))
    # NFKC, on request, folds the full-width comma to ASCII; "。" has no compatibility form
    assert [d.text for d in kept_docs(nfkc)] == [text.replace("，", ",")]


def test_missing_input_is_a_clean_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(CleanError, match=r"nope.*does not exist"):
        clean_corpus(str(missing), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_directory_without_shards_is_a_clean_error(tmp_path):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "notes.txt").write_text("hello")
    with pytest.raises(CleanError, match=r"in'? holds no document shards.*\.jsonl\.gz"):
        clean_corpus(str(tmp_path / "in"), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_empty_corpus_is_a_clean_error(tmp_path):
    (tmp_path / "empty.jsonl").write_bytes(b"\n")
    with pytest.raises(CleanError, match="empty corpus"):
        clean_corpus(str(tmp_path / "empty.jsonl"), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_everything_dropped_is_a_clean_error_with_stats(tmp_path):
    inp = write_jsonl(tmp_path / "in.jsonl", [{"id": "a", "text": "hi"}, b"{oops"])
    with pytest.raises(CleanError, match=r"all 2 records .*'too_short': 1.*'quarantined:invalid_json': 1"):
        clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert not (tmp_path / "out" / "manifest.json").exists()
    assert json.loads((tmp_path / "out" / "stats.json").read_text())["records_in"] == 2


def test_output_inside_input_is_refused(tmp_path):
    write_jsonl(tmp_path / "in" / "a.jsonl", [{"id": "a", "text": LONG}])
    with pytest.raises(CleanError, match="inside input"):
        clean_corpus(str(tmp_path / "in"), str(tmp_path / "in" / "clean"), CleanConfig(**BASIC))


def test_mojibake_repaired_and_html_stripped(tmp_path):
    from components.clean.normalize import repair_mojibake, strip_html

    assert repair_mojibake("The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows.") == "The Mona Lisa doesn\u2019t have eyebrows."
    assert repair_mojibake("cafÃ© au lait") == "café au lait"
    assert repair_mojibake("人人生而自由") == "人人生而自由"  # correct text is untouched
    page = "<html><head><style>p {color: red}</style><script>var x = 1 < 2;</script></head><body>" \
           "<p>Fish &amp; chips</p><p>Caf&eacute;<br>open</p><!-- nav --></body></html>"
    assert strip_html(page).split() == ["Fish", "&", "chips", "Café", "open"]
    assert strip_html("3 < 5 and 7 > 2") == "3 < 5 and 7 > 2"  # not tags

    inp = write_jsonl(tmp_path / "in.jsonl", [
        {"id": "m", "text": "The Mona Lisa doesnÃ¢â‚¬â„¢t have eyebrows, and that is fine."},
        {"id": "h", "text": "<div><p>Everyone has the right to rest &amp; leisure.</p></div>"},
    ])
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC, strip_html=True))
    texts = {d.id: d.text for d in kept_docs(result)}
    assert texts == {"m": "The Mona Lisa doesn\u2019t have eyebrows, and that is fine.",
                     "h": "Everyone has the right to rest & leisure."}
    assert result.stats.counters == {"mojibake_repaired": 1, "html_stripped": 1}
