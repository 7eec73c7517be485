"""Shingles of a document for MinHash: per-script character or word k-grams, as 64-bit hashes.

    hashes = shingle_hashes(text, NearDedupConfig())   # uint64 (shingles,), sorted, unique

The script is the dominant one (langid.detect_script, ISO 15924); `NearDedupConfig.shingles`
picks the unit and k for it. Only letters, marks and digits take part, lowercased: whitespace
and punctuation are removed (char unit) or separate words (word unit). Hashing is vectorised
splitmix64 (Steele et al. 2014's finaliser) over code points, never Python's hash(), so every
process computes the same values.
"""

from __future__ import annotations

import functools
import unicodedata

import numpy as np

from components.clean.langid import detect_script
from components.clean.minhash_config import NearDedupConfig, ShingleSpec


def mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser, wrapping uint64 arithmetic."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@functools.cache
def _window_weights(k: int) -> np.ndarray:
    return mix64(np.arange(1, k + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)) | np.uint64(1)


def _window_hash(units: np.ndarray, k: int) -> np.ndarray:
    """One 64-bit hash per window of k consecutive unit hashes (the whole sequence if shorter)."""
    if len(units) == 0:
        return units
    k = min(k, len(units))
    mixed = mix64(units)
    weights = _window_weights(k)
    n = len(units) - k + 1
    acc = mixed[:n] * weights[0]
    for j in range(1, k):
        acc += mixed[j : j + n] * weights[j]
    return mix64(acc)


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
    mixed = mix64(cps[idx] | (pos << np.uint64(32)))
    return mix64(np.add.reduceat(mixed, np.flatnonzero(first)))


def shingle_plan(text: str, cfg: NearDedupConfig) -> tuple[str, ShingleSpec]:
    """(script, shingling) of one document: its dominant script's spec, except that a
    space-delimited text whose words average more than `max_mean_word_chars` characters
    (a URL list, base64, a language written without spaces but misdetected) gets the
    'unspaced' spec."""
    script = detect_script(text)  # ISO 15924, "Zyyy" without letters
    spec = cfg.shingle_spec(script)
    if spec.unit == "word":
        tokens = text.split()
        if tokens and sum(map(len, tokens)) / len(tokens) > cfg.max_mean_word_chars:
            spec = cfg.shingles["unspaced"]
    return script, spec


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
