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
