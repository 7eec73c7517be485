"""MinHash LSH near-dedup on a labelled set built from the demo corpus: recall, precision, order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from components.clean.minhash import (
    candidate_pairs,
    cluster_signatures,
    compute_signatures,
    estimated_jaccard,
    find_duplicates,
    permutations,
    write_signatures,
)
from components.clean.minhash_config import NearDedupConfig, optimal_bands
from components.clean.shingles import shingle_hashes, shingle_plan
from tests.components import neardup_set

ROOT = Path(__file__).resolve().parents[2]
CFG = NearDedupConfig()


def shingles(text: str, cfg: NearDedupConfig) -> set[int]:
    """The shingle set as Python ints, for exact comparisons."""
    return set(shingle_hashes(text, cfg).tolist())


@pytest.fixture(scope="module")
def labelled() -> list[neardup_set.Doc]:
    return neardup_set.build()


def test_bands_rows_for_default_threshold():
    assert NearDedupConfig().bands_rows() == (32, 4)  # threshold 0.5, recall-weighted: candidates are verified
    assert optimal_bands(0.8, 128) == (8, 16)  # equal weights, as datasketch weighs them
    assert NearDedupConfig(threshold=0.8).bands_rows() == (16, 8)
    assert NearDedupConfig(bands=16).bands_rows() == (16, 8)
    with pytest.raises(ValidationError, match="does not divide"):
        NearDedupConfig(bands=3)
    with pytest.raises(ValidationError):
        NearDedupConfig(thresold=0.9)


def test_shingle_settings_per_script():
    plans = {text: shingle_plan(text, CFG) for text in (
        "All human beings are born free", "人人生而自由，在尊严和权利上一律平等。", "ทุกคนมีสิทธิในการพักผ่อน",
        "सभी मनुष्यों को गौरव", "Все люди рождаются свободными", "ሁሉም ሰው", "1234 5678",
    )}
    assert [(script, spec.unit, spec.size) for script, spec in plans.values()] == [
        ("Latn", "char", 4), ("Hani", "char", 3), ("Thai", "char", 4), ("Deva", "char", 4),
        ("Cyrl", "char", 4), ("Ethi", "char", 4), ("Zyyy", "char", 4),  # Ethiopic, digits: the 'spaced' fallback
    ]
    # whitespace, punctuation and case take no part; only letters, marks and digits do
    assert shingles("Hello, World!", CFG) == shingles("hello world", CFG) == shingles("HELLO\nWORLD", CFG)
    assert shingles("服务很好，早餐也不错。", CFG) == shingles("服务很好 早餐也不错", CFG)
    assert len(shingles("abcdef", CFG)) == 3 and len(shingles("服务很好早餐", CFG)) == 4
    assert len(shingles("ab", CFG)) == 1 and shingles("", CFG) == set() and shingles("!!! ...", CFG) == set()
    words = NearDedupConfig(shingles={"Latn": {"unit": "word", "size": 2}})
    assert words.shingles["Hani"] == CFG.shingles["Hani"]  # entries given override, the rest are kept
    assert shingles("the right to life", words) == shingles("The right, to life!", words) and len(shingles("a b c d", words)) == 3
    assert shingle_plan("x" * 40 + " " + "y" * 40, words)[1] == words.shingles["unspaced"]  # 80-char "words"
    assert CFG.signature_params() != words.signature_params()
    with pytest.raises(ValidationError, match=r"unknown script key\(s\) \['Chinese'\]"):
        NearDedupConfig(shingles={"Chinese": {"unit": "char", "size": 2}})
    with pytest.raises(ValidationError):
        NearDedupConfig(shingles={"Hani": {"unit": "syllable", "size": 2}})


def test_signature_equals_reference_arithmetic():
    cfg = NearDedupConfig(num_perm=16)
    a, b = permutations(cfg)
    text = "the quick brown fox jumps over the lazy dog again and again"
    folded = [(x ^ (x >> 32)) & 0xFFFFFFFF for x in sorted(shingles(text, cfg))]
    expected = [min(((int(ai) * x + int(bi)) % 2**64) >> 32 for x in folded) for ai, bi in zip(a, b)]
    ids, sigs = compute_signatures([("d", text), ("empty", "")], cfg)
    assert sigs.dtype == np.uint32 and sigs.shape == (2, 16)
    assert sigs[0].tolist() == expected
    assert sigs[1].tolist() == [2**32 - 1] * 16  # no shingles: EMPTY, never a candidate


# per script at the defaults: (positive pairs, recalled, flagged pairs, false positives); see
# tests/components/neardup_set.py for the set; the README's near-dedup table has the sweep
EXPECTED = {
    "Hani": (200, 199, 199, 0), "Latn": (200, 198, 198, 0), "Cyrl": (200, 195, 195, 0), "Deva": (200, 197, 197, 0),
    "Arab": (200, 193, 193, 0), "Thai": (130, 129, 129, 0), "Jpan": (200, 200, 200, 0), "Hang": (200, 196, 196, 0),
}


def test_recall_and_precision_per_script_at_defaults(labelled):
    script = [d.script for d in labelled]
    group = [d.group for d in labelled]
    base_of = {d.group: i for i, d in enumerate(labelled) if d.kind == "base"}
    positives = {(base_of[d.group], i) for i, d in enumerate(labelled) if d.kind in neardup_set.KINDS}
    assert Counter(d.kind for d in labelled)["template"] == 109  # real dialogues sharing their question
    _, sigs = compute_signatures(((str(i), d.text) for i, d in enumerate(labelled)), CFG)
    pairs = candidate_pairs(sigs, CFG.bands_rows()[0])
    flagged = {tuple(p) for p in pairs[estimated_jaccard(sigs, pairs) >= CFG.threshold].tolist()}
    measured = {}
    for s in neardup_set.SCRIPTS:
        pos = [p for p in positives if script[p[0]] == s]
        mine = [p for p in flagged if s in (script[p[0]], script[p[1]])]
        false = [p for p in mine if group[p[0]] != group[p[1]]]
        found = sum(p in flagged for p in pos)
        measured[s] = (len(pos), found, found + len(false), len(false))  # variant-variant pairs are unlabelled
        assert found >= 0.95 * len(pos), (s, measured[s])  # recall
        assert len(false) <= 0.01 * (found + len(false)), (s, measured[s])  # precision
    assert measured == EXPECTED
    # issue 12: a short Chinese paragraph with three characters changed and a trailing attribution
    issue = [p for p in positives if script[p[0]] == "Hani" and labelled[p[1]].kind == "chars+attrib"]
    assert sum(p in flagged for p in issue) == 39 and len(issue) == 40
    # the previous defaults (character/word 5-grams, threshold 0.8) kept most of these pairs
    old = NearDedupConfig(threshold=0.8, shingles={k: {"unit": "char", "size": 5} for k in ("unspaced", "Hani", "Jpan", "Thai")}
                          | {k: {"unit": "word", "size": 5} for k in ("spaced", "Latn", "Cyrl", "Deva", "Arab", "Hang")})
    _, old_sigs = compute_signatures(((str(i), labelled[i].text) for p in issue for i in p), old)
    assert (estimated_jaccard(old_sigs, np.arange(len(old_sigs)).reshape(-1, 2)) >= old.threshold).sum() < 20


def write_shards(tmp_path: Path, shards: list[list[str]], cfg: NearDedupConfig = CFG) -> list[str]:
    files = []
    for s, docs in enumerate(shards):
        out = str(tmp_path / "sig" / f"part-{s:05d}.npy")
        write_signatures(f"part-{s:05d}", [(f"s{s}-{r}", t) for r, t in enumerate(docs)], out, cfg)
        files.append(out)
    return files


@pytest.mark.parametrize("count", [0, 1, 5, 12])
def test_streamed_signatures_are_the_file_np_save_writes(tmp_path, labelled, count):
    import io

    from components.clean.minhash import signature_blocks

    docs = [(f"d{i}", labelled[i].text if i % 4 else "") for i in range(count)]  # empty texts: EMPTY rows
    out = tmp_path / "part.npy"
    assert write_signatures("part-00000", docs, str(out), CFG, batch=5) == count  # batches of 5: a partial last one
    ids, sigs = compute_signatures(docs, CFG)
    expected = io.BytesIO()
    np.save(expected, sigs, allow_pickle=False)
    assert out.read_bytes() == expected.getvalue()
    blocks = list(signature_blocks(out, rows=4))
    assert [len(b) for b in blocks] == [min(4, count - s) for s in range(0, count, 4)]
    assert np.array_equal(np.concatenate(blocks) if blocks else np.zeros((0, CFG.num_perm), np.uint32), sigs)
    assert json.loads(out.with_suffix(".json").read_text())["ids"] == ids


def test_first_in_input_order_is_kept_across_shards(tmp_path, labelled):
    a, a_edit = labelled[0].text, labelled[1].text  # a base and its copy with 1-3 letters changed
    other = labelled[6].text
    files = write_shards(tmp_path, [[other, a_edit, "", ""], [a, a, other]])
    assert find_duplicates(files, CFG) == {(1, 0), (1, 1), (1, 2)}  # empty texts never dropped
    ids = [i for f in files for i in json.loads(Path(f).with_suffix(".json").read_text())["ids"]]
    keep_of = cluster_signatures(np.concatenate([np.load(f) for f in files]), CFG)
    assert {ids[g]: ids[k] for g, k in enumerate(keep_of.tolist()) if g != k} == {"s1-0": "s0-1", "s1-1": "s0-1", "s1-2": "s0-0"}
    assert sorted(set(keep_of.tolist())) == [0, 1, 2, 3]  # 2 clusters (kept: rows 0, 1) and the 2 empty texts alone
    assert find_duplicates(files[::-1], CFG) == {(0, 1), (1, 0), (1, 1)}  # input order decides which one survives


def test_mismatched_settings_fail_fast(tmp_path):
    files = write_shards(tmp_path, [["some text here"]], NearDedupConfig(seed=1))
    with pytest.raises(ValueError, match="recompute the signatures"):
        find_duplicates(files, CFG)


def test_deterministic_across_processes(tmp_path, labelled):
    texts = [d.text for d in labelled[::3]]
    files = write_shards(tmp_path, [texts[: len(texts) // 2], texts[len(texts) // 2 :]])
    here = sorted(find_duplicates(files, CFG))
    code = (
        "import json,sys;from components.clean.minhash import find_duplicates;"
        "from components.clean.minhash_config import NearDedupConfig;"
        "print(json.dumps(sorted(find_duplicates(sys.argv[1:], NearDedupConfig()))))"
    )
    for hash_seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        # recompute the signatures too: the other process must produce identical bytes
        other = write_shards(tmp_path / hash_seed, [texts[: len(texts) // 2], texts[len(texts) // 2 :]])
        out = subprocess.run([sys.executable, "-c", code, *other], env=env, cwd=ROOT, check=True, capture_output=True, text=True)
        assert [tuple(p) for p in json.loads(out.stdout)] == here
    sig_code = (
        "import sys,hashlib;from components.clean.minhash import compute_signatures;"
        "from components.clean.minhash_config import NearDedupConfig;"
        "ids,s=compute_signatures([('a',sys.argv[1])],NearDedupConfig());print(hashlib.sha256(s.tobytes()).hexdigest())"
    )
    out = subprocess.run([sys.executable, "-c", sig_code, texts[5]], env={**os.environ, "PYTHONHASHSEED": "99"},
                         cwd=ROOT, check=True, capture_output=True, text=True)
    import hashlib

    assert out.stdout.strip() == hashlib.sha256(compute_signatures([("a", texts[5])], CFG)[1].tobytes()).hexdigest()
    assert len(here) > 0
