"""Bad input files for the clean step, made for real in tmp_path: every one is either a counted
quarantine with a reason (and a `detail` saying what is wrong) or a CleanError naming the file
and the fix; never a traceback, a silent drop, or memory that grows with a line."""

from __future__ import annotations

import gzip
import json
import random
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pydantic
import pytest

from components import shards
from components.clean.clean import CleanError, clean_corpus
from components.clean.config import CleanConfig

ROOT = Path(__file__).resolve().parents[2]
# the basic stages only (normalise, length, exact dedup): exact counts without the model-based ones
BASIC = {"langid": None, "quality": None, "pii": None, "near_dedup": None, "workers": 1}
LONG = "The quick brown fox jumps over the lazy dog."
BIG = 50 * 2**20  # bytes of text in the oversized record


def record(doc_id: str, text: str) -> bytes:
    return json.dumps({"id": doc_id, "text": text}, ensure_ascii=False).encode() + b"\n"


def good_shard(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(record("good", f"{LONG} A good record."))
    return path


def quarantine_rows(out: Path) -> list[dict]:
    # split on b"\n" only: a raw U+2028 inside a JSON string is no line end (splitlines() says it is)
    return [json.loads(line) for f in sorted((out / "quarantine").iterdir()) for line in f.read_bytes().split(b"\n") if line]


def kept_ids(result) -> list[str]:
    return [d.id for d in shards.iter_texts(s.uri for s in result.manifest.shards)]


# ---- a 50 MB line ------------------------------------------------------------------------------

# Cleans argv[1] into argv[2] after a warm-up run (imports, lazy modules), and reports how far the
# big run raised the process's peak RSS beyond the warm-up's.
CHILD = """
import json, resource, sys
from components.clean.clean import clean_corpus
from components.clean.config import CleanConfig
basic = dict(langid=None, quality=None, pii=None, near_dedup=None, workers=1)
clean_corpus(sys.argv[3], sys.argv[4], CleanConfig(**basic))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
result = clean_corpus(sys.argv[1], sys.argv[2], CleanConfig(**basic))
growth = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024
print(json.dumps({"growth": growth, "stats": result.stats.model_dump()}))
"""


def write_big_record(handle, newline: bool) -> int:
    """One record of BIG bytes of text, written in 1 MiB pieces; the bytes written."""
    chunk = b"word " * (2**20 // 5)
    parts = [b'{"id": "big", "text": "', *[chunk] * (BIG // len(chunk)), b'"}' + (b"\n" if newline else b"")]
    for part in parts:
        handle.write(part)
    return sum(map(len, parts))


@pytest.mark.parametrize("shape", ["record_then_more", "no_newline_at_eof", "gzip_bomb"])
def test_a_50mb_line_is_quarantined_as_line_too_long_in_bounded_memory(tmp_path, shape):
    inp = tmp_path / "in" / ("a.jsonl.gz" if shape == "gzip_bomb" else "a.jsonl")
    inp.parent.mkdir()
    with gzip.open(inp, "wb", compresslevel=1) if shape == "gzip_bomb" else open(inp, "wb") as handle:
        handle.write(record("before", f"{LONG} Before the big one."))
        size = write_big_record(handle, newline=shape != "no_newline_at_eof")
        if shape != "no_newline_at_eof":
            handle.write(record("after", f"{LONG} After the big one."))
    warm = good_shard(tmp_path / "warm" / "w.jsonl")
    out = tmp_path / "out"

    done = subprocess.run([sys.executable, "-c", CHILD, str(inp.parent), str(out), str(warm), str(tmp_path / "warm-out")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.splitlines()[-1])
    stats = report["stats"]
    kept = 1 if shape == "no_newline_at_eof" else 2
    assert (stats["records_in"], stats["kept"], stats["quarantined"]) == (kept + 1, kept, {"line_too_long": 1})
    # the line is skipped in bounded reads, never held whole: the peak grows by far less than it
    assert report["growth"] < BIG / 2, f"peak RSS grew {report['growth'] / 2**20:.0f} MiB for a {BIG >> 20} MiB line"

    [row] = quarantine_rows(out)
    assert row["source"] == f"{inp}:2" and row["reason"] == "line_too_long"
    assert row["raw"].startswith('{"id": "big", "text": "word word') and len(row["raw"]) == 200
    assert row["detail"] == f"a line of {size:,} bytes, over max_line_bytes (8,388,608); skipped without reading it whole"
    assert sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) < 100_000, "no copy of the line was written"


def test_max_line_bytes_is_validated_and_raising_it_reads_the_line(tmp_path):
    with pytest.raises(pydantic.ValidationError, match=r"max_line_bytes \(100000\) is below max_chars \(200000\)"):
        CleanConfig(max_chars=200_000, max_line_bytes=100_000)
    with pytest.raises(pydantic.ValidationError, match="max_line_bytes"):
        CleanConfig(max_line_bytes=0)

    # a 3 MB document under a raised limit is read, then dropped as too_long; its sample is cut
    inp = tmp_path / "in.jsonl"
    inp.write_bytes(record("ok", LONG) + record("long", "many words " * 300_000))
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, max_chars=1_000, max_line_bytes=4 * 2**20))
    assert (result.stats.kept, result.stats.dropped, result.stats.quarantined) == (1, {"too_long": 1}, {})
    [sample] = [json.loads(line) for line in (out / "dropped" / "too_long.jsonl").read_bytes().split(b"\n") if line]
    assert len(sample["text"]) == 1_000 and sample["meta"]["sample_cut_from_chars"] == len("many words " * 300_000) - 1


# ---- not UTF-8 -----------------------------------------------------------------------------------


def test_cp1252_jsonl_lines_are_quarantined_as_not_utf8_with_the_byte(tmp_path):
    inp = tmp_path / "cp1252.jsonl"
    inp.write_bytes(b"".join(record(i, t).decode().encode("cp1252") for i, t in [
        ("ascii", f"{LONG} Plain ASCII reads the same in either encoding."),
        ("accents", f"{LONG} Un café crème, déjà vu."),
        ("quotes", f"{LONG} \u201cSmart quotes\u201d cost 5 \u20ac."),
    ]))  # fmt: skip
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC))
    assert (result.stats.kept, result.stats.quarantined) == (1, {"not_utf8": 2})
    assert kept_ids(result) == ["ascii"]
    rows = quarantine_rows(out)
    assert [(r["source"], r["reason"]) for r in rows] == [(f"{inp}:2", "not_utf8"), (f"{inp}:3", "not_utf8")]
    assert "Un caf\\xe9 cr\\xe8me" in rows[0]["raw"]  # the offending bytes stay visible
    assert rows[0]["detail"] == (
        "byte 0xe9 at offset 78 is not UTF-8; shards must be UTF-8 (from cp1252/latin-1: `iconv -f cp1252 -t UTF-8 IN > OUT`)"
    )
    assert rows[1]["detail"].startswith("byte 0x93 at offset 71 is not UTF-8")


def test_a_latin1_txt_file_in_the_input_is_quarantined_as_unsupported_file_type(tmp_path):
    root = tmp_path / "in"
    good_shard(root / "part-0.jsonl")
    (root / "notes.txt").write_bytes("Données brutes, encodées en latin-1.\n".encode("latin-1"))
    (root / ".built").write_text("stamp")  # hidden and _-prefixed files are not data
    (root / "_SUCCESS").write_text("")
    out = tmp_path / "out"
    result = clean_corpus(str(root), str(out), CleanConfig(**BASIC))
    assert (result.stats.records_in, result.stats.kept) == (2, 1)
    assert result.stats.quarantined == {"unsupported_file_type": 1}
    [row] = quarantine_rows(out)
    assert row["source"] == f"{root / 'notes.txt'}:0" and row["reason"] == "unsupported_file_type"
    assert row["detail"] == (
        "not a document shard (those end in .jsonl, .jsonl.gz, .json.gz, .json, .jsonl.zst, .json.zst, .parquet): "
        "convert it, or move it out of the input"
    )


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_utf16_or_utf32_with_a_bom_is_an_error_saying_to_reencode(tmp_path, encoding):
    root = tmp_path / "in"
    good_shard(root / "a.jsonl")
    (root / "b.jsonl").write_bytes((record("wide", f"{LONG} Encoded wide.").decode()).encode(encoding))
    name = encoding.upper()
    # two shards in two worker processes: the message crosses the process boundary intact
    with pytest.raises(CleanError, match=rf"^{root / 'b.jsonl'}: {name} text \(it starts with a {name} byte-order mark\), "
                                         rf"but shards must be UTF-8: re-encode it, e.g. `iconv -f {name} -t UTF-8 IN > OUT`$"):  # fmt: skip
        clean_corpus(str(root), str(tmp_path / "out"), CleanConfig(**{**BASIC, "workers": 2}))
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_a_utf8_bom_is_skipped_not_quarantined(tmp_path):
    inp = tmp_path / "bom.jsonl"
    inp.write_bytes(b"\xef\xbb\xbf" + record("first", f"{LONG} Written by a Windows tool.") + record("second", LONG))
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert kept_ids(result) == ["first", "second"] and result.stats.quarantined == {}


BOM = b"\xef\xbb\xbf"


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_a_utf8_bom_at_the_start_of_a_later_line_is_skipped(tmp_path, suffix):
    # `cat a b c > joined`, each part written by a Windows tool: the marks land at lines 1, 3 and 5;
    # compressed parts joined with cat are gzip members / zstd frames read one after another
    import zstandard

    parts = [BOM + record("a1", f"{LONG} a1").replace(b"\n", b"\r\n") + record("a2", f"{LONG} a2").replace(b"\n", b"\r\n"),
             BOM + record("b1", f"{LONG} b1") + record("b2", f"{LONG} b2"),
             BOM + record("c1", f"{LONG} c1")]  # fmt: skip
    pack = {".jsonl": bytes, ".jsonl.gz": gzip.compress, ".jsonl.zst": zstandard.ZstdCompressor().compress}[suffix]
    inp = tmp_path / f"joined{suffix}"
    inp.write_bytes(b"".join(pack(part) for part in parts))
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert (result.stats.records_in, result.stats.quarantined) == (5, {})
    assert kept_ids(result) == ["a1", "a2", "b1", "b2", "c1"]
    assert [d.text for d in shards.iter_texts(s.uri for s in result.manifest.shards)][2] == f"{LONG} b1"


def test_a_bom_inside_a_line_or_a_utf16_file_joined_on_is_quarantined_naming_it(tmp_path):
    inp = tmp_path / "joined.jsonl"
    no_final_newline = record("a", f"{LONG} a").rstrip(b"\n")
    utf16 = record("w", "wide").decode().encode("utf-16")  # starts with the UTF-16 mark FF FE
    # enough UTF-8 before the UTF-16 part that the file's first 4 KiB read as text, as in a real join
    middle = b"".join(record(f"c{i}", f"{LONG} c{i}") for i in range(60))
    assert len(no_final_newline + middle) > 4096
    inp.write_bytes(no_final_newline + BOM + record("b", f"{LONG} b") + middle + utf16)
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC))
    assert kept_ids(result) == [f"c{i}" for i in range(60)]
    assert result.stats.quarantined == {"invalid_json": 2, "not_utf8": 1}
    rows = quarantine_rows(out)
    assert [(r["source"], r["reason"]) for r in rows] == [
        (f"{inp}:1", "invalid_json"), (f"{inp}:62", "not_utf8"), (f"{inp}:63", "invalid_json")]  # fmt: skip
    at = len(no_final_newline.decode())
    assert rows[0]["detail"] == (
        f"a UTF-8 byte-order mark (U+FEFF) at character {at}, where JSON cannot have one: two files joined without a "
        "newline between them (`cat` of a file lacking its final newline)? Put the line break back before the mark"
    )
    assert rows[1]["detail"] == ("the line starts with a UTF-16 byte-order mark: a UTF-16 file joined onto this one "
                                 "(`cat`)? Re-encode that file (`iconv -f UTF-16 -t UTF-8 IN > OUT`) before joining")  # fmt: skip
    # UTF-16's newline is 0A 00: the NUL after it starts the next "line"
    assert rows[2]["raw"] == "\x00" and rows[2]["detail"].startswith("NUL bytes between the characters: UTF-16/32 text")


# ---- binary ------------------------------------------------------------------------------------


def png_bytes() -> bytes:
    """A real 1x1 PNG image."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00")) + chunk(b"IEND", b"")


def test_a_png_renamed_jsonl_is_quarantined_as_binary_file(tmp_path):
    root = tmp_path / "in"
    good_shard(root / "a.jsonl")
    (root / "b.jsonl").write_bytes(png_bytes())
    out = tmp_path / "out"
    result = clean_corpus(str(root), str(out), CleanConfig(**BASIC))
    assert (result.stats.records_in, result.stats.kept, result.stats.quarantined) == (2, 1, {"binary_file": 1})
    [row] = quarantine_rows(out)
    assert row["source"] == f"{root / 'b.jsonl'}:1" and row["raw"].startswith("\\x89PNG")
    assert row["detail"] == "a PNG image, not UTF-8 JSON lines; nothing in it was read"


def test_random_bytes_named_jsonl_are_quarantined_as_one_binary_file(tmp_path):
    root = tmp_path / "in"
    good_shard(root / "a.jsonl")
    (root / "b.jsonl").write_bytes(random.Random(0).randbytes(1 << 20))  # ~4,000 "lines" if split at \n
    out = tmp_path / "out"
    result = clean_corpus(str(root), str(out), CleanConfig(**BASIC))
    assert (result.stats.records_in, result.stats.kept, result.stats.quarantined) == (2, 1, {"binary_file": 1})
    [row] = quarantine_rows(out)
    assert row["detail"] == "NUL bytes: binary data or UTF-16/32 text, not UTF-8 JSON lines; nothing in it was read"


def test_a_stray_nul_byte_quarantines_only_its_record(tmp_path):
    inp = tmp_path / "nul.jsonl"
    inp.write_bytes(record("a", f"{LONG} one") + b'{"id": "nul", "text": "a raw \x00 byte"}\n' + record("b", f"{LONG} two"))
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert kept_ids(result) == ["a", "b"] and result.stats.quarantined == {"invalid_json": 1}


def test_gzip_data_named_jsonl_is_an_error_saying_to_rename(tmp_path):
    root = tmp_path / "in"
    good_shard(root / "a.jsonl")
    (root / "b.jsonl").write_bytes(gzip.compress(record("gz", f"{LONG} Compressed.")))
    with pytest.raises(CleanError, match=rf"^{root / 'b.jsonl'}: gzip-compressed data in a file not named .jsonl.gz: "
                                         r"rename it to end in .jsonl.gz$"):  # fmt: skip
        clean_corpus(str(root), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_plain_jsonl_named_gz_is_an_error_saying_to_rename(tmp_path):
    inp = tmp_path / "plain.jsonl.gz"
    inp.write_bytes(record("plain", LONG))
    with pytest.raises(CleanError, match=r"plain.jsonl.gz: named .gz but not gzip-compressed \(it starts with "
                                         r"b'\{\"id\": \"'\): rename it to match its content"):  # fmt: skip
        clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_a_huge_parquet_text_is_quarantined_before_processing(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    inp = tmp_path / "in"
    inp.mkdir()
    big = "word " * (3 * 2**20 // 5)  # 3 MiB of text in one cell
    texts = [f"{LONG} first row.", big, f"{LONG} third row."]
    pq.write_table(pa.table({"id": ["a", "big", "c"], "text": texts}), inp / "docs.parquet")

    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC, max_chars=1_000_000,
                                                                        max_line_bytes=2**20))  # fmt: skip
    assert result.stats.quarantined == {"line_too_long": 1} and sorted(kept_ids(result)) == ["a", "c"]
    [row] = quarantine_rows(tmp_path / "out")
    assert row["source"] == f"{inp / 'docs.parquet'}:2"
    assert row["detail"] == f"a text of {len(big):,} characters, over max_line_bytes (1,048,576)"
