"""The clean step's sharded engine: formats, parallel workers, resume after a crash."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from components import shards
from components.clean import clean as clean_mod
from components.clean.clean import CleanError, clean_corpus
from components.clean.config import CleanConfig

# the basic stages only (normalise, length, exact dedup): exact counts without the model-based ones
BASIC = {"langid": None, "quality": None, "pii": None, "near_dedup": None, "tasks": 3}  # one unit per file of corpus()
LONG = "The quick brown fox jumps over the lazy dog"


def corpus(tmp_path: Path, n_shards: int = 3, per_shard: int = 20) -> Path:
    root = tmp_path / "in"
    root.mkdir()
    for s in range(n_shards):
        lines = [json.dumps({"id": f"{s}-{i}", "text": f"{LONG} {i % 7} in shard {s % 2}"}) for i in range(per_shard)]
        (root / f"part-{s}.jsonl").write_text("\n".join(lines) + "\n")
    return root


def outputs(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "shards").iterdir())}


def test_parallel_workers_give_identical_output(tmp_path):
    inp = corpus(tmp_path)
    one = clean_corpus(str(inp), str(tmp_path / "one"), CleanConfig(**BASIC, workers=1))
    two = clean_corpus(str(inp), str(tmp_path / "two"), CleanConfig(**BASIC, workers=2))
    assert outputs(tmp_path / "one") == outputs(tmp_path / "two")
    assert one.manifest.digest == two.manifest.digest
    # 7 distinct texts in each of 2 shard families: the first occurrence in input order wins
    assert one.stats.kept == 14 and one.stats.dropped == {"duplicate": 46}
    first_ids = [d.id for d in shards.iter_texts(s.uri for s in one.manifest.shards)]
    assert first_ids == [f"0-{i}" for i in range(7)] + [f"1-{i}" for i in range(7)]


def test_crash_mid_run_resumes_and_matches_a_clean_run(tmp_path, monkeypatch):
    inp = corpus(tmp_path)
    reference = clean_corpus(str(inp), str(tmp_path / "ref"), CleanConfig(**BASIC, workers=1))

    real = clean_mod.filter_shard
    calls: list[int] = []

    def crash_on_third(index, *args):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt("worker killed")
        return real(index, *args)

    monkeypatch.setattr(clean_mod, "filter_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC, workers=1))
    monkeypatch.setattr(clean_mod, "filter_shard", real)

    done = sorted(p.name for p in (tmp_path / "out").rglob("*.done.json"))
    assert done == ["part-00000.done.json", "part-00001.done.json"]
    staged0 = next((tmp_path / "out").rglob("part-00000.jsonl.gz"))
    stamp = staged0.stat().st_mtime_ns
    resumed = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC, workers=1))
    assert staged0.stat().st_mtime_ns == stamp, "a finished shard is not redone"
    assert outputs(tmp_path / "out") == outputs(tmp_path / "ref")
    assert resumed.manifest.digest == reference.manifest.digest


def test_changed_input_shard_is_redone(tmp_path):
    inp = corpus(tmp_path, n_shards=2)
    clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    (inp / "part-1.jsonl").write_text(json.dumps({"id": "new", "text": LONG + " brand new text"}) + "\n")
    result = clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert result.stats.records_in == 21
    assert "new" in [d.id for d in shards.iter_texts(s.uri for s in result.manifest.shards)]


def test_zstd_and_parquet_shards(tmp_path):
    root = tmp_path / "in"
    root.mkdir()
    lines = b"".join(json.dumps({"id": f"z{i}", "text": f"{LONG} zstd {i}"}).encode() + b"\n" for i in range(3))
    (root / "a.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(lines))
    table = pa.table({"doc": ["k0", "k1", "k2"], "body": [f"{LONG} parquet {i}" if i != 1 else None for i in range(3)],
                      "lang": ["en", "en", "en"]})
    pq.write_table(table, root / "b.parquet")
    result = clean_corpus(str(root), str(tmp_path / "out"), CleanConfig(**BASIC, text_field="body", id_field="doc"))
    assert result.stats.quarantined == {"missing_body": 4}  # the 3 JSONL records lack `body`, one Parquet row is null
    cfg = CleanConfig(**BASIC)
    result = clean_corpus(str(root / "a.jsonl.zst"), str(tmp_path / "out-zst"), cfg)
    assert [d.id for d in shards.iter_texts(s.uri for s in result.manifest.shards)] == ["z0", "z1", "z2"]
    result = clean_corpus(str(root / "b.parquet"), str(tmp_path / "out-pq"), CleanConfig(**BASIC, text_field="body", id_field="doc"))
    docs = list(shards.iter_texts(s.uri for s in result.manifest.shards))
    assert [(d.id, d.meta) for d in docs] == [("k0", {"lang": "en"}), ("k2", {"lang": "en"})]
    assert result.stats.quarantined == {"missing_body": 1}


def test_parquet_with_wrong_column_type_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"text": [1, 2, 3]}), path)
    with pytest.raises(CleanError, match=r"bad.parquet: column 'text' has type int64, expected string"):
        clean_corpus(str(path), str(tmp_path / "out"), CleanConfig(**BASIC))


def test_truncated_gzip_keeps_what_was_readable_and_quarantines_the_rest(tmp_path):
    data = gzip.compress(b"".join(json.dumps({"id": str(i), "text": f"{LONG} {i}"}).encode() + b"\n" for i in range(200)))
    path = tmp_path / "cut.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    result = clean_corpus(str(path), str(tmp_path / "out"), CleanConfig(**BASIC))
    assert result.stats.quarantined == {"truncated_or_corrupt_file": 1}
    assert 0 < result.stats.kept < 200
    result.stats.check()


# ---- JSON line separators inside strings ---------------------------------------------------------

# JSON allows these unescaped inside strings; str.splitlines() splits on each of them
SEPARATORS = "one\u2028two\u2029three\u0085four"


def jsonl(*records: dict) -> bytes:
    return b"".join(json.dumps(r, ensure_ascii=False).encode() + b"\n" for r in records)


def rows(path: Path) -> list[dict]:
    """A JSONL output file's records, split on b"\\n" only (the test's own reader, not the code under test)."""
    return [json.loads(line) for line in path.read_bytes().split(b"\n") if line]


def test_issue_example_u2028_in_a_title_cleans_with_exit_0(tmp_path, capsys):
    from pipelines import cli

    inp = tmp_path / "in.jsonl"
    inp.write_bytes(jsonl(
        {"id": "a1", "text": "A long enough ordinary paragraph about rivers and mountains, written to be kept by "
                             "every filter in the cleaning step.", "title": "Rivers"},
        {"id": "a2", "text": "Too short.", "title": "Notes\u2028second line of the title"},
    ))  # fmt: skip
    assert b"\xe2\x80\xa8" in inp.read_bytes(), "the separator is raw in the input, not escaped"
    out = tmp_path / "out"
    assert cli.main(["clean", "--input", str(inp), "--output", str(out)]) == 0, capsys.readouterr().err
    assert (out / "manifest.json").is_file()
    stats = json.loads((out / "stats.json").read_text())
    assert (stats["kept"], stats["dropped"], stats["quarantined"]) == (1, {"too_short": 1}, {})
    [sample] = rows(out / "dropped" / "too_short.jsonl")
    assert sample["id"] == "a2" and sample["meta"]["title"] == "Notes\u2028second line of the title"


def test_line_separators_in_metadata_survive_in_kept_dropped_and_quarantined_records(tmp_path):
    inp = tmp_path / "in.jsonl"
    records = [
        {"id": "kept", "text": f"{LONG} kept", "title": SEPARATORS},
        {"id": "dup", "text": f"{LONG} kept", "title": SEPARATORS + " dup"},  # dropped in the dedup phase
        {"id": "short", "text": "Too short.", "title": SEPARATORS + " short"},  # dropped in the filter phase
        {"id": "q", "body": "no text field", "title": SEPARATORS + " quarantined"},
    ]
    inp.write_bytes(jsonl(*records))
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, workers=1))
    assert (result.stats.kept, result.stats.dropped, result.stats.quarantined) == (
        1, {"duplicate": 1, "too_short": 1}, {"missing_text": 1})  # fmt: skip
    [kept] = shards.iter_texts(s.uri for s in result.manifest.shards)
    assert (kept.id, kept.meta) == ("kept", {"title": SEPARATORS})
    assert [(r["id"], r["meta"]["title"]) for r in rows(out / "dropped" / "duplicate.jsonl")] == [("dup", SEPARATORS + " dup")]
    assert [(r["id"], r["meta"]["title"]) for r in rows(out / "dropped" / "too_short.jsonl")] == [("short", SEPARATORS + " short")]
    [row] = rows(out / "quarantine" / "part-00000.jsonl")
    assert row["raw"] == json.dumps(records[3], ensure_ascii=False) + "\n"
    # byte-identical: written raw (UTF-8), never escaped or turned into a line break
    for path in [*(out / "shards").iterdir(), *(out / "dropped").iterdir(), out / "quarantine" / "part-00000.jsonl"]:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
        assert SEPARATORS.encode() in data and data.count(b"\n") == 1, path.name


def test_line_separators_in_text_survive_cleaning(tmp_path):
    # needs the normaliser to keep U+2028/U+2029/U+0085 (components/clean/normalize.py)
    inp = tmp_path / "in.jsonl"
    text = f"{LONG}\u2028{LONG} again\u2029and a third part\u0085the end."
    inp.write_bytes(jsonl({"id": "kept", "text": text}, {"id": "short", "text": "Tiny\u2028text"}))
    out = tmp_path / "out"
    result = clean_corpus(str(inp), str(out), CleanConfig(**BASIC, workers=1))
    assert [(d.id, d.text) for d in shards.iter_texts(s.uri for s in result.manifest.shards)] == [("kept", text)]
    assert [(r["id"], r["text"]) for r in rows(out / "dropped" / "too_short.jsonl")] == [("short", "Tiny\u2028text")]


def test_read_json_lines_splits_on_newline_bytes_only(tmp_path):
    path = tmp_path / "rows.jsonl.gz"
    path.write_bytes(gzip.compress(jsonl({"a": SEPARATORS}, {"b": 2}) + b"\n" + b'{"c":\r3}\r\n'))
    # a bare \r is JSON whitespace, not a line end (text-mode files would split there)
    assert list(shards.read_json_lines(str(path))) == [{"a": SEPARATORS}, {"b": 2}, {"c": 3}]
    (tmp_path / "bad.jsonl").write_bytes(b'{"a": 1}\n[1]\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: a JSON list, expected an object"):
        list(shards.read_json_lines(str(tmp_path / "bad.jsonl")))


# ---- Parquet text of every Arrow string type ------------------------------------------------------

TEXTS = [f"{LONG} parquet row {i}" for i in range(5)]


@pytest.mark.parametrize("kind", ["string", "large_string", "string_view", "dictionary", "chunked_string_view"])
def test_parquet_text_id_and_metadata_of_every_arrow_string_type_are_read(tmp_path, kind):
    def column(values: list) -> pa.Array | pa.ChunkedArray:
        if kind == "dictionary":
            return pa.array(values).dictionary_encode()
        if kind == "chunked_string_view":
            return pa.chunked_array([pa.array(values[:2], pa.string_view()), pa.array(values[2:], pa.string_view())])
        return pa.array(values, getattr(pa, kind)())

    table = pa.table({"id": column([f"r{i}" for i in range(5)]), "text": column(TEXTS),
                      "lang": column(["en", "en", None, "en", "en"])})  # fmt: skip
    path = tmp_path / "in.parquet"
    pq.write_table(table, path, row_group_size=2)  # 3 row groups: batches end mid-file
    expected = {"string": pa.string(), "large_string": pa.large_string(), "string_view": pa.string_view(),
                "dictionary": pa.dictionary(pa.int32(), pa.string()), "chunked_string_view": pa.string_view()}[kind]
    assert pq.ParquetFile(path).schema_arrow.field("text").type == expected  # what the reader meets
    result = clean_corpus(str(path), str(tmp_path / "out"), CleanConfig(**BASIC))
    docs = list(shards.iter_texts(s.uri for s in result.manifest.shards))
    assert [(d.id, d.text, d.meta) for d in docs] == [
        (f"r{i}", TEXTS[i], {"lang": "en"} if i != 2 else {}) for i in range(5)
    ]


def test_is_text_type_covers_every_utf8_arrow_type_and_nothing_else():
    texts = [pa.string(), pa.large_string(), pa.string_view(), pa.dictionary(pa.int8(), pa.string()),
             pa.dictionary(pa.int32(), pa.large_string()), pa.dictionary(pa.int64(), pa.string_view())]
    others = [pa.binary(), pa.large_binary(), pa.binary_view(), pa.int64(), pa.null(), pa.list_(pa.string()),
              pa.dictionary(pa.int32(), pa.binary()), pa.struct([("s", pa.string())])]
    assert [shards.is_text_type(t) for t in texts] == [True] * len(texts)
    assert [shards.is_text_type(t) for t in others] == [False] * len(others)


def test_parquet_timestamp_decimal_and_binary_metadata_become_json(tmp_path):
    import datetime
    import decimal

    path = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "text": [TEXTS[0]], "fetched": [datetime.datetime(2024, 5, 1, 12, 30)], "day": [datetime.date(2024, 5, 1)],
        "price": pa.array([decimal.Decimal("12.50")], pa.decimal128(6, 2)), "raw": [b"\x00\xff"],
    }), path)  # fmt: skip
    result = clean_corpus(str(path), str(tmp_path / "out"), CleanConfig(**BASIC))
    [doc] = shards.iter_texts(s.uri for s in result.manifest.shards)
    assert doc.meta == {"fetched": "2024-05-01T12:30:00", "day": "2024-05-01", "price": "12.50", "raw": "b'\\x00\\xff'"}


def test_work_is_resumed_whatever_the_worker_count_and_redone_when_an_output_setting_changes():
    from components.clean.config import CleanConfig
    from components.clean.paths import CleanPaths

    base = CleanPaths.of("out", CleanConfig()).work
    assert CleanPaths.of("out", CleanConfig(workers=1, parallel_shards=8)).work == base
    assert CleanPaths.of("out", CleanConfig(min_chars=21)).work != base
