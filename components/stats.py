"""Per-step record accounting: in = kept + dropped (by reason) + quarantined (by reason)."""

from __future__ import annotations

from collections import Counter

from pydantic import BaseModel, Field


class ConservationError(AssertionError):
    pass


class StepStats(BaseModel):
    records_in: int = 0
    kept: int = 0
    dropped: dict[str, int] = Field(default_factory=dict)
    quarantined: dict[str, int] = Field(default_factory=dict)
    stages: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="per stage: documents in, out, and dropped by reason"
    )
    counters: dict[str, int] = Field(
        default_factory=dict, description="other counts: PII masked by type, kept documents by language, ..."
    )
    languages: dict[str, dict[str, int]] = Field(
        default_factory=dict, description="per language: documents kept and dropped by reason ('und': not determined)"
    )

    def drop(self, reason: str, n: int = 1) -> None:
        self.dropped[reason] = self.dropped.get(reason, 0) + n

    def quarantine(self, reason: str, n: int = 1) -> None:
        self.quarantined[reason] = self.quarantined.get(reason, 0) + n

    def count(self, key: str, n: int = 1) -> None:
        if n:
            self.counters[key] = self.counters.get(key, 0) + n

    def language(self, lang: str, key: str, n: int = 1) -> None:
        """Count `n` documents of language `lang` as `key`: "kept" or a drop reason."""
        if n:
            counts = self.languages.setdefault(lang, {})
            counts[key] = counts.get(key, 0) + n

    def stage(self, name: str, key: str, n: int = 1) -> None:
        counts = self.stages.setdefault(name, {"in": 0, "out": 0})
        counts[key] = counts.get(key, 0) + n

    def merge(self, other: "StepStats") -> "StepStats":
        dropped, quarantined = Counter(self.dropped), Counter(self.quarantined)
        dropped.update(other.dropped)
        quarantined.update(other.quarantined)
        stages = {name: dict(counts) for name, counts in self.stages.items()}
        for name, counts in other.stages.items():
            merged = Counter(stages.get(name, {}))
            merged.update(counts)
            stages[name] = dict(merged)
        counters = Counter(self.counters)
        counters.update(other.counters)
        languages = {lang: dict(counts) for lang, counts in self.languages.items()}
        for lang, counts in other.languages.items():
            merged = Counter(languages.get(lang, {}))
            merged.update(counts)
            languages[lang] = dict(sorted(merged.items()))
        return StepStats(
            records_in=self.records_in + other.records_in,
            kept=self.kept + other.kept,
            dropped=dict(sorted(dropped.items())),
            quarantined=dict(sorted(quarantined.items())),
            stages=stages,
            counters=dict(sorted(counters.items())),
            languages=dict(sorted(languages.items())),
        )

    def check(self) -> None:
        accounted = self.kept + sum(self.dropped.values()) + sum(self.quarantined.values())
        if accounted != self.records_in:
            raise ConservationError(
                f"record counts not conserved: in={self.records_in} but kept={self.kept} + "
                f"dropped={self.dropped} + quarantined={self.quarantined} = {accounted}"
            )
        for name, counts in self.stages.items():
            drops = sum(v for k, v in counts.items() if k not in ("in", "out"))
            if counts["in"] != counts["out"] + drops:
                raise ConservationError(f"stage {name!r} does not conserve records: {counts}")

    def as_metrics(self, prefix: str = "") -> dict[str, float]:
        """Flat numeric view for KFP Metrics and MLflow."""
        out = {f"{prefix}records_in": self.records_in, f"{prefix}kept": self.kept}
        out.update({f"{prefix}dropped_{k}": v for k, v in self.dropped.items()})
        out.update({f"{prefix}quarantined_{k}": v for k, v in self.quarantined.items()})
        for name, counts in self.stages.items():
            out.update({f"{prefix}stage.{name}.{key}": v for key, v in counts.items()})
        out.update({f"{prefix}{key}": v for key, v in self.counters.items()})
        out[f"{prefix}dropped_total"] = sum(self.dropped.values())
        out[f"{prefix}quarantined_total"] = sum(self.quarantined.values())
        return {k: float(v) for k, v in out.items()}
