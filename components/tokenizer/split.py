"""Deterministic held-out split by document, decided before anything is trained.

A document's place depends only on (seed, id, sha256 of its text): the same corpus gives the
same split whatever the shard order, and a document never lands on both sides.
"""

from __future__ import annotations

import hashlib
import heapq
from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Iterator

from components.shards import Document

DocKey = tuple[str, str]  # (document id, sha256 of its text)


def doc_key(doc: Document) -> DocKey:
    return doc.id, hashlib.sha256(doc.text.encode("utf-8")).hexdigest()


def unit_hash(seed: int, purpose: str, key: DocKey) -> float:
    """A uniform number in [0, 1) fixed by the seed, a purpose label and the document."""
    digest = hashlib.sha256(f"{seed}\0{purpose}\0{key[0]}\0{key[1]}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


@dataclass
class EvalSelection:
    """Which documents are held out; a multiset, so exact duplicates are counted, not merged."""

    keys: Counter
    scanned: int

    def __len__(self) -> int:
        return sum(self.keys.values())

    def partition(self, docs: Iterable[Document]) -> Iterator[tuple[bool, Document, DocKey]]:
        """(is_eval, document, key) for each document; reusable, one fresh pass per call."""
        remaining = Counter(self.keys)
        for doc in docs:
            key = doc_key(doc)
            held_out = remaining[key] > 0
            if held_out:
                remaining[key] -= 1
            yield held_out, doc, key


def select_eval(
    docs: Iterable[Document], *, seed: int, eval_fraction: float, max_documents: int, min_documents: int = 0
) -> EvalSelection:
    """One streaming pass: keep the `max_documents` lowest hashes, then apply the fraction.

    A document is held out when its hash is under `eval_fraction`; when more qualify than
    `max_documents`, the lowest hashes win (so the cap is deterministic too). At least
    `min_documents` are held out, never more than half the corpus.
    """
    heap: list[tuple[float, DocKey]] = []  # max-heap by negated score, size <= keep
    keep = max(max_documents, min_documents)
    scanned = 0
    for doc in docs:
        scanned += 1
        key = doc_key(doc)
        item = (-unit_hash(seed, "split", key), key)
        if len(heap) < keep:
            heapq.heappush(heap, item)
        elif item > heap[0]:
            heapq.heapreplace(heap, item)
    lowest = sorted((-neg, key) for neg, key in heap)
    chosen = [key for score, key in lowest if score < eval_fraction][:max_documents]
    floor = min(min_documents, scanned // 2)
    if len(chosen) < floor:
        chosen = [key for _, key in lowest[:floor]]
    return EvalSelection(keys=Counter(chosen), scanned=scanned)


def eval_order(seed: int, key: DocKey) -> tuple[float, DocKey]:
    """Sort key for writing eval documents: independent of the order they were read in."""
    return unit_hash(seed, "split", key), key
