"""The clean step: per-document stages on every shard, corpus-wide dedup, then final shards.

    clean_corpus("data/demo-corpus", "runs/x/clean", CleanConfig())

Three phases, so a cluster can fan each shard out to its own pod and a crash costs one shard:
  1. prepare (per shard, parallel): read → quarantine unreadable records → the stages of
     `stages.build_stages` (normalise, length, …), each drop with a reason → staged shard +
     dedup keys. A stats file written last marks the shard done; a rerun skips it.
  2. plan (once): exact duplicates across all shards → a drop list per shard.
  3. finalize (per shard, parallel): staged shard minus its drop list → final shards of at
     most `shard_max_records`; a marker file makes it resumable too.
Work files live under `work/<config digest>/`, so a rerun with another config starts afresh.

Output under `output_uri`:
  shards/part-IIIII-JJJ.jsonl.gz   kept documents {id, text, meta}
  manifest.json                    kind="documents", shard digests, facts: stats, text_field
  stats.json                       records_in = kept + dropped + quarantined, per stage too
  dropped/<reason>.jsonl           up to `dropped_samples` dropped documents per reason
  quarantine/part-IIIII.jsonl      every quarantined record of input shard I: source, reason, raw, detail
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
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Iterator

from components import shards, storage
from components.clean import minhash
from components.clean.config import CleanConfig
from components.clean.dedup import plan_exact, save_keys, text_key
from components.clean.stages import build_stages, run_stages
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


def _check_output_outside_input(input_uri: str, output_uri: str) -> None:
    inp, out = input_uri.rstrip("/") + "/", output_uri.rstrip("/") + "/"
    if storage.is_s3(inp) != storage.is_s3(out):
        return
    if not storage.is_s3(inp):
        inp = str(storage.local_path(inp).resolve()) + "/"
        out = str(storage.local_path(out).resolve()) + "/"
    if out.startswith(inp):
        raise CleanError(f"output {output_uri!r} is inside input {input_uri!r}: a rerun would read its own output; choose another output")


def work_root(output_uri: str, config: CleanConfig) -> str:
    digest = hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:12]
    return storage.join(output_uri, "work", digest)


def _part(index: int) -> str:
    return f"part-{index:05d}"


def _staged_uri(work: str, index: int) -> str:
    return storage.join(work, "staged", f"{_part(index)}.jsonl.gz")


def _signature_uri(work: str, index: int) -> str:
    return storage.join(work, "staged", f"{_part(index)}.minhash.npy")


# ---- phase 1: prepare one shard ------------------------------------------------------------


def prepare_shard(index: int, uri: str, work: str, output_uri: str, config: CleanConfig) -> StepStats:
    """Run the per-document stages over one input shard; resumable via its stats marker."""
    marker = storage.join(work, "staged", f"{_part(index)}.done.json")
    source = {"uri": uri, "fingerprint": storage.fingerprint(uri)}
    if storage.exists(marker):
        done = json.loads(storage.read_text(marker))
        if done["source"] == source:
            return StepStats.model_validate(done["stats"])
    started = time.perf_counter()
    stats = StepStats()
    stages = build_stages(config, stats)
    samples: dict[str, list[Document]] = {}
    keys: list[bytes] = []
    # spills to disk: a shard of a million undecodable lines does not fill memory
    with tempfile.SpooledTemporaryFile(max_size=1 << 20) as quarantined:

        def survivors() -> Iterator[Document]:
            for item in shards.read_documents(uri, config.text_field, config.id_field, config.max_line_bytes):
                stats.records_in += 1
                if isinstance(item, Quarantined):
                    stats.quarantine(item.reason)
                    quarantined.write(_quarantine_row(item).encode("utf-8") + b"\n")
                    continue
                reason = run_stages(item, stages, stats)
                if reason is not None:
                    stats.drop(reason)
                    bucket = samples.setdefault(reason, [])
                    if len(bucket) < config.dropped_samples:
                        bucket.append(_sample(item, reason, config.max_chars))
                    continue
                keys.append(text_key(item.text))
                yield item

        try:
            stats.kept = shards.write_documents(_staged_uri(work, index), survivors())
        except shards.ShardFormatError as exc:
            raise CleanError(str(exc)) from None
        _publish(quarantined, storage.join(output_uri, "quarantine", f"{_part(index)}.jsonl"))
    save_keys(storage.join(work, "staged", f"{_part(index)}.keys.npy"), keys)
    if config.near_dedup is not None:
        docs = ((d.id, d.text) for d in shards.iter_texts([_staged_uri(work, index)]))
        minhash.write_signatures(_part(index), docs, _signature_uri(work, index), config.near_dedup)
    for reason, docs in samples.items():
        shards.write_documents(storage.join(work, "dropped", _part(index), f"{reason}.jsonl"), docs)
    stats.check()
    # written last: marks the shard done for exactly this input file
    seconds = time.perf_counter() - started
    storage.write_text(marker, json.dumps({"source": source, "stats": stats.model_dump(), "seconds": seconds}))
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


# ---- phase 3: finalize one shard -----------------------------------------------------------


def finalize_shard(index: int, work: str, output_uri: str, drops: dict[int, str], config: CleanConfig) -> dict[str, Any]:
    """Write the staged shard minus its drop list as final shards; resumable via a marker."""
    marker = storage.join(work, "final", f"{_part(index)}.json")
    inputs = hashlib.sha256(
        (storage.read_text(storage.join(work, "staged", f"{_part(index)}.done.json"))
         + json.dumps(sorted(drops.items()))).encode()
    ).hexdigest()
    if storage.exists(marker):
        done = json.loads(storage.read_text(marker))
        if done["inputs"] == inputs:
            return done
    started = time.perf_counter()
    staged = shards.iter_texts([_staged_uri(work, index)])
    dropped: dict[str, int] = {}
    samples: dict[str, list[dict]] = {}

    languages: dict[str, int] = {}

    def kept() -> Iterator[Document]:
        for row, doc in enumerate(staged):
            reason = drops.get(row)
            if reason is None:
                if "lang" in doc.meta:
                    languages[doc.meta["lang"]] = languages.get(doc.meta["lang"], 0) + 1
                yield doc
                continue
            dropped[reason] = dropped.get(reason, 0) + 1
            bucket = samples.setdefault(reason, [])
            if len(bucket) < config.dropped_samples:
                bucket.append({"id": doc.id, "text": doc.text, "meta": {**doc.meta, "drop_reason": reason}})

    infos: list[dict] = []
    docs = kept()
    for part in itertools.count():
        first = next(docs, None)
        if first is None:
            break
        uri = storage.join(output_uri, "shards", f"{_part(index)}-{part:03d}.jsonl.gz")
        count = shards.write_documents(uri, itertools.chain([first], itertools.islice(docs, config.shard_max_records - 1)))
        infos.append(shard_info(uri, count).model_dump())
    result = {"inputs": inputs, "shards": infos, "dropped": dropped, "samples": samples, "languages": languages,
              "seconds": time.perf_counter() - started}
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


def plan_shards(input_uri: str, output_uri: str, config: CleanConfig) -> list[dict[str, Any]]:
    """Phase 0: the input shards, as the work items of phases 1 and 3 ({index, uri})."""
    shard_uris = input_shards(input_uri)
    _check_output_outside_input(input_uri, output_uri)
    return [{"index": i, "uri": uri} for i, uri in enumerate(shard_uris)]


def plan_dedup(n_shards: int, output_uri: str, config: CleanConfig) -> None:
    """Phase 2: corpus-wide duplicates → `work/plan/part-I.json` ({row: reason}) per shard."""
    work = work_root(output_uri, config)
    plan = plan_exact([storage.join(work, "staged", f"{_part(i)}.keys.npy") for i in range(n_shards)])
    if config.near_dedup is not None:
        files = [_signature_uri(work, i) for i in range(n_shards)]
        for shard, row in sorted(minhash.find_duplicates(files, config.near_dedup, exclude=[p.keys() for p in plan])):
            plan[shard].setdefault(row, "near_duplicate")
    for index, drops in enumerate(plan):
        storage.write_text(storage.join(work, "plan", f"{_part(index)}.json"), json.dumps(drops))


def load_plan(output_uri: str, index: int, config: CleanConfig) -> dict[int, str]:
    uri = storage.join(work_root(output_uri, config), "plan", f"{_part(index)}.json")
    return {int(row): reason for row, reason in json.loads(storage.read_text(uri)).items()}


def prepare(index: int, uri: str, output_uri: str, config: CleanConfig) -> StepStats:
    """Phase 1 for one shard (a KFP ParallelFor item on a cluster)."""
    return prepare_shard(index, uri, work_root(output_uri, config), output_uri, config)


def finalize(index: int, output_uri: str, config: CleanConfig) -> dict[str, Any]:
    """Phase 3 for one shard (a KFP ParallelFor item on a cluster)."""
    return finalize_shard(index, work_root(output_uri, config), output_uri, load_plan(output_uri, index, config), config)


def collect(input_uri: str, output_uri: str, n_shards: int, config: CleanConfig, seconds: float = 0.0) -> CleanResult:
    """Phase 4: sum the per-shard stats, write samples, stats and the manifest."""
    work = work_root(output_uri, config)
    stats = StepStats()
    finals = []
    shard_seconds = 0.0
    for index in range(n_shards):
        done = json.loads(storage.read_text(storage.join(work, "staged", f"{_part(index)}.done.json")))
        shard_seconds += done["seconds"]
        shard_stats = StepStats.model_validate(done["stats"])
        final = json.loads(storage.read_text(storage.join(work, "final", f"{_part(index)}.json")))
        finals.append(final)
        shard_seconds += final["seconds"]
        staged = shard_stats.kept
        for reason, count in final["dropped"].items():
            shard_stats.drop(reason, count)
            shard_stats.stage("dedup", reason, count)
        shard_stats.kept = staged - sum(final["dropped"].values())
        shard_stats.stage("dedup", "in", staged)
        shard_stats.stage("dedup", "out", shard_stats.kept)
        for lang, count in final["languages"].items():
            shard_stats.count(f"kept_lang_{lang}", count)
        stats = stats.merge(shard_stats)
    stats.check()
    infos = [ShardInfo.model_validate(info) for final in finals for info in final["shards"]]
    written = {info.uri for info in infos} | set(_write_samples(output_uri, work, n_shards, finals, config))
    written |= set(_quarantine_files(output_uri, n_shards))
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
    return CleanResult(manifest, manifest_uri, stats, seconds, shard_seconds)


def clean_corpus(input_uri: str, output_uri: str, config: CleanConfig) -> CleanResult:
    """Clean every shard under `input_uri` into `output_uri`, shards in local processes."""
    started = time.perf_counter()
    items = plan_shards(input_uri, output_uri, config)
    workers = min(config.workers or os.cpu_count() or 1, len(items))
    _map(prepare, [(it["index"], it["uri"], output_uri, config) for it in items], workers, "clean: stages")
    plan_dedup(len(items), output_uri, config)
    _map(finalize, [(it["index"], output_uri, config) for it in items], workers, "clean: write")
    return collect(input_uri, output_uri, len(items), config, time.perf_counter() - started)


def _write_samples(output_uri: str, work: str, n_shards: int, finals: list[dict], config: CleanConfig) -> list[str]:
    """Up to `dropped_samples` dropped documents per reason, first in input order."""
    samples: dict[str, list[Document]] = {}
    for index in range(n_shards):
        directory = storage.join(work, "dropped", _part(index))
        for uri in storage.list_files(directory) if storage.exists(directory) else []:
            reason = uri.rsplit("/", 1)[-1].removesuffix(".jsonl")
            # read as plain JSON: a sample may be empty text, which the corpus reader quarantines;
            # split on b"\n" only: splitlines() would cut a record at a U+2028 inside a string
            rows = shards.read_json_lines(uri)
            samples.setdefault(reason, []).extend(Document(r["id"], r["text"], r["meta"]) for r in rows)
    for final in finals:
        for reason, docs in final["samples"].items():
            samples.setdefault(reason, []).extend(Document(d["id"], d["text"], d["meta"]) for d in docs)
    uris = []
    for reason, docs in sorted(samples.items()):
        uris.append(storage.join(output_uri, "dropped", f"{reason}.jsonl"))
        shards.write_documents(uris[-1], docs[: config.dropped_samples])
    return uris


def _quarantine_files(output_uri: str, n_shards: int) -> list[str]:
    uris = [storage.join(output_uri, "quarantine", f"{_part(i)}.jsonl") for i in range(n_shards)]
    return [u for u in uris if storage.exists(u)]


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


def _nothing_kept(input_uri: str, stats: StepStats, output_uri: str) -> CleanError:
    if stats.records_in == 0:
        return CleanError(f"empty corpus: {input_uri!r} holds no records; check the input path and its files")
    reasons = {**stats.dropped, **{f"quarantined:{k}": v for k, v in stats.quarantined.items()}}
    return CleanError(
        f"all {stats.records_in} records of {input_uri!r} were dropped or quarantined: {reasons}; "
        f"samples are under {storage.join(output_uri, 'dropped')} and "
        f"{storage.join(output_uri, 'quarantine')} (check text_field/id_field and min_chars/max_chars)"
    )
