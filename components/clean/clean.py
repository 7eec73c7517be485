"""The clean step: per-document stages on every work unit, corpus-wide dedup in stages, then final shards.

    clean_corpus("data/demo-corpus", "runs/x/clean", CleanConfig())

Phases, so a cluster fans each out to its own pods and a crash costs one task; the number of
tasks is set by the config (`tasks`, `dedup_tasks`), never by the number of input files:
  plan (once; `plan_units`): the input files → `tasks` work units (files or byte ranges of plain
     JSONL, contiguous, balanced by size: components/clean/workunits.py), saved on storage.
  filter (per unit, parallel; `filter_shard`): read → quarantine unreadable records → the
     stages of `stages.STAGES` (normalise, length, langid, quality, pii), each drop with a
     reason → staged shard, exact-dedup keys, MinHash signatures and the dedup index; progress
     (docs/s, bytes/s, ETA) in the log. A marker written last marks the unit done; a rerun skips it.
  dedup (`dedup`, components/clean/dedup_stages.py): exact duplicates per key-prefix partition,
     near-duplicate pairs per group of LSH bands, one clustering → a drop list per unit.
  write (per unit, parallel; `write_shard`): staged shard minus its drop list → final shards
     of at most `shard_max_records`; a marker makes it resumable too.
  collect (once; `collect`): stats, dropped samples, the per-language table, the manifest, and
     per task type the peak RSS and throughput (`task_figures`).
Every file's path is built in components/clean/paths.py; work files live under
`work/<config digest>/`, so a rerun with another config starts afresh.

Output under `output_uri`:
  shards/part-IIIII-JJJ.jsonl.gz   kept documents {id, text, meta} of unit I
  manifest.json                    kind="documents", shard digests, facts: stats, text_field
  stats.json                       records_in = kept + dropped + quarantined, per stage and language too
  languages.md                     per language: documents in, kept, dropped by reason
  dropped/<reason>.jsonl           up to `dropped_samples` dropped documents per reason and language
  quarantine/part-IIIII.jsonl      every quarantined record of unit I: source, reason, raw, detail
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import shutil
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, BinaryIO, Callable, Iterator

import numpy as np

from components import shards, storage
from components.clean import dedup_stages, minhash
from components.clean.audit import language_table
from components.clean.config import CleanConfig
from components.clean.dedup import KEY_BYTES, exact_duplicates, save_keys, text_key
from components.clean.paths import OUTPUT_DIRS, CleanPaths, part
from components.clean.progress import Progress
from components.clean.stages import build_stages, run_stages
from components.clean.workunits import load_units, plan_work_units, save_units
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
    seconds: float = 0.0  # wall time, when the whole step ran in one call
    shard_seconds: float = 0.0  # time spent in the per-shard phases, summed over shards
    tasks: dict[str, float] = field(default_factory=dict)  # per task type: peak RSS, throughput (task_figures)
    input_bytes: int | None = None  # the input files' bytes, as planned

    @property
    def docs_per_s(self) -> float:
        return self.stats.records_in / self.seconds if self.seconds > 0 else 0.0

    @property
    def docs_per_core_s(self) -> float:
        """Throughput of one worker: documents per second of per-shard work."""
        return self.stats.records_in / self.shard_seconds if self.shard_seconds > 0 else 0.0


def input_shards(input_uri: str) -> list[str]:
    """The files of a corpus: the file itself, or every file under a directory.

    A file that is not a document shard (notes.txt, data.csv) is listed too, after the shards
    (their numbering stays put), to be quarantined and counted rather than silently left out;
    unless it or a folder above it is named with a leading dot or underscore (.built, _SUCCESS,
    .git/): those are not data, as in Spark and Hadoop.
    """
    if not storage.exists(input_uri):
        raise CleanError(
            f"input {input_uri!r} does not exist: point the clean step at a JSONL(.gz/.zst) or Parquet "
            f"file or a directory of them (for the demo, build it with `make corpus`)"
        )
    root = input_uri if storage.is_s3(input_uri) else str(storage.local_path(input_uri))
    files = storage.list_files(input_uri)
    found = [uri for uri in files if uri.endswith(shards.DOCUMENT_SUFFIXES)]
    others = [uri for uri in files if not uri.endswith(shards.DOCUMENT_SUFFIXES) and not _hidden(uri.removeprefix(root))]
    if not found:
        names = ", ".join(uri.rsplit("/", 1)[-1] for uri in others[:5]) or "nothing"
        raise CleanError(
            f"input {input_uri!r} holds no document shards: expected files ending in "
            f"{', '.join(shards.DOCUMENT_SUFFIXES)} (found {names})"
        )
    return found + others


def _hidden(relative: str) -> bool:
    return any(part.startswith((".", "_")) for part in relative.split("/"))


def check_output_outside_input(input_uri: str, output_uri: str) -> None:
    """Raises CleanError when output_uri lies inside input_uri: a rerun would read its own output."""
    inp, out = input_uri.rstrip("/") + "/", output_uri.rstrip("/") + "/"
    if storage.is_s3(inp) != storage.is_s3(out):
        return
    if not storage.is_s3(inp):
        inp = str(storage.local_path(inp).resolve()) + "/"
        out = str(storage.local_path(out).resolve()) + "/"
    if out.startswith(inp):
        raise CleanError(f"output {output_uri!r} is inside input {input_uri!r}: a rerun would read its own output; choose another output")


# ---- filter: one shard through the stages -----------------------------------------------


def filter_shard(index: int, output_uri: str, config: CleanConfig) -> StepStats:
    """The filter phase of work unit `index` (the plan phase's units file): its stats
    (records_in = kept + dropped + quarantined); a KFP ParallelFor item on a cluster.

    Reads the unit's input parts in order (whole files, or byte ranges of plain JSONL files),
    writes the staged shard, its dedup keys, signatures and dedup index, dropped samples and the
    unit's quarantine file, logging documents and bytes per second and an ETA as it goes;
    resumable: a marker holding the stats, written last, is reused while the unit's parts and
    their files' fingerprints are unchanged. Raises CleanError for a file in a format the reader
    cannot take (e.g. a Parquet text column of another type).
    """
    paths = CleanPaths.of(output_uri, config)
    unit = load_units(paths.units)[index]
    marker = paths.filter_marker(index)
    source = [{"uri": p.uri, "start": p.start, "end": p.end, "fingerprint": storage.fingerprint(p.uri)} for p in unit.parts]
    if storage.exists(marker):
        done = json.loads(storage.read_text(marker))
        if done["source"] == source:
            return StepStats.model_validate(done["stats"])
    started = time.perf_counter()
    stats = StepStats()
    stages = build_stages(config, stats)
    samples: dict[str, dict[str, list[Document]]] = {}  # reason -> language -> the first dropped
    keys = bytearray()  # 16 bytes per kept document
    # spills to disk: a shard of a million undecodable lines does not fill memory
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as quarantined:

        progress = Progress(f"clean: unit {index}", unit.bytes)

        def records() -> Iterator[Document | Quarantined]:
            for p in unit.parts:
                byte_range = None if p.whole else (p.start, p.end)
                yield from shards.read_documents(p.uri, config.text_field, config.id_field, config.max_line_bytes, byte_range)

        def survivors() -> Iterator[Document]:
            for item in records():
                stats.records_in += 1
                progress.advance(len(item.text.encode()) if isinstance(item, Document) else len(item.raw))
                if isinstance(item, Quarantined):
                    stats.quarantine(item.reason)
                    quarantined.write(_quarantine_row(item).encode("utf-8") + b"\n")
                    continue
                reason = run_stages(item, stages, stats)
                if reason is not None:
                    stats.drop(reason)
                    bucket = samples.setdefault(reason, {}).setdefault(item.meta.get("lang", "und"), [])
                    if len(bucket) < config.dropped_samples:
                        bucket.append(_sample(item, reason, config.max_chars))
                    continue
                keys.extend(text_key(item.text))
                yield item

        try:
            stats.kept = shards.write_documents(paths.staged(index), survivors())
        except shards.ShardFormatError as exc:
            raise CleanError(str(exc)) from None
        _publish(quarantined, paths.quarantine(index))
    save_keys(paths.keys(index), keys)
    key_array = np.frombuffer(keys, dtype=np.uint8).reshape(-1, KEY_BYTES)
    if config.near_dedup is None:
        dedup_stages.write_index(index, key_array, None, paths, None)
    else:
        docs = ((d.id, d.text) for d in shards.iter_texts([paths.staged(index)]))
        with tempfile.TemporaryDirectory(prefix="homegrown-index-") as tmp:
            signature_file = os.path.join(tmp, "signatures.npy")  # a local copy, not a download of the upload
            minhash.write_signatures(part(index), docs, paths.signatures(index), config.near_dedup, keep=signature_file)
            dedup_stages.write_index(index, key_array, signature_file, paths, config.near_dedup)
    for reason, by_language in samples.items():
        docs = [doc for lang in sorted(by_language) for doc in by_language[lang]]
        shards.write_documents(storage.join(paths.filter_samples(index), f"{reason}.jsonl"), docs)
    stats.check()
    rates = progress.done()
    # written last: marks the unit done for exactly these input parts
    seconds = time.perf_counter() - started
    storage.write_text(marker, json.dumps({
        "source": source, "stats": stats.model_dump(), "seconds": seconds, "bytes": unit.bytes, "read_bytes": progress.bytes,
        "docs_per_s": rates["docs_per_s"], "bytes_per_s": rates["bytes_per_s"], "peak_rss_mb": dedup_stages.peak_rss_mb(),
    }))  # fmt: skip
    return stats


def _publish(spool: BinaryIO, uri: str) -> None:
    """Copy what was spooled to `uri`, if anything was."""
    if spool.tell():
        spool.seek(0)
        with storage.open_write(uri) as out:
            shutil.copyfileobj(spool, out)


def _quarantine_row(item: Quarantined) -> str:
    row = {"source": item.source, "reason": item.reason, "raw": item.raw}
    if item.detail:
        row["detail"] = item.detail
    return json.dumps(row, ensure_ascii=False)


def _sample(doc: Document, reason: str, max_chars: int) -> Document:
    """A dropped document kept for inspection, cut to max_chars: a too_long one may be megabytes."""
    meta = {**doc.meta, "drop_reason": reason}
    if len(doc.text) > max_chars:
        meta["sample_cut_from_chars"] = len(doc.text)
    return Document(doc.id, doc.text[:max_chars], meta)


# ---- write: one shard minus its drop list --------------------------------------------------


def write_shard(index: int, output_uri: str, config: CleanConfig) -> dict[str, Any]:
    """The write phase of input shard `index`: its staged shard minus the dedup phase's drop list,
    as final shards of at most `shard_max_records` documents; a KFP ParallelFor item on a cluster.

    Returns the write marker {inputs, shards: [ShardInfo], dropped: {reason: n}, samples,
    languages: {lang: kept}, seconds}; resumable: the marker is reused while the filter marker
    and drop list it was made from are unchanged.
    """
    paths = CleanPaths.of(output_uri, config)
    drops = load_drop_list(paths, index)
    marker = paths.write_marker(index)
    inputs = hashlib.sha256(
        (storage.read_text(paths.filter_marker(index)) + json.dumps(sorted(drops.items()))).encode()
    ).hexdigest()
    if storage.exists(marker):
        done = json.loads(storage.read_text(marker))
        if done["inputs"] == inputs:
            return done
    started = time.perf_counter()
    staged = shards.iter_texts([paths.staged(index)])
    dropped: dict[str, int] = {}
    samples: dict[str, list[dict]] = {}
    languages: dict[str, int] = {}
    dropped_languages: dict[str, dict[str, int]] = {}  # language -> reason -> documents

    def kept() -> Iterator[Document]:
        for row, doc in enumerate(staged):
            reason = drops.get(row)
            if reason is None:
                if "lang" in doc.meta:
                    languages[doc.meta["lang"]] = languages.get(doc.meta["lang"], 0) + 1
                yield doc
                continue
            dropped[reason] = dropped.get(reason, 0) + 1
            lang = doc.meta.get("lang", "und")
            counts = dropped_languages.setdefault(lang, {})
            counts[reason] = counts.get(reason, 0) + 1
            bucket = samples.setdefault(reason, [])
            if sum(1 for d in bucket if d["meta"].get("lang", "und") == lang) < config.dropped_samples:
                bucket.append({"id": doc.id, "text": doc.text, "meta": {**doc.meta, "drop_reason": reason}})

    infos: list[dict] = []
    docs = kept()
    for number in itertools.count():
        first = next(docs, None)
        if first is None:
            break
        uri = paths.shard(index, number)
        count = shards.write_documents(uri, itertools.chain([first], itertools.islice(docs, config.shard_max_records - 1)))
        infos.append(shard_info(uri, count).model_dump())
    result = {"inputs": inputs, "shards": infos, "dropped": dropped, "samples": samples, "languages": languages,
              "dropped_languages": dropped_languages, "seconds": time.perf_counter() - started,
              "peak_rss_mb": dedup_stages.peak_rss_mb()}
    storage.write_text(marker, json.dumps(result, ensure_ascii=False))
    return result


# ---- the whole step ------------------------------------------------------------------------


def _map(func: Callable, calls: list[tuple], workers: int, desc: str) -> list:
    """Run calls in worker processes (spawned: safe beside threads), in order, with progress."""
    from tqdm.auto import tqdm

    bar = tqdm(total=len(calls), desc=desc, unit="shard", disable=not sys.stderr.isatty(), leave=False)
    try:
        if workers <= 1 or len(calls) <= 1:
            out = []
            for call in calls:
                out.append(func(*call))
                bar.update()
            return out
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = [pool.submit(func, *call) for call in calls]
            for future in futures:
                future.add_done_callback(lambda _: bar.update())
            return [f.result() for f in futures]
    finally:
        bar.close()


def plan_units(input_uri: str, output_uri: str, config: CleanConfig) -> list[dict[str, Any]]:
    """The plan phase: the corpus's files as `config.tasks` work units (components/clean/workunits.py),
    saved to the units file; returns the short list the filter and write phases iterate over,
    [{index, bytes}] (the files themselves are in the units file, not in the pipeline's parameters).
    Raises CleanError for a missing input, one without document shards, or an output inside the input."""
    files = input_shards(input_uri)
    check_output_outside_input(input_uri, output_uri)
    sizes = dict(storage.list_sizes(input_uri))
    tasks = config.tasks or os.cpu_count() or 1
    units = plan_work_units([(uri, sizes.get(uri, 0)) for uri in files], tasks)
    save_units(CleanPaths.of(output_uri, config).units, units)
    return [{"index": u.index, "bytes": u.bytes} for u in units]


def dedup(n_shards: int, output_uri: str, config: CleanConfig, workers: int = 1) -> dict[str, Any]:
    """The dedup phase in its stages (components/clean/dedup_stages.py), here in local processes:
    exact duplicates per key-prefix partition, near-duplicate edges per band group, then one
    clustering that writes a drop list per shard ({row: "duplicate" | "near_duplicate"}); the
    first document in input order is kept. Returns each stage's figures (peak RSS included)."""
    paths = CleanPaths.of(output_uri, config)
    partitions = len(dedup_stages.partition_bounds(config.dedup_tasks))
    exact = _map(dedup_stages.exact_partition, [(p, config.dedup_tasks, n_shards, paths) for p in range(partitions)],
                 workers, "clean: exact dedup")  # fmt: skip
    near: list[dict] = []
    groups = None
    if config.near_dedup is not None:
        groups = len(dedup_stages.band_groups(config.near_dedup.bands_rows()[0], config.dedup_tasks))
        near = _map(dedup_stages.band_group, [(g, groups, n_shards, paths, config.near_dedup, config.dedup_tasks)
                                              for g in range(groups)], workers, "clean: near dedup")  # fmt: skip
    clustered = dedup_stages.cluster(n_shards, paths, config.dedup_tasks, groups)
    return {"exact": exact, "near": near, "cluster": clustered}


def task_figures(paths: CleanPaths, n_shards: int, config: CleanConfig) -> dict[str, float]:
    """Per task type, from the markers and sidecars the tasks wrote: the largest peak RSS in MiB
    (peak_rss_mb.<type>: filter, exact, near, cluster, write) and the filter tasks' slowest and
    overall documents and input bytes per second. Locally, tasks that share a process report
    that process's peak so far."""
    def peak(docs: list[dict]) -> float:
        return max((float(d.get("peak_rss_mb", 0.0)) for d in docs), default=0.0)

    filters = [json.loads(storage.read_text(paths.filter_marker(i))) for i in range(n_shards)]
    writes = [json.loads(storage.read_text(paths.write_marker(i))) for i in range(n_shards)]
    sidecar = lambda uri: json.loads(storage.read_text(minhash.sidecar_uri(uri)))  # noqa: E731
    exact = [sidecar(paths.exact_drops(p)) for p in range(len(dedup_stages.partition_bounds(config.dedup_tasks)))]
    near = []
    if config.near_dedup is not None:
        groups = len(dedup_stages.band_groups(config.near_dedup.bands_rows()[0], config.dedup_tasks))
        near = [sidecar(paths.near_edges(g)) for g in range(groups)]
    cluster = [json.loads(storage.read_text(paths.cluster_marker))] if storage.exists(paths.cluster_marker) else []
    seconds = sum(float(f.get("seconds", 0.0)) for f in filters)
    out = {f"peak_rss_mb.{name}": peak(docs) for name, docs in
           (("filter", filters), ("exact", exact), ("near", near), ("cluster", cluster), ("write", writes)) if docs}
    rates = [f for f in filters if "docs_per_s" in f]
    if rates:
        out["filter.docs_per_s_slowest"] = min(float(f["docs_per_s"]) for f in rates)
        out["filter.bytes_per_s_slowest"] = min(float(f["bytes_per_s"]) for f in rates)
    if seconds > 0:
        out["filter.docs_per_task_s"] = sum(f["stats"]["records_in"] for f in filters) / seconds
        out["filter.bytes_per_task_s"] = sum(float(f.get("read_bytes", 0)) for f in filters) / seconds
    return out


def dedup_one_task(n_shards: int, output_uri: str, config: CleanConfig) -> None:
    """The dedup phase as one task holding every key and signature (~0.5 KB per document): the
    reference the staged `dedup` is tested against. Writes the same drop lists."""
    paths = CleanPaths.of(output_uri, config)
    drop_lists = exact_duplicates([paths.keys(i) for i in range(n_shards)])
    if config.near_dedup is not None:
        files = [paths.signatures(i) for i in range(n_shards)]
        exclude = [drops.keys() for drops in drop_lists]
        for shard, row in sorted(minhash.find_duplicates(files, config.near_dedup, exclude=exclude)):
            drop_lists[shard].setdefault(row, "near_duplicate")
    for index, drops in enumerate(drop_lists):
        storage.write_text(paths.drop_list(index), json.dumps({str(r): drops[r] for r in sorted(drops)}))


def load_drop_list(paths: CleanPaths, index: int) -> dict[int, str]:
    """The dedup phase's drop list of shard `index`: {row in the staged shard: reason}."""
    return {int(row): reason for row, reason in json.loads(storage.read_text(paths.drop_list(index))).items()}


def collect(input_uri: str, output_uri: str, n_shards: int, config: CleanConfig, seconds: float = 0.0) -> CleanResult:
    """The collect phase: sum the per-shard stats, write samples, stats and the manifest.

    `seconds` is the step's wall time when it ran in one call (CleanResult.docs_per_s). Raises
    CleanError when nothing was kept (stats.json is written first, for inspection).
    """
    paths = CleanPaths.of(output_uri, config)
    stats = StepStats()
    writes = []
    shard_seconds = 0.0
    for index in range(n_shards):
        filtered = json.loads(storage.read_text(paths.filter_marker(index)))
        shard_seconds += filtered["seconds"]
        shard_stats = StepStats.model_validate(filtered["stats"])
        written = json.loads(storage.read_text(paths.write_marker(index)))
        writes.append(written)
        shard_seconds += written["seconds"]
        staged = shard_stats.kept
        for reason, count in written["dropped"].items():
            shard_stats.drop(reason, count)
            shard_stats.stage("dedup", reason, count)
        shard_stats.kept = staged - sum(written["dropped"].values())
        shard_stats.stage("dedup", "in", staged)
        shard_stats.stage("dedup", "out", shard_stats.kept)
        for lang, count in written["languages"].items():
            shard_stats.count(f"kept_lang_{lang}", count)
            shard_stats.language(lang, "kept", count)
        shard_stats.language("und", "kept", shard_stats.kept - sum(written["languages"].values()))  # no language ID
        for lang, reasons in written.get("dropped_languages", {}).items():
            for reason, count in reasons.items():
                shard_stats.language(lang, reason, count)
        stats = stats.merge(shard_stats)
    stats.check()
    infos = [ShardInfo.model_validate(info) for written in writes for info in written["shards"]]
    published = {info.uri for info in infos} | set(_write_samples(paths, n_shards, writes, config)) | {paths.languages}
    published |= {paths.quarantine(i) for i in range(n_shards) if storage.exists(paths.quarantine(i))}
    storage.write_text(paths.stats, json.dumps(stats.model_dump(), indent=2, ensure_ascii=False) + "\n")
    storage.write_text(paths.languages, "# Documents per language: kept and dropped by reason\n\n" + language_table(stats))
    if stats.kept == 0:
        _remove_stale(paths, published)
        raise _nothing_kept(input_uri, stats, paths)
    manifest = Manifest(
        kind="documents",
        root=output_uri,
        shards=infos,
        facts={"stats": stats.model_dump(), "text_field": OUTPUT_TEXT_FIELD},
    )
    manifest.save(paths.manifest)
    _remove_stale(paths, published | {paths.manifest})
    tasks = task_figures(paths, n_shards, config)
    tasks["peak_rss_mb.collect"] = dedup_stages.peak_rss_mb()
    input_bytes = sum(u.bytes for u in load_units(paths.units)) if storage.exists(paths.units) else None
    return CleanResult(manifest, paths.manifest, stats, seconds, shard_seconds, tasks, input_bytes)


def clean_corpus(input_uri: str, output_uri: str, config: CleanConfig) -> CleanResult:
    """Clean every shard under `input_uri` into `output_uri`: all five phases, shards in local processes."""
    started = time.perf_counter()
    items = plan_units(input_uri, output_uri, config)
    workers = min(config.workers or os.cpu_count() or 1, len(items))
    _map(filter_shard, [(it["index"], output_uri, config) for it in items], workers, "clean: filter")
    dedup(len(items), output_uri, config, workers)
    _map(write_shard, [(it["index"], output_uri, config) for it in items], workers, "clean: write")
    return collect(input_uri, output_uri, len(items), config, time.perf_counter() - started)


def _write_samples(paths: CleanPaths, n_shards: int, writes: list[dict], config: CleanConfig) -> list[str]:
    """Up to `dropped_samples` dropped documents per reason and language, first in input order."""
    samples: dict[str, list[Document]] = {}
    for index in range(n_shards):
        directory = paths.filter_samples(index)
        for uri in storage.list_files(directory) if storage.exists(directory) else []:
            reason = uri.rsplit("/", 1)[-1].removesuffix(".jsonl")
            # read as plain JSON: a sample may be empty text, which the corpus reader quarantines;
            # split on b"\n" only: splitlines() would cut a record at a U+2028 inside a string
            rows = shards.read_json_lines(uri)
            samples.setdefault(reason, []).extend(Document(r["id"], r["text"], r["meta"]) for r in rows)
    for written in writes:
        for reason, docs in written["samples"].items():
            samples.setdefault(reason, []).extend(Document(d["id"], d["text"], d["meta"]) for d in docs)
    uris = []
    for reason, docs in sorted(samples.items()):
        uris.append(paths.dropped(reason))
        by_language: dict[str, list[Document]] = {}
        for doc in docs:
            bucket = by_language.setdefault(doc.meta.get("lang", "und"), [])
            if len(bucket) < config.dropped_samples:
                bucket.append(doc)
        shards.write_documents(uris[-1], [doc for lang in sorted(by_language) for doc in by_language[lang]])
    return uris


def _remove_stale(paths: CleanPaths, published: set[str]) -> None:
    """Delete files a previous run left under our published folders (local outputs only)."""
    if storage.is_s3(paths.output_uri):
        return  # storage has no delete; the manifest lists exactly this run's shards
    root = storage.local_path(paths.output_uri)
    for sub in OUTPUT_DIRS:
        for path in (root / sub).glob("*") if (root / sub).is_dir() else ():
            if path.is_file() and str(path) not in published:
                path.unlink()
    if paths.manifest not in published:
        storage.local_path(paths.manifest).unlink(missing_ok=True)


def _nothing_kept(input_uri: str, stats: StepStats, paths: CleanPaths) -> CleanError:
    if stats.records_in == 0:
        return CleanError(f"empty corpus: {input_uri!r} holds no records; check the input path and its files")
    reasons = {**stats.dropped, **{f"quarantined:{k}": v for k, v in stats.quarantined.items()}}
    return CleanError(
        f"all {stats.records_in} records of {input_uri!r} were dropped or quarantined: {reasons}; "
        f"samples are under {paths.dropped_dir} and {paths.quarantine_dir} (check text_field/id_field and min_chars/max_chars)"
    )
