"""Settings of MinHash LSH near-dedup (components/clean/minhash.py) and the LSH band choice."""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field, field_validator, model_validator

from components.clean.langid import SCRIPTS, is_space_delimited
from components.config import Section

SHINGLER_VERSION = 2  # bump when shingles.shingle_hashes changes: old signature files must not be mixed in


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
