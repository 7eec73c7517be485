"""Near-duplicate detection with MinHash LSH, as three stages that fan out over shards.

    write_signatures("part-00000", docs, "sig/part-00000.npy", cfg)   # stage 1, one task per shard
    write_drop_lists(["sig/part-00000.npy", ...], "drop", cfg)        # stage 2, one task
    rows = load_drop_list("drop/part-00000.json")                     # stage 3, per shard: skip rows

Stage 1 turns each document into a set of 64-bit shingle hashes and then into a MinHash
signature. Shingles are chosen per script (`NearDedupConfig.shingles`, keyed by the dominant
ISO 15924 script from langid.detect_script): by default character k-grams of the lowercased
letters, marks and digits (whitespace and punctuation removed), k = 3 for Han and Japanese,
4 for every other script; word k-grams are available per script. These defaults and the
threshold 0.5 were measured on a labelled set of 50-600 character documents in eight scripts
(tests/components/neardup_set.py): recall >= 0.95 at precision >= 0.99 in each. Then a MinHash
signature: for each of `num_perm` hash functions h(x) = (a·x + b) mod (2^61 − 1), the minimum
over the shingles. Stage 2 cuts every signature into `bands` bands of `rows` values; documents
that agree on a whole band share a bucket and become candidate pairs, each verified by the
Jaccard estimate of the full signatures (share of equal values ≥ `threshold`); verified pairs
are joined into clusters and each cluster keeps its first document in input order (smallest
(shard_index, row)), the rest are dropped as `near_duplicate`.

Files (`allow_pickle=False` everywhere; any storage URI, written atomically):
  <sig>.npy    uint32 array (documents, num_perm), row i = document i of the shard
  <sig>.json   {"shard_key", "count", "params": {...shingling/hashing...}, "ids": [...]}
  <drop>/part-NNNNN.json   {"shard_key", "signatures", "rows": [...], "duplicate_of": [...]}
  <drop>/summary.json      documents, candidate and verified pairs, clusters, dropped
Documents with no shingles (empty text) get a signature of all 2^64 − 1 and are never dropped.

Memory: a signature is num_perm × 4 bytes (512 B at 128), so stage 2 holds 0.5 GiB per million
documents plus ~40 bytes per candidate pair; stage 1 holds one shard's signatures and a
bounded block of num_perm × 16384 hashes. Beyond a few million documents, split stage 2 by
band (bands are independent; only the verified pairs need joining).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import tempfile
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from components import storage
from components.clean.langid import SCRIPTS, detect_script, is_space_delimited
from components.config import Section

EMPTY = np.uint32(np.iinfo(np.uint32).max)  # signature value of a document without shingles
_MASK32 = np.uint64((1 << 32) - 1)
_HASH_BLOCK = 16384  # shingles hashed at once: num_perm × 16384 × 8 bytes per temporary
_BUCKET_WINDOW = 64  # within a bucket, each document is paired with the next 63 only
SHINGLER_VERSION = 2  # bump when shingle_hashes changes: old signature files must not be mixed in


class ShingleSpec(Section):
    """How the documents of one script are cut into shingles."""

    unit: Literal["word", "char"] = Field(
        description="word: k-grams of words (maximal runs of letters, marks and digits); "
        "char: k-grams of those characters with whitespace, punctuation and symbols removed"
    )
    size: int = Field(ge=1, le=32, description="k, units per shingle; a document shorter than k is one shingle")


# Measured on the labelled near-duplicate set (tests/components/neardup_set.py, table in the
# test module): the sizes that keep recall >= 0.95 at precision >= 0.99 per script at `threshold`.
DEFAULT_SHINGLES: dict[str, dict] = {
    "spaced": {"unit": "char", "size": 4},  # any space-delimited script not listed
    "unspaced": {"unit": "char", "size": 3},  # any script written without spaces, not listed
    "Latn": {"unit": "char", "size": 4},
    "Cyrl": {"unit": "char", "size": 4},
    "Deva": {"unit": "char", "size": 4},
    "Arab": {"unit": "char", "size": 4},
    "Hang": {"unit": "char", "size": 4},
    "Hani": {"unit": "char", "size": 3},
    "Jpan": {"unit": "char", "size": 3},
    "Thai": {"unit": "char", "size": 4},
}
FALLBACK_KEYS = ("spaced", "unspaced")


class NearDedupConfig(Section):
    """MinHash LSH near-duplicate removal, calibrated on short and medium documents (50-600 characters)."""

    threshold: float = Field(
        0.5, gt=0.0, lt=1.0,
        description="estimated Jaccard similarity of shingle sets at or above which two documents are near-duplicates; "
        "0.5 (was 0.8 with 5-gram shingles, which kept short paragraphs differing by a few characters and a signature)",
    )
    num_perm: int = Field(128, ge=2, le=1024, description="signature length; memory is num_perm x 4 bytes per document")
    bands: int | None = Field(None, ge=1, description="LSH bands; None chooses them from threshold with optimal_bands")
    false_positive_weight: float = Field(0.2, ge=0.0, description="weight of the false-positive area in optimal_bands; low because candidates are verified")
    false_negative_weight: float = Field(0.8, ge=0.0, description="weight of the false-negative area in optimal_bands; a missed pair is a kept duplicate")
    shingles: dict[str, ShingleSpec] = Field(
        default_factory=lambda: {k: ShingleSpec(**v) for k, v in DEFAULT_SHINGLES.items()},
        description="shingling per script, keyed by ISO 15924 code as langid.detect_script names it (Latn, Hani, Jpan, ...) "
        "or 'spaced'/'unspaced' for scripts not listed; entries given override the defaults (DEFAULT_SHINGLES: word "
        "3-grams for spaced scripts, character 3-grams for Han/Japanese, character 4-grams for Thai), the rest are kept",
    )
    max_mean_word_chars: float = Field(
        16.0, gt=0.0, description="a document of a spaced script whose words average more characters than this gets its script's 'unspaced' shingles"
    )
    seed: int = Field(42, description="seed of the MinHash permutations; signatures are comparable only under one seed")

    @field_validator("shingles", mode="before")
    @classmethod
    def _merge_shingles(cls, value: object) -> object:
        if not isinstance(value, dict):
            return value
        unknown = sorted(set(value) - set(SCRIPTS) - set(FALLBACK_KEYS))
        if unknown:
            raise ValueError(
                f"unknown script key(s) {unknown} in near_dedup.shingles: use ISO 15924 codes "
                f"{sorted(set(SCRIPTS) - {'Hira', 'Kana'})} or {list(FALLBACK_KEYS)}"
            )
        return {**DEFAULT_SHINGLES, **value}

    @model_validator(mode="after")
    def _bands_divide(self) -> "NearDedupConfig":
        if self.bands is not None and self.num_perm % self.bands:
            raise ValueError(f"bands={self.bands} does not divide num_perm={self.num_perm}; pick a divisor or leave bands unset")
        return self

    def bands_rows(self) -> tuple[int, int]:
        """(bands, rows per band); bands × rows == num_perm."""
        if self.bands is not None:
            return self.bands, self.num_perm // self.bands
        return optimal_bands(self.threshold, self.num_perm, self.false_positive_weight, self.false_negative_weight)

    def shingle_spec(self, script: str) -> ShingleSpec:
        """The shingling for documents whose dominant script is `script` (ISO 15924)."""
        spec = self.shingles.get(script)
        if spec is None:
            spec = self.shingles["spaced" if is_space_delimited(script) else "unspaced"]
        return spec

    def signature_params(self) -> dict:
        """What makes two signature files comparable; stored beside each one."""
        params = self.model_dump(include={"num_perm", "seed", "shingles", "max_mean_word_chars"})
        return {**params, "shingler": SHINGLER_VERSION}


# ---- LSH parameters -----------------------------------------------------------------------

def _integrate(f, lo: float, hi: float, steps: int = 2001) -> float:
    x = np.linspace(lo, hi, steps)
    y = f(x)
    return float(np.sum((y[1:] + y[:-1]) * np.diff(x)) / 2)


def optimal_bands(threshold: float, num_perm: int, fp_weight: float = 0.5, fn_weight: float = 0.5) -> tuple[int, int]:
    """(bands, rows) with bands × rows == num_perm minimising the weighted error areas.

    P(candidate | Jaccard s) = 1 − (1 − s^r)^b. The false-positive area integrates it over
    [0, threshold], the false-negative area its complement over [threshold, 1] (as datasketch's
    `_optimal_param`, restricted to exact divisors so no signature value is wasted).
    """
    best: tuple[float, int, int] | None = None
    for b in range(1, num_perm + 1):
        if num_perm % b:
            continue
        r = num_perm // b
        fp = _integrate(lambda s: 1 - (1 - s**r) ** b, 0.0, threshold)
        fn = _integrate(lambda s: (1 - s**r) ** b, threshold, 1.0)
        error = fp_weight * fp + fn_weight * fn
        if best is None or error < best[0] - 1e-12:
            best = (error, b, r)
    assert best is not None
    return best[1], best[2]


# ---- stage 1: shingles and signatures -----------------------------------------------------

def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, wrapping uint64 arithmetic."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.cache
def _window_weights(k: int) -> np.ndarray:
    return _mix(np.arange(1, k + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)


def _window_hash(units: np.ndarray, k: int) -> np.ndarray:
    """One 64-bit hash per window of k consecutive unit hashes (the whole sequence if shorter)."""
    if len(units) == 0:
        return units
    k = min(k, len(units))
    mixed = _mix(units)
    weights = _window_weights(k)
    n = len(units) - k + 1
    acc = mixed[:n] * weights[0]
    for j in range(1, k):
        acc += mixed[j : j + n] * weights[j]
    return _mix(acc)


@functools.cache
def _word_char_table() -> np.ndarray:
    """bool (0x110000,): True for letters, marks and digits (Unicode categories L*, M*, N*).

    Marks count so that Indic vowel signs and viramas stay inside their words; built once per
    process (~0.15 s, 1.1 MB).
    """
    cats = (unicodedata.category(chr(cp))[0] in "LMN" for cp in range(0x110000))
    return np.fromiter(cats, dtype=bool, count=0x110000)


def _word_units(cps: np.ndarray, keep: np.ndarray) -> np.ndarray:
    """One uint64 hash per word (maximal run of kept code points), in order.

    Each character is mixed with its position inside its word, the word hash is the mixed
    sum: order-sensitive, vectorised, and the same in every process (no Python hash()).
    """
    idx = np.flatnonzero(keep)
    if len(idx) == 0:
        return np.zeros(0, dtype=np.uint64)
    first = np.empty(len(idx), dtype=bool)  # first character of a word
    first[0] = True
    np.not_equal(idx[1:], idx[:-1] + 1, out=first[1:])
    order = np.arange(len(idx), dtype=np.uint64)
    pos = order - np.maximum.accumulate(order * first)  # position inside the word
    mixed = _mix(cps[idx] | (pos << np.uint64(32)))
    return _mix(np.add.reduceat(mixed, np.flatnonzero(first)))


def document_script(text: str) -> str:
    """Dominant script of `text` (langid.detect_script: ISO 15924, "Zyyy" without letters)."""
    return detect_script(text)


def shingle_plan(text: str, cfg: NearDedupConfig) -> tuple[str, ShingleSpec]:
    """(script, shingling) of one document: its dominant script's spec, except that a
    space-delimited text whose words average more than `max_mean_word_chars` characters
    (a URL list, base64, a language written without spaces but misdetected) gets the
    'unspaced' spec."""
    script = document_script(text)
    spec = cfg.shingle_spec(script)
    if spec.unit == "word":
        tokens = text.split()
        if tokens and sum(map(len, tokens)) / len(tokens) > cfg.max_mean_word_chars:
            spec = cfg.shingles["unspaced"]
    return script, spec


def uses_words(text: str, cfg: NearDedupConfig) -> bool:
    """True if `text` is shingled by words under `cfg` (see shingle_plan)."""
    return shingle_plan(text, cfg)[1].unit == "word"


def shingle_hashes(text: str, cfg: NearDedupConfig) -> np.ndarray:
    """Sorted unique 64-bit shingle hashes, uint64 (shingles,), of the lowercased text.

    Only letters, marks and digits take part: whitespace, punctuation and symbols are
    removed (char unit) or separate words (word unit), so re-punctuated or re-spaced copies
    keep their shingles. Empty array when the text has none of those characters.
    """
    _, spec = shingle_plan(text, cfg)
    cps = np.frombuffer(text.lower().encode("utf-32-le"), dtype=np.uint32)
    keep = _word_char_table()[cps]
    units = _word_units(cps.astype(np.uint64), keep) if spec.unit == "word" else cps[keep].astype(np.uint64)
    return np.unique(_window_hash(units, spec.size))


def shingles(text: str, cfg: NearDedupConfig) -> set[int]:
    """The shingle set as Python ints (for inspection and exact Jaccard; stages use arrays)."""
    return set(shingle_hashes(text, cfg).tolist())


def permutations(cfg: NearDedupConfig) -> tuple[np.ndarray, np.ndarray]:
    """(a, b), each uint64 (num_perm,), uniform 64-bit, derived from the seed with blake2b so
    they never depend on numpy's generator or the process."""

    def draw(name: str, i: int) -> int:
        digest = hashlib.blake2b(f"{cfg.seed}:{name}:{i}".encode(), digest_size=8).digest()
        return int.from_bytes(digest, "little")

    a = np.array([draw("a", i) for i in range(cfg.num_perm)], dtype=np.uint64)
    b = np.array([draw("b", i) for i in range(cfg.num_perm)], dtype=np.uint64)
    return a, b


def _universal_hash(x: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """((a·x + b) mod 2^64) >> 32 for 32-bit keys x: shape (num_perm, len(x)), values < 2^32.

    Multiply-add-shift (Dietzfelbinger): with a, b uniform 64-bit this family is strongly
    universal from 32-bit keys to 32-bit values, and costs one multiply-add per element in
    wrapping uint64 arithmetic — several times cheaper than arithmetic modulo a prime.
    """
    return (a[:, None] * x[None, :] + b[:, None]) >> np.uint64(32)


def signature(shingle_set: Iterable[int] | np.ndarray, perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """MinHash signature, uint32 (num_perm,); all EMPTY if there are no shingles."""
    x = np.asarray(shingle_set if isinstance(shingle_set, np.ndarray) else sorted(shingle_set), dtype=np.uint64)
    return _signatures([x], perms)[0]


def _signatures(shingle_arrays: list[np.ndarray], perms: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Signatures of many documents at once: all shingles hashed in blocks, min per document."""
    a, b = perms
    out = np.full((len(shingle_arrays), len(a)), EMPTY, dtype=np.uint32)
    lengths = np.array([len(s) for s in shingle_arrays], dtype=np.int64)
    if lengths.sum() == 0:
        return out
    flat = np.concatenate(shingle_arrays).astype(np.uint64)
    flat = (flat ^ (flat >> np.uint64(32))) & _MASK32  # the hash family takes 32-bit keys
    owner = np.repeat(np.arange(len(shingle_arrays)), lengths)
    for start in range(0, len(flat), _HASH_BLOCK):
        stop = min(start + _HASH_BLOCK, len(flat))
        hashed = _universal_hash(flat[start:stop], a, b)
        docs = owner[start:stop]
        firsts = np.flatnonzero(np.r_[True, docs[1:] != docs[:-1]])
        mins = np.minimum.reduceat(hashed, firsts, axis=1).T
        rows = docs[firsts]
        out[rows] = np.minimum(out[rows], mins).astype(np.uint32)  # hash values are < 2^32
    return out


def compute_signatures(docs: Iterable[tuple[str, str]], cfg: NearDedupConfig, batch: int = 256) -> tuple[list[str], np.ndarray]:
    """(ids, uint32 signatures (documents, num_perm)) for (id, text) pairs, in input order."""
    perms = permutations(cfg)
    ids: list[str] = []
    blocks: list[np.ndarray] = []
    pending: list[np.ndarray] = []
    for doc_id, text in docs:
        ids.append(doc_id)
        pending.append(shingle_hashes(text, cfg))
        if len(pending) == batch:
            blocks.append(_signatures(pending, perms))
            pending = []
    if pending or not blocks:
        blocks.append(_signatures(pending, perms))
    return ids, np.concatenate(blocks).reshape(len(ids), cfg.num_perm)


def sidecar_uri(signature_uri: str) -> str:
    return (signature_uri[:-4] if signature_uri.endswith(".npy") else signature_uri) + ".json"


def write_signatures(shard_key: str, docs: Iterable[tuple[str, str]], out_uri: str, cfg: NearDedupConfig) -> int:
    """Stage 1 for one shard: <out_uri> (.npy signatures) and its .json sidecar; returns the count."""
    ids, sigs = compute_signatures(docs, cfg)
    buffer = io.BytesIO()
    np.save(buffer, sigs, allow_pickle=False)
    storage.write_bytes(out_uri, buffer.getvalue())
    meta = {"shard_key": shard_key, "count": len(ids), "params": cfg.signature_params(), "ids": ids}
    storage.write_text(sidecar_uri(out_uri), json.dumps(meta, ensure_ascii=False) + "\n")
    return len(ids)


def read_signatures(uri: str) -> tuple[dict, np.ndarray]:
    """(sidecar metadata, signatures) of one stage-1 output."""
    sigs = np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)
    meta = json.loads(storage.read_text(sidecar_uri(uri)))
    if sigs.dtype != np.uint32 or sigs.ndim != 2 or len(sigs) != meta["count"]:
        raise ValueError(f"{uri}: expected uint32 signatures of shape ({meta['count']}, num_perm), got {sigs.dtype} {sigs.shape}")
    return meta, sigs


# ---- stage 2: buckets, verification, clusters ---------------------------------------------

def _band_keys(band: np.ndarray) -> np.ndarray:
    key = np.zeros(len(band), dtype=np.uint64)
    for j in range(band.shape[1]):
        key = _mix(key ^ band[:, j])
    return key


class ShardedSignatures:
    """Stage-1 signature files seen as one (documents, num_perm) matrix, memory-mapped.

    Stage 2 reads one band's columns at a time and the rows of candidate pairs, so its memory
    is tens of bytes per document rather than the whole matrix.
    """

    def __init__(self, paths: list[str], num_perm: int):
        self.maps = [np.load(path, mmap_mode="r", allow_pickle=False) for path in paths]
        self.offsets = np.cumsum([0] + [len(m) for m in self.maps])
        self.shape = (int(self.offsets[-1]), num_perm)

    def columns(self, start: int, stop: int) -> np.ndarray:
        if not self.maps:
            return np.zeros((0, stop - start), dtype=np.uint32)
        return np.concatenate([np.asarray(m[:, start:stop]) for m in self.maps])

    def rows(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), self.shape[1]), dtype=np.uint32)
        shard = np.searchsorted(self.offsets, index, side="right") - 1
        for s in np.unique(shard):
            mask = shard == s
            out[mask] = self.maps[s][index[mask] - self.offsets[s]]
        return out


def _columns(sigs: np.ndarray | ShardedSignatures, start: int, stop: int) -> np.ndarray:
    return sigs.columns(start, stop) if isinstance(sigs, ShardedSignatures) else sigs[:, start:stop]


def _rows(sigs: np.ndarray | ShardedSignatures, index: np.ndarray) -> np.ndarray:
    return sigs.rows(index) if isinstance(sigs, ShardedSignatures) else sigs[index]


def candidate_pairs(
    sigs: np.ndarray | ShardedSignatures, bands: int, excluded: np.ndarray | None = None
) -> np.ndarray:
    """Unique (i, j), i < j, int64 (pairs, 2): documents sharing a bucket in some band."""
    n, num_perm = sigs.shape
    rows = num_perm // bands
    usable = _columns(sigs, 0, 1)[:, 0] != EMPTY
    if excluded is not None:
        usable &= ~excluded
    live = np.flatnonzero(usable) if n else np.zeros(0, dtype=np.int64)
    found = []
    for band in range(bands):
        keys = _band_keys(_columns(sigs, band * rows, (band + 1) * rows)[live])
        order = np.lexsort((live, keys))
        sorted_keys, sorted_idx = keys[order], live[order]
        for d in range(1, _BUCKET_WINDOW):
            same = sorted_keys[:-d] == sorted_keys[d:]
            if not same.any():
                break
            found.append(np.stack([sorted_idx[:-d][same], sorted_idx[d:][same]], axis=1))
    if not found:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack([codes // n, codes % n], axis=1)


def estimated_jaccard(sigs: np.ndarray | ShardedSignatures, pairs: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Share of equal signature values per pair: an unbiased Jaccard estimate."""
    out = np.empty(len(pairs), dtype=np.float64)
    for start in range(0, len(pairs), chunk):
        p = pairs[start : start + chunk]
        out[start : start + chunk] = (_rows(sigs, p[:, 0]) == _rows(sigs, p[:, 1])).mean(axis=1)
    return out


def components_min_label(n: int, pairs: np.ndarray) -> np.ndarray:
    """For each node, the smallest node of its connected component (vectorised union-find)."""
    labels = np.arange(n, dtype=np.int64)
    if len(pairs) == 0:
        return labels
    i, j = pairs[:, 0], pairs[:, 1]
    while True:
        low = np.minimum(labels[i], labels[j])
        new = labels.copy()
        np.minimum.at(new, i, low)
        np.minimum.at(new, j, low)
        new = new[new]  # pointer jumping: follow labels to their own labels
        if np.array_equal(new, labels):
            return labels
        labels = new


@dataclass
class NearDuplicates:
    """Stage 2's result over the concatenation of all shards in the order given."""

    offsets: np.ndarray  # shard s holds global rows offsets[s] .. offsets[s+1]-1
    keep_of: np.ndarray  # per global row, the global row kept for its cluster (itself if kept)
    candidate_pairs: int
    verified_pairs: int

    def locate(self, global_row: int) -> tuple[int, int]:
        shard = int(np.searchsorted(self.offsets, global_row, side="right") - 1)
        return shard, int(global_row - self.offsets[shard])

    def dropped(self) -> np.ndarray:
        return np.flatnonzero(self.keep_of != np.arange(len(self.keep_of)))

    @property
    def clusters(self) -> int:
        """Clusters of two or more documents."""
        return len(np.unique(self.keep_of[self.dropped()]))


def cluster_signatures(
    sigs: np.ndarray | ShardedSignatures, cfg: NearDedupConfig, excluded: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """(keep_of per row, candidate pairs, verified pairs) for one signature matrix."""
    bands, _ = cfg.bands_rows()
    pairs = candidate_pairs(sigs, bands, excluded)
    verified = pairs[estimated_jaccard(sigs, pairs) >= cfg.threshold]
    return components_min_label(sigs.shape[0], verified), len(pairs), len(verified)


def _load_all(signature_files: list[str], cfg: NearDedupConfig) -> tuple[list[dict], np.ndarray, np.ndarray]:
    metas, blocks = [], []
    expected = cfg.signature_params()
    for uri in signature_files:
        meta, sigs = read_signatures(uri)
        if meta["params"] != expected:
            raise ValueError(
                f"{uri} was computed with {meta['params']}, this run uses {expected}: "
                f"recompute stage 1 with the same near-dedup settings"
            )
        metas.append(meta)
        blocks.append(sigs)
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    sigs = np.concatenate(blocks) if blocks else np.zeros((0, cfg.num_perm), dtype=np.uint32)
    return metas, offsets, sigs


def near_duplicates(signature_files: list[str], cfg: NearDedupConfig) -> NearDuplicates:
    """Stage 2 over stage-1 files in input order; shard index = position in the list."""
    _, offsets, sigs = _load_all(signature_files, cfg)
    keep_of, candidates, verified = cluster_signatures(sigs, cfg)
    return NearDuplicates(offsets, keep_of, candidates, verified)


def find_duplicates(
    signature_files: list[str], cfg: NearDedupConfig, exclude: list[Iterable[int]] | None = None
) -> set[tuple[int, int]]:
    """(shard_index, row) of every document to drop; each cluster keeps its first document.

    `exclude` lists rows per shard already dropped (exact duplicates): they take no part in
    clustering, which keeps candidate pairs (time and memory) from growing with exact copies.
    """
    expected = cfg.signature_params()
    with tempfile.TemporaryDirectory(prefix="homegrown-minhash-") as tmp:
        paths = []
        for shard, uri in enumerate(signature_files):
            params = json.loads(storage.read_text(sidecar_uri(uri)))["params"]
            if params != expected:
                raise ValueError(
                    f"{uri} was computed with {params}, this run uses {expected}: "
                    f"recompute stage 1 with the same near-dedup settings"
                )
            if storage.is_s3(uri):  # memory-mapping needs a local file
                paths.append(os.path.join(tmp, f"{shard}.npy"))
                with open(paths[-1], "wb") as handle:
                    handle.write(storage.read_bytes(uri))
            else:
                paths.append(str(storage.local_path(uri)))
        sigs = ShardedSignatures(paths, cfg.num_perm)
        excluded = np.zeros(sigs.shape[0], dtype=bool)
        for shard, rows in enumerate(exclude or []):
            excluded[np.fromiter(rows, dtype=np.int64) + sigs.offsets[shard]] = True
        keep_of, candidates, verified = cluster_signatures(sigs, cfg, excluded)
        result = NearDuplicates(sigs.offsets, keep_of, candidates, verified)
        del sigs  # close the memory maps before the temporary files go
    return {result.locate(int(g)) for g in result.dropped()}


def drop_list_uri(out_uri: str, shard_index: int) -> str:
    return storage.join(out_uri, f"part-{shard_index:05d}.json")


def write_drop_lists(signature_files: list[str], out_uri: str, cfg: NearDedupConfig) -> list[str]:
    """Stage 2 with its outputs: one drop list per shard (even if empty) and summary.json."""
    metas, offsets, sigs = _load_all(signature_files, cfg)
    keep_of, candidates, verified = cluster_signatures(sigs, cfg)
    result = NearDuplicates(offsets, keep_of, candidates, verified)
    dropped = result.dropped()
    per_shard: dict[int, list[int]] = {i: [] for i in range(len(signature_files))}
    for g in dropped.tolist():
        per_shard[result.locate(g)[0]].append(g)
    uris = []
    for shard, rows in per_shard.items():
        kept = [result.locate(int(keep_of[g])) for g in rows]
        record = {
            "shard_key": metas[shard]["shard_key"],
            "signatures": signature_files[shard],
            "rows": [g - int(offsets[shard]) for g in rows],
            "duplicate_of": [metas[s]["ids"][r] for s, r in kept],
        }
        uris.append(drop_list_uri(out_uri, shard))
        storage.write_text(uris[-1], json.dumps(record, ensure_ascii=False) + "\n")
    bands, rows_per_band = cfg.bands_rows()
    summary = {
        "documents": int(offsets[-1]),
        "bands": bands,
        "rows": rows_per_band,
        "candidate_pairs": candidates,
        "verified_pairs": verified,
        "clusters": result.clusters,
        "dropped": int(len(dropped)),
    }
    storage.write_text(storage.join(out_uri, "summary.json"), json.dumps(summary, indent=2) + "\n")
    return uris


# ---- stage 3 ------------------------------------------------------------------------------

def load_drop_list(uri: str) -> set[int]:
    """Rows of one shard to drop as `near_duplicate` (positions in the shard, from 0)."""
    return set(json.loads(storage.read_text(uri))["rows"])


def expected_candidate_probability(similarity: float, bands: int, rows: int) -> float:
    """P(a pair of this Jaccard similarity shares at least one bucket)."""
    return 1.0 - (1.0 - similarity**rows) ** bands


def signature_bytes(documents: int, cfg: NearDedupConfig) -> int:
    """Stage-2 signature memory for this many documents."""
    return documents * cfg.num_perm * 8


__all__ = [
    "NearDedupConfig", "ShingleSpec", "DEFAULT_SHINGLES", "NearDuplicates", "optimal_bands", "shingles",
    "shingle_hashes", "shingle_plan", "document_script", "uses_words",
    "permutations", "signature", "compute_signatures", "write_signatures", "read_signatures",
    "candidate_pairs", "estimated_jaccard", "cluster_signatures", "near_duplicates",
    "find_duplicates", "write_drop_lists", "load_drop_list", "drop_list_uri", "sidecar_uri",
    "expected_candidate_probability", "signature_bytes",
]
