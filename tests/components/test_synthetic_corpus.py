"""The scale benchmark's synthetic corpus (benchmarks/synthetic_corpus.py): its ground truth is what
the documents are, and the benchmark's cluster-level scoring (benchmarks/clean_scale.score)."""

import json
import unicodedata
from collections import Counter

import numpy as np

from benchmarks import synthetic_corpus
from benchmarks.clean_scale import score


def _records(out):
    return [json.loads(line) for path in sorted((out / "docs").glob("part-*.jsonl")) for line in path.open(encoding="utf-8")]


def _grams(text: str) -> set[str]:
    chars = "".join(c for c in text.lower() if unicodedata.category(c)[0] in "LMN")
    return {chars[i : i + 4] for i in range(max(1, len(chars) - 3))}


def test_truth_describes_the_documents(tmp_path):
    summary = synthetic_corpus.generate(tmp_path / "c", 3000, seed=7, per_file=700)
    records = _records(tmp_path / "c")
    cluster, kind = synthetic_corpus.read_truth(tmp_path / "c")

    assert summary["files"] == 5 and len(records) == 3000 == len(cluster)
    assert [r["id"] for r in records] == [f"doc-{i:09d}" for i in range(3000)]  # id = position in input order
    assert (kind == 1).sum() == 150 == summary["exact_copies"]  # 5 %
    assert (kind == 2).sum() == 300 == summary["near_copies"]  # 10 %
    assert summary["originals"] == 2550 == (kind == 0).sum() == len(np.unique(cluster))
    assert np.bincount(cluster).max() <= 20

    original = {int(c): r["text"] for r, c, k in zip(records, cluster, kind) if k == 0}
    for r, c, k in zip(records, cluster, kind):
        if k == 1:
            assert r["text"] == original[int(c)]
        elif k == 2:
            assert r["text"] != original[int(c)]
            a, b = _grams(r["text"]), _grams(original[int(c)])
            assert len(a & b) / len(a | b) >= 0.6, (r["text"], original[int(c)])
    # every text of one cluster is one cluster's: no two clusters share a text
    owners: dict[str, set[int]] = {}
    for r, c in zip(records, cluster):
        owners.setdefault(r["text"], set()).add(int(c))
    assert all(len(o) == 1 for o in owners.values())
    # unrelated originals are far apart: none of the first 300 pairs of originals shares 30 % of 4-grams
    texts = list(original.values())[:25]
    assert max(len(_grams(a) & _grams(b)) / len(_grams(a) | _grams(b)) for i, a in enumerate(texts) for b in texts[i + 1 :]) < 0.3
    assert set(Counter(r["script"] for r in records)) == set(synthetic_corpus.SCRIPT_SHARES)
    assert min(len(t) for t in texts) >= 100


def test_deterministic(tmp_path):
    synthetic_corpus.generate(tmp_path / "a", 500, seed=3, per_file=200)
    synthetic_corpus.generate(tmp_path / "b", 500, seed=3, per_file=500)
    a = "".join(p.read_text() for p in sorted((tmp_path / "a" / "docs").glob("*.jsonl")))
    b = (tmp_path / "b" / "docs" / "part-00000.jsonl").read_text()
    assert a == b
    assert (tmp_path / "a" / "truth.tsv").read_text() == (tmp_path / "b" / "truth.tsv").read_text()


def test_score_is_cluster_level():
    # clusters: 0 = {0, 1, 2} exact, 1 = {3, 4} near, 2 = {5} unique, 3 = {6, 7} near
    cluster = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    kind = np.array([0, 1, 1, 0, 2, 0, 0, 2], dtype=np.int8)
    # keeps a copy rather than the original in cluster 0 (fine), misses cluster 1's copy,
    # drops the unique document 5 and the whole of cluster 3
    kept = np.array([1, 3, 4])
    s = score(kept, cluster, kind)
    assert s["should_drop"] == 4 and s["dropped"] == 5
    assert s["recall"] == 3 / 4  # 2 of cluster 0 + 1 of cluster 3 (its second drop is one too many)
    assert s["precision"] == 3 / 5
    assert s["unique_dropped"] == 1 and s["clusters_dropped_whole"] == 1
    assert s["recall_exact"] == 1.0 and s["recall_near"] == 1 / 2
