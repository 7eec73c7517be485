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
BASIC = {"langid": None, "quality": None, "pii": None, "near_dedup": None}
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

    real = clean_mod.prepare_shard
    calls: list[int] = []

    def crash_on_third(index, *args):
        calls.append(index)
        if index == 2:
            raise KeyboardInterrupt("worker killed")
        return real(index, *args)

    monkeypatch.setattr(clean_mod, "prepare_shard", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        clean_corpus(str(inp), str(tmp_path / "out"), CleanConfig(**BASIC, workers=1))
    monkeypatch.setattr(clean_mod, "prepare_shard", real)

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
