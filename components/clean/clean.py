"""The clean step: read document shards, normalise, filter by length, drop exact duplicates.

    clean_corpus("data/demo-corpus", "runs/x/clean", CleanConfig())

Stages, in order, per record (streamed; memory holds only the dedup digests and samples):
  read       undecodable / invalid JSON / missing text  -> quarantined (reason from shards.py)
  normalise  Unicode normal form, invisible characters, whitespace (normalize.py)
  length     `empty`, `too_short`, `too_long` (filters.py)
  dedup      `duplicate`: the first occurrence in input order is kept (dedup.py)

Output under `output_uri`:
  shards/part-00000.jsonl.gz ...   kept documents {id, text, meta}, `shard_max_records` each
  manifest.json                    kind="documents", shard digests, facts: stats, text_field
  stats.json                       records_in = kept + dropped + quarantined
  dropped/<reason>.jsonl           up to `dropped_samples` dropped documents per reason
  quarantine/part-00000.jsonl      every quarantined record: source, reason, raw (if any)
"""

from __future__ import annotations

import contextlib
import itertools
import json
import time
from dataclasses import dataclass, field
from typing import BinaryIO, Iterable, Iterator

from components import shards, storage
from components.clean.config import CleanConfig
from components.clean.dedup import ExactDedup
from components.clean.filters import length_filter
from components.clean.normalize import normalize
from components.manifest import Manifest, ShardInfo, shard_info
from components.shards import Document, Quarantined
from components.stats import StepStats

OUTPUT_TEXT_FIELD = "text"  # shards.write_documents always writes {id, text, meta}


class CleanError(ValueError):
    """The clean step cannot run or produced nothing; the message says what to change."""


@dataclass
class CleanResult:
    manifest: Manifest
    manifest_uri: str
    stats: StepStats
    seconds: float = 0.0

    @property
    def docs_per_s(self) -> float:
        return self.stats.records_in / self.seconds if self.seconds > 0 else 0.0


def input_shards(input_uri: str) -> list[str]:
    """The shard files of a corpus: the file itself, or every document file under a directory."""
    if not storage.exists(input_uri):
        raise CleanError(
            f"input {input_uri!r} does not exist: point the clean step at a JSONL(.gz) file or a "
            f"directory of them (for the demo, build it with `make corpus`)"
        )
    found = storage.list_files(input_uri, shards.DOCUMENT_SUFFIXES)
    if not found:
        raise CleanError(
            f"input {input_uri!r} holds no document shards: expected files ending in "
            f"{', '.join(shards.DOCUMENT_SUFFIXES)}"
        )
    return found


def _check_output_outside_input(input_uri: str, output_uri: str) -> None:
    inp, out = input_uri.rstrip("/") + "/", output_uri.rstrip("/") + "/"
    if storage.is_s3(inp) != storage.is_s3(out):
        return
    if not storage.is_s3(inp):
        inp = str(storage.local_path(inp).resolve()) + "/"
        out = str(storage.local_path(out).resolve()) + "/"
    if out.startswith(inp):
        raise CleanError(f"output {output_uri!r} is inside input {input_uri!r}: a rerun would read its own output; choose another output")


def clean_text(text: str, config: CleanConfig, dedup: ExactDedup) -> tuple[str, str | None]:
    """(normalised text, drop reason or None): the per-document stages in order."""
    text = normalize(text, config.normalization)
    reason = length_filter(text, config.min_chars, config.max_chars)
    if reason is None and dedup.is_duplicate(text):
        reason = "duplicate"
    return text, reason


@dataclass
class _Rejects:
    """Where dropped samples and quarantined records go while the corpus streams through."""

    output_uri: str
    samples_per_reason: int
    stack: contextlib.ExitStack
    samples: dict[str, list[Document]] = field(default_factory=dict)
    _quarantine: BinaryIO | None = None

    def dropped(self, doc: Document, text: str, reason: str) -> None:
        kept = self.samples.setdefault(reason, [])
        if len(kept) < self.samples_per_reason:
            kept.append(Document(doc.id, text, {**doc.meta, "drop_reason": reason}))

    def quarantined(self, item: Quarantined) -> None:
        if self._quarantine is None:  # opened on first use: a clean corpus leaves no file
            self._quarantine = self.stack.enter_context(storage.open_write(self.quarantine_uri))
        record = {"source": item.source, "reason": item.reason, "raw": item.raw}
        self._quarantine.write(json.dumps(record, ensure_ascii=False).encode("utf-8") + b"\n")

    @property
    def quarantine_uri(self) -> str:
        return storage.join(self.output_uri, "quarantine", "part-00000.jsonl")

    def write_samples(self) -> list[str]:
        uris = []
        for reason, docs in sorted(self.samples.items()):
            uris.append(storage.join(self.output_uri, "dropped", f"{reason}.jsonl"))
            shards.write_documents(uris[-1], docs)
        return uris + ([self.quarantine_uri] if self._quarantine is not None else [])


def _kept(shard_uris: Iterable[str], config: CleanConfig, stats: StepStats, rejects: _Rejects) -> Iterator[Document]:
    dedup = ExactDedup()
    for uri in shard_uris:
        for item in shards.read_documents(uri, config.text_field, config.id_field):
            stats.records_in += 1
            if isinstance(item, Quarantined):
                stats.quarantine(item.reason)
                rejects.quarantined(item)
                continue
            text, reason = clean_text(item.text, config, dedup)
            if reason is not None:
                stats.drop(reason)
                rejects.dropped(item, text, reason)
                continue
            stats.kept += 1
            yield Document(item.id, text, item.meta)


def _write_shards(docs: Iterator[Document], output_uri: str, max_records: int) -> list[ShardInfo]:
    """Stream `docs` into numbered .jsonl.gz shards of at most `max_records`; none if empty."""
    infos = []
    for index in itertools.count():
        first = next(docs, None)
        if first is None:
            return infos
        uri = storage.join(output_uri, "shards", f"part-{index:05d}.jsonl.gz")
        count = shards.write_documents(uri, itertools.chain([first], itertools.islice(docs, max_records - 1)))
        infos.append(shard_info(uri, count))
    raise AssertionError("unreachable")


def _remove_stale(output_uri: str, written: set[str]) -> None:
    """Delete files a previous run left under our subdirectories (local outputs only)."""
    if storage.is_s3(output_uri):
        return  # storage has no delete; the manifest lists exactly this run's shards
    root = storage.local_path(output_uri)
    for sub in ("shards", "dropped", "quarantine"):
        for path in (root / sub).glob("*") if (root / sub).is_dir() else ():
            if path.is_file() and str(path) not in written:
                path.unlink()
    if not any(w.endswith("manifest.json") for w in written):
        (root / "manifest.json").unlink(missing_ok=True)


def _sorted(stats: StepStats) -> StepStats:
    return StepStats(
        records_in=stats.records_in,
        kept=stats.kept,
        dropped=dict(sorted(stats.dropped.items())),
        quarantined=dict(sorted(stats.quarantined.items())),
    )


def _nothing_kept(input_uri: str, stats: StepStats, output_uri: str) -> CleanError:
    if stats.records_in == 0:
        return CleanError(f"empty corpus: {input_uri!r} holds no records; check the input path and its files")
    reasons = {**stats.dropped, **{f"quarantined:{k}": v for k, v in stats.quarantined.items()}}
    return CleanError(
        f"all {stats.records_in} records of {input_uri!r} were dropped or quarantined: {reasons}; "
        f"samples are under {storage.join(output_uri, 'dropped')} and "
        f"{storage.join(output_uri, 'quarantine')} (check text_field/id_field and min_chars/max_chars)"
    )


def clean_corpus(input_uri: str, output_uri: str, config: CleanConfig) -> CleanResult:
    """Clean every shard under `input_uri` into `output_uri`; see the module docstring."""
    started = time.perf_counter()
    shard_uris = input_shards(input_uri)
    _check_output_outside_input(input_uri, output_uri)
    stats = StepStats()
    with contextlib.ExitStack() as stack:
        rejects = _Rejects(output_uri, config.dropped_samples, stack)
        infos = _write_shards(_kept(shard_uris, config, stats, rejects), output_uri, config.shard_max_records)
        written = {info.uri for info in infos} | set(rejects.write_samples())
    stats = _sorted(stats)
    stats.check()
    stats_uri = storage.join(output_uri, "stats.json")
    storage.write_text(stats_uri, json.dumps(stats.model_dump(), indent=2, ensure_ascii=False) + "\n")
    if stats.kept == 0:
        _remove_stale(output_uri, written)
        raise _nothing_kept(input_uri, stats, output_uri)
    manifest = Manifest(
        kind="documents",
        root=output_uri,
        shards=infos,
        facts={"stats": stats.model_dump(), "text_field": OUTPUT_TEXT_FIELD},
    )
    manifest_uri = storage.join(output_uri, "manifest.json")
    manifest.save(manifest_uri)
    _remove_stale(output_uri, written | {manifest_uri})
    return CleanResult(manifest, manifest_uri, stats, time.perf_counter() - started)
