"""Document filters: each returns None to keep a document or the reason string to drop it."""

from __future__ import annotations


def length_filter(text: str, min_chars: int, max_chars: int) -> str | None:
    """`empty` (nothing left after normalising), `too_short` (< min_chars), `too_long` (> max_chars).

    Lengths are in characters, not bytes, so a CJK document is not penalised for its encoding.
    """
    if not text:
        return "empty"
    if len(text) < min_chars:
        return "too_short"
    if len(text) > max_chars:
        return "too_long"
    return None
