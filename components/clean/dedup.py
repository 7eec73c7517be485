"""Exact corpus-wide deduplication: the keys the filter phase writes, the drop lists of the dedup phase.

Exact: the sha256 (first 16 bytes) of each staged document's normalised text; the first
occurrence in input order (shard, row) is kept. Near duplicates (MinHash LSH) are in
components/clean/minhash.py; clean.dedup joins both into one drop list per shard: {row: reason}.
"""

from __future__ import annotations

import hashlib
import io

import numpy as np

from components import storage

KEY_BYTES = 16


def text_key(text: str) -> bytes:
    """The exact-dedup key of a document: the first KEY_BYTES bytes of sha256(UTF-8 text)."""
    return hashlib.sha256(text.encode("utf-8")).digest()[:KEY_BYTES]


def save_keys(uri: str, keys: bytes | bytearray) -> None:
    """Write keys (the documents' text_key digests, concatenated) as a uint8 (documents, KEY_BYTES)
    .npy file (no pickle) to any storage URI."""
    array = np.frombuffer(keys, dtype=np.uint8).reshape(-1, KEY_BYTES)
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    storage.write_bytes(uri, buffer.getvalue())


def load_keys(uri: str) -> np.ndarray:
    return np.load(io.BytesIO(storage.read_bytes(uri)), allow_pickle=False)


def exact_duplicates(key_uris: list[str]) -> list[dict[int, str]]:
    """Rows to drop per shard as exact duplicates of an earlier document.

    One sort over all 16-byte digests (~50 bytes per document at the peak, 50 MB per million):
    the first occurrence in (shard, row) order is kept.
    """
    blocks = [load_keys(uri) for uri in key_uris]
    offsets = np.cumsum([0] + [len(b) for b in blocks])
    keys = np.concatenate(blocks) if blocks else np.zeros((0, KEY_BYTES), dtype=np.uint8)
    flat = np.ascontiguousarray(keys).view(np.dtype((np.void, KEY_BYTES))).ravel()
    _, first = np.unique(flat, return_index=True)
    duplicate = np.ones(len(flat), dtype=bool)
    duplicate[first] = False
    rows = np.flatnonzero(duplicate)
    shard_of = np.searchsorted(offsets, rows, side="right") - 1
    drop_lists: list[dict[int, str]] = [{} for _ in key_uris]
    for row, shard in zip(rows.tolist(), shard_of.tolist()):
        drop_lists[shard][row - int(offsets[shard])] = "duplicate"
    return drop_lists

