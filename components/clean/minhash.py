"""Near-duplicate detection with MinHash LSH, in three phases that fan out over shards.

    write_signatures("part-00000", docs, "sig/part-00000.npy", cfg)   # signatures: one task per shard
    rows = find_duplicates(["sig/part-00000.npy", ...], cfg)          # buckets + clusters: one task
    # -> {(shard_index, row)} to drop as near_duplicate

Signatures: each document becomes a set of 64-bit shingle hashes (components/clean/shingles.py:
per script, by default character k-grams of the lowercased letters, marks and digits, k = 3 for
Han and Japanese, 4 for every other script; settings in minhash_config.NearDedupConfig). These
defaults and the threshold 0.5 were measured on a labelled set of 50-600 character documents in
eight scripts (tests/components/neardup_set.py): recall >= 0.95 at precision >= 0.99 in each.
Each shingle hash is folded to a 32-bit key x = (h xor (h >> 32)) mod 2^32; the signature is,
for each of `num_perm` hash functions h_i(x) = ((a_i·x + b_i) mod 2^64) >> 32 (multiply-add-shift,
a_i and b_i uniform 64-bit from the seed), the minimum over the document's shingles: a uint32.
Buckets: every signature is cut into `bands` bands of `rows` values; documents that agree on a
whole band share a bucket and become candidate pairs. Clusters: each candidate pair is verified
by the Jaccard estimate of the full signatures (share of equal values ≥ `threshold`); verified
pairs are joined into clusters and each cluster keeps its first document in input order
(smallest (shard_index, row)), the rest are dropped as `near_duplicate`.

Files (`allow_pickle=False`; any storage URI, written atomically):
  <sig>.npy    uint32 array (documents, num_perm), row i = document i of the shard
  <sig>.json   {"shard_key", "count", "params": {...shingling/hashing...}, "ids": [...]}
Documents with no shingles (empty text) get a signature of all 2^32 − 1 (EMPTY) and are never dropped.

Memory: a signature is num_perm × 4 bytes (512 B at 128), so the buckets and clusters phases
hold at most 0.5 GiB per million documents (the files are memory-mapped and read one band at a
time) plus ~40 bytes per candidate pair; the signatures phase holds one shard's signatures and
a bounded block of num_perm × 16384 uint64 hashes (16 MiB at 128). Beyond a few million
documents, split the buckets phase by band (bands are independent; only the verified pairs
need joining).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from typing import BinaryIO, Iterable, Iterator

import numpy as np

from components import storage
from components.clean.minhash_config import NearDedupConfig
from components.clean.shingles import mix64, shingle_hashes

EMPTY = np.uint32(np.iinfo(np.uint32).max)  # signature value of a document without shingles
_MASK32 = np.uint64((1 << 32) - 1)
_HASH_BLOCK = 16384  # shingles hashed at once: num_perm × 16384 × 8 bytes per temporary
SIGNATURE_BLOCK_BYTES = 8 << 20  # signature_blocks' default block
_BUCKET_WINDOW = 64  # within a bucket, each document is paired with the next 63 only


# ---- signatures ---------------------------------------------------------------------------

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


def _signature_batches(docs: Iterable[tuple[str, str]], cfg: NearDedupConfig, batch: int) -> Iterator[tuple[list[str], np.ndarray]]:
    """(ids, uint32 signatures (len(ids), num_perm)) for `batch` (id, text) pairs at a time, in input order."""
    perms = permutations(cfg)
    ids: list[str] = []
    pending: list[np.ndarray] = []
    for doc_id, text in docs:
        ids.append(doc_id)
        pending.append(shingle_hashes(text, cfg))
        if len(pending) == batch:
            yield ids, _signatures(pending, perms)
            ids, pending = [], []
    if pending:
        yield ids, _signatures(pending, perms)


def compute_signatures(docs: Iterable[tuple[str, str]], cfg: NearDedupConfig, batch: int = 256) -> tuple[list[str], np.ndarray]:
    """(ids, uint32 signatures (documents, num_perm)) for (id, text) pairs, in input order."""
    ids: list[str] = []
    blocks = [np.zeros((0, cfg.num_perm), dtype=np.uint32)]
    for batch_ids, sigs in _signature_batches(docs, cfg, batch):
        ids += batch_ids
        blocks.append(sigs)
    return ids, np.concatenate(blocks)


def sidecar_uri(uri: str) -> str:
    """The JSON beside a file of the clean step's work (same name, .json for its extension)."""
    return os.path.splitext(uri)[0] + ".json"


def write_signatures(shard_key: str, docs: Iterable[tuple[str, str]], out_uri: str, cfg: NearDedupConfig,
                     batch: int = 256, keep: str | os.PathLike | None = None) -> int:
    """The signatures phase for one shard: <out_uri> (uint32 (documents, num_perm) .npy, as np.save
    writes it) and its .json sidecar; returns the count. Streamed through a local file (left at
    `keep` for a reader that follows, else removed): memory is a batch of documents and the ids,
    not the shard's signatures (512 bytes per document)."""
    ids: list[str] = []
    with tempfile.TemporaryDirectory(prefix="homegrown-signatures-") as tmp:
        local = keep or os.path.join(tmp, "signatures.npy")
        with tempfile.TemporaryFile(dir=tmp) as rows:
            for batch_ids, sigs in _signature_batches(docs, cfg, batch):
                ids += batch_ids
                rows.write(sigs.astype("<u4").tobytes())
            rows.seek(0)
            with open(local, "wb") as npy:
                np.lib.format.write_array_header_1_0(npy, {"descr": "<u4", "fortran_order": False, "shape": (len(ids), cfg.num_perm)})
                shutil.copyfileobj(rows, npy, 1 << 20)
        with open(local, "rb") as npy, storage.open_write(out_uri) as out:
            shutil.copyfileobj(npy, out, 1 << 20)
    meta = {"shard_key": shard_key, "count": len(ids), "params": cfg.signature_params(), "ids": ids}
    storage.write_text(sidecar_uri(out_uri), json.dumps(meta, ensure_ascii=False) + "\n")
    return len(ids)


def npy_header(handle: BinaryIO) -> tuple[tuple[int, ...], bool, np.dtype]:
    """(shape, fortran_order, dtype) of the .npy file open at its start; leaves `handle` where the data begins."""
    version = np.lib.format.read_magic(handle)
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(handle)


def signature_blocks(path: str | os.PathLike, rows: int | None = None) -> Iterator[np.ndarray]:
    """A local signatures .npy file read `rows` rows (default: SIGNATURE_BLOCK_BYTES) at a time:
    uint32 (<= rows, num_perm) blocks, in row order (a plain read per block; memory-mapping would
    count the whole file as resident)."""
    with open(path, "rb") as handle:
        shape, fortran_order, dtype = npy_header(handle)
        if fortran_order or len(shape) != 2:
            raise ValueError(f"{path}: not a C-ordered (documents, num_perm) signature matrix")
        width = shape[1] * dtype.itemsize
        rows = rows or max(1, SIGNATURE_BLOCK_BYTES // max(width, 1))
        for start in range(0, shape[0], rows):
            count = min(rows, shape[0] - start)
            yield np.frombuffer(handle.read(count * width), dtype=dtype).reshape(count, shape[1])


# ---- buckets ------------------------------------------------------------------------------

def _band_keys(band: np.ndarray) -> np.ndarray:
    key = np.zeros(len(band), dtype=np.uint64)
    for j in range(band.shape[1]):
        key = mix64(key ^ band[:, j])
    return key


class ShardedSignatures:
    """Signature files of the shards seen as one (documents, num_perm) matrix, memory-mapped.

    The buckets phase reads one band's columns at a time and the rows of candidate pairs, so its memory
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


def bucket_pairs(keys: np.ndarray, ids: np.ndarray) -> list[np.ndarray]:
    """Pairs (i, j), int64 (k, 2) blocks, of documents `ids` that share a band key: sorted by
    (key, id), each document with the next _BUCKET_WINDOW - 1 of its bucket (i < j). The staged
    dedup (dedup_stages.band_group) calls this too, which keeps its candidates identical."""
    order = np.lexsort((ids, keys))
    sorted_keys, sorted_ids = keys[order], ids[order]
    found = []
    for d in range(1, _BUCKET_WINDOW):
        same = sorted_keys[:-d] == sorted_keys[d:]
        if not same.any():
            break
        found.append(np.stack([sorted_ids[:-d][same], sorted_ids[d:][same]], axis=1))
    return found


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
        found += bucket_pairs(keys, live)
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


# ---- clusters -----------------------------------------------------------------------------

def cluster_signatures(
    sigs: np.ndarray | ShardedSignatures, cfg: NearDedupConfig, excluded: np.ndarray | None = None
) -> tuple[np.ndarray, int, int]:
    """int64 (documents,): per row, the row kept for its cluster (itself when kept).

    Buckets (candidate_pairs) → pairs verified by estimated Jaccard ≥ cfg.threshold → clusters
    (connected components), each keeping its smallest row, i.e. its first document in input order.
    """
    bands, _ = cfg.bands_rows()
    pairs = candidate_pairs(sigs, bands, excluded)
    verified = pairs[estimated_jaccard(sigs, pairs) >= cfg.threshold]
    return components_min_label(sigs.shape[0], verified)


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
                    f"recompute the signatures with the same near-dedup settings (rerun the clean step's filter phase)"
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
        keep_of = cluster_signatures(sigs, cfg, excluded)
        offsets = sigs.offsets
        del sigs  # close the memory maps before the temporary files go
    dropped = np.flatnonzero(keep_of != np.arange(len(keep_of)))
    shard_of = np.searchsorted(offsets, dropped, side="right") - 1
    return {(int(s), int(g - offsets[s])) for s, g in zip(shard_of, dropped)}
