"""Exact deduplication by the sha256 of the normalised text; the first occurrence wins."""

from __future__ import annotations

import hashlib


class ExactDedup:
    """Remembers 16-byte digest prefixes of texts seen so far.

    Memory grows with the number of distinct documents (~100 bytes each in a Python set, so
    ~100 MB per million); for corpora beyond that, shard by digest prefix first.
    """

    def __init__(self) -> None:
        self._seen: set[bytes] = set()

    def is_duplicate(self, text: str) -> bool:
        """True if an identical text was seen before; otherwise remember this one."""
        key = hashlib.sha256(text.encode("utf-8")).digest()[:16]
        if key in self._seen:
            return True
        self._seen.add(key)
        return False
