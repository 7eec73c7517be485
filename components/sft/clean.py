"""Clean a set of instruction conversations: the corpus clean step's machinery, per conversation.

    result = clean_conversations("s3://bucket/chat/", "runs/x/sft-data", SftDataConfig())

One process, streaming: memory holds the exact-dedup keys (16 bytes per conversation), the MinHash
signatures of the prompts (near_dedup.num_perm × 4 bytes per conversation), the held-out set
(at most eval_max_conversations) and the dropped samples, never the conversations themselves.

  read      every file under input_uri (components.clean.clean.input_shards) → Conversation or
            Quarantined (formats.py; the reader's own reasons and formats.QUARANTINE_REASONS)
  stages    per conversation, in order (counted in stats.stages like the corpus stages):
            normalise  every turn: mojibake repair, Unicode form, spacing (components.clean.normalize)
            length     empty_turn (nothing left after normalising), turn_too_long, conversation_too_long
            langid     the user + assistant text (Conversation.text) → meta lang/script
                       (the clean step's own stage: components.clean.stages.langid_stage)
            pii        every turn masked, phones read in the conversation's language (clean.pii.mask_pii)
            exact_dedup  the prompt (system turn + first user turn) seen before → duplicate
  near_dedup  MinHash LSH over the survivors' prompts (components.clean.minhash) → near_duplicate;
            each cluster keeps its first conversation in input order
  split     held out by conversation: (seed, id, sha256 of the messages) decides
            (components.tokenizer.split.select_eval), so it does not depend on file order and a
            conversation is never on both sides; split after dedup, so no near-duplicate prompt
            straddles train and eval
Output under `output_uri`:
  shards/part-JJJJJ.jsonl.gz    training conversations, canonical form (formats.Conversation.to_dict)
  eval/part-00000.jsonl.gz      held-out conversations, sorted by split hash (input order does not matter)
  eval/manifest.json            kind="conversations", facts role="held-out-eval": its digest is the eval set's identity
  manifest.json                 kind="conversations", facts: stats, split counts, eval manifest URI and digest
  stats.json                    records_in = kept + dropped + quarantined (kept = train + eval), per stage too
  dropped/<reason>.jsonl        up to dropped_samples dropped conversations per reason
  quarantine/part-IIIII.jsonl   every quarantined record of input file I: source, reason, raw, detail
"""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import numpy as np

from components import shards, storage
from components.clean import minhash
from components.clean.clean import CleanError, check_output_outside_input, input_shards
from components.clean.dedup import text_key
from components.clean.normalize import normalize, repair_mojibake
from components.clean.pii import PiiConfig, mask_pii
from components.clean.stages import langid_stage, run_stages
from components.manifest import Manifest, ShardInfo, shard_info
from components.sft.config import SftDataConfig
from components.sft.formats import Conversation, iter_conversations, read_conversations
from components.shards import Document, Quarantined
from components.stats import StepStats
from components.tokenizer.split import eval_order, select_eval

KIND = "conversations"
PUBLISHED_DIRS = ("shards", "eval", "dropped", "quarantine")  # folders a rerun tidies (local outputs)

Stage = Callable[[Conversation], "str | None"]


class SftDataError(CleanError):
    """The SFT data step cannot run or produced nothing usable; the message says what to change."""


@dataclass
class SftDataResult:
    manifest: Manifest
    manifest_uri: str
    eval_manifest: Manifest
    eval_manifest_uri: str
    stats: StepStats
    seconds: float = 0.0


# ---- stages ------------------------------------------------------------------------------------


def normalise_stage(config: SftDataConfig, stats: StepStats) -> Stage:
    def stage(conv: Conversation) -> str | None:
        for message in conv.messages:
            text = message["content"]
            if config.fix_mojibake:
                repaired = repair_mojibake(text)
                stats.count("mojibake_repaired", repaired != text)
                text = repaired
            message["content"] = normalize(text, config.normalization)
        return None

    return stage


def length_stage(config: SftDataConfig, stats: StepStats) -> Stage:
    def stage(conv: Conversation) -> str | None:
        lengths = [len(m["content"]) for m in conv.messages]
        if min(lengths) == 0:
            return "empty_turn"
        if max(lengths) > config.max_turn_chars:
            return "turn_too_long"
        if sum(lengths) > config.max_conversation_chars:
            return "conversation_too_long"
        return None

    return stage


def pii_stage(config: PiiConfig, stats: StepStats) -> Stage:
    def stage(conv: Conversation) -> str | None:
        for message in conv.messages:
            message["content"], counts = mask_pii(message["content"], config, lang=conv.meta.get("lang"))
            for kind, n in counts.items():
                stats.count(f"pii_{kind}", n)
                stats.count(f"pii_{kind}_in_{message['role']}", n)
        return None

    return stage


def prompt_key(conv: Conversation) -> bytes:
    """The exact-dedup key of a conversation's prompt: dedup.text_key of the system turn and the first
    user turn, joined by NUL (which normalised text cannot hold as a separator of its own)."""
    system = conv.messages[0]["content"] if conv.messages[0]["role"] == "system" else ""
    user = next(m["content"] for m in conv.messages if m["role"] == "user")
    return text_key(f"{system}\0{user}")


def exact_dedup_stage(seen: set[bytes]) -> Stage:
    def stage(conv: Conversation) -> str | None:
        key = prompt_key(conv)
        if key in seen:
            return "duplicate"
        seen.add(key)
        return None

    return stage


def build_stages(config: SftDataConfig, stats: StepStats) -> list[tuple[str, Stage]]:
    """(name, stage) in order: normalise, length, langid (if on), pii (if on), exact_dedup (if on)."""
    stages: list[tuple[str, Stage]] = [("normalise", normalise_stage(config, stats)), ("length", length_stage(config, stats))]
    if config.langid is not None:
        stages.append(("langid", langid_stage(config.langid, stats)))  # type: ignore[arg-type]  # reads .text, writes .meta
    if config.pii is not None:
        stages.append(("pii", pii_stage(config.pii, stats)))
    if config.exact_dedup:
        stages.append(("exact_dedup", exact_dedup_stage(set())))
    return stages


# ---- the step ----------------------------------------------------------------------------------


def _quarantine_row(item: Quarantined) -> bytes:
    row = {"source": item.source, "reason": item.reason, "raw": item.raw}
    if item.detail:
        row["detail"] = item.detail
    return json.dumps(row, ensure_ascii=False).encode("utf-8") + b"\n"


def _publish(spool: BinaryIO, uri: str) -> bool:
    """Copy what was spooled to `uri`, if anything was; whether it was."""
    if not spool.tell():
        return False
    spool.seek(0)
    with storage.open_write(uri) as out:
        shutil.copyfileobj(spool, out)
    return True


class _Samples:
    """Up to `limit` dropped conversations per reason, turns cut to `max_chars` (a too-long one may be megabytes)."""

    def __init__(self, limit: int, max_chars: int):
        self.limit, self.max_chars, self.rows = limit, max_chars, {}

    def add(self, conv: Conversation, reason: str) -> None:
        bucket = self.rows.setdefault(reason, [])
        if len(bucket) >= self.limit:
            return
        messages = [{**m, "content": m["content"][: self.max_chars]} for m in conv.messages]
        meta = {**conv.meta, "drop_reason": reason}
        if messages != conv.messages:
            meta["sample_cut_to_chars"] = self.max_chars
        bucket.append({"id": conv.id, "messages": messages, "meta": meta})


def _filter(
    files: list[str], output_uri: str, staged_uri: str, config: SftDataConfig, stats: StepStats, samples: _Samples
) -> list[str]:
    """Read every file through the stages into `staged_uri`; the quarantine files written."""
    stages = build_stages(config, stats)
    published = []

    def survivors() -> Iterator[dict]:
        for index, uri in enumerate(files):
            with tempfile.SpooledTemporaryFile(max_size=1 << 20) as quarantined:
                for item in read_conversations(uri, config.format, config.id_field, config.max_line_bytes):
                    stats.records_in += 1
                    if isinstance(item, Quarantined):
                        stats.quarantine(item.reason)
                        quarantined.write(_quarantine_row(item))
                        continue
                    reason = run_stages(item, stages, stats)  # type: ignore[arg-type]
                    if reason is not None:
                        stats.drop(reason)
                        samples.add(item, reason)
                        continue
                    yield item.to_dict()
                target = storage.join(output_uri, "quarantine", f"part-{index:05d}.jsonl")
                if _publish(quarantined, target):
                    published.append(target)

    try:
        staged = shards.write_records(staged_uri, survivors())
    except shards.ShardFormatError as exc:
        raise SftDataError(str(exc)) from None
    stats.kept = staged
    return published


def _near_duplicates(staged_uri: str, config: SftDataConfig, stats: StepStats) -> set[int]:
    """Rows of the staged file that are near-duplicates (by prompt) of an earlier one."""
    if config.near_dedup is None:
        return set()
    prompts = ((c.id, c.prompt()) for c in iter_conversations([staged_uri]))
    _, signatures = minhash.compute_signatures(prompts, config.near_dedup)
    keep_of = minhash.cluster_signatures(signatures, config.near_dedup)
    rows = set(np.flatnonzero(keep_of != np.arange(len(keep_of))).tolist())
    stats.stage("near_dedup", "in", len(keep_of))
    stats.stage("near_dedup", "out", len(keep_of) - len(rows))
    stats.stage("near_dedup", "near_duplicate", len(rows))
    return rows


def _split_document(conv: Conversation) -> Document:
    """What the split hashes: the id and the messages (JSON, keys sorted), as a split.py document."""
    return Document(conv.id, json.dumps(conv.messages, ensure_ascii=False, sort_keys=True))


def clean_conversations(input_uri: str, output_uri: str, config: SftDataConfig) -> SftDataResult:
    """Read, clean, dedup and split the conversations under `input_uri` (a file or a directory; local
    or s3://) into `output_uri`: layout in this module's docstring.

    Returns the train and eval manifests and the stats (records_in = kept + dropped + quarantined;
    kept = train + eval conversations). Raises SftDataError (a CleanError) for a missing input, one
    without record files, an output inside the input, a file the reader cannot take, nothing kept
    (stats.json is written first, for inspection) or nothing left for training after the split.
    """
    started = time.perf_counter()
    try:
        files = input_shards(input_uri)
        check_output_outside_input(input_uri, output_uri)
    except CleanError as exc:
        raise SftDataError(str(exc)) from None
    stats = StepStats()
    samples = _Samples(config.dropped_samples, config.max_turn_chars)
    with tempfile.TemporaryDirectory(prefix="homegrown-sft-data-") as tmp:
        staged_uri = str(Path(tmp) / "staged.jsonl.gz")
        published = set(_filter(files, output_uri, staged_uri, config, stats, samples))
        near = _near_duplicates(staged_uri, config, stats)

        def kept(collect: bool = False) -> Iterator[Conversation]:
            for row, conv in enumerate(iter_conversations([staged_uri])):
                if row not in near:
                    yield conv
                elif collect:
                    samples.add(conv, "near_duplicate")

        if near:
            stats.drop("near_duplicate", len(near))
            stats.kept -= len(near)
        # pass 1 over the kept conversations: decide the held-out set; pass 2: write both sides
        selection = select_eval(
            (_split_document(c) for c in kept()), seed=config.seed, eval_fraction=config.eval_fraction,
            max_documents=config.eval_max_conversations, min_documents=config.eval_min_conversations,
        )  # fmt: skip
        held_out: list[tuple[tuple, dict]] = []
        languages: dict[str, int] = {}

        def train_side() -> Iterator[dict]:
            for is_eval, doc, key in selection.partition(_split_pairs(kept(collect=True))):
                conv = doc.meta["conversation"]
                lang = conv.meta.get("lang")
                if lang is not None:
                    languages[lang] = languages.get(lang, 0) + 1
                if is_eval:
                    held_out.append((eval_order(config.seed, key), conv.to_dict()))
                else:
                    yield conv.to_dict()

        train = _write_shards(output_uri, train_side(), config.shard_max_records)
    published |= {info.uri for info in train}
    for lang, count in sorted(languages.items()):
        stats.count(f"kept_lang_{lang}", count)
    stats.count("split_train", sum(info.records for info in train))
    stats.count("split_eval", len(held_out))
    stats.check()
    published |= set(_write_samples(output_uri, samples))
    storage.write_text(storage.join(output_uri, "stats.json"), json.dumps(stats.model_dump(), indent=2, ensure_ascii=False) + "\n")
    if stats.kept == 0:
        _remove_stale(output_uri, published)
        raise _nothing_kept(input_uri, output_uri, stats)
    if not train:
        _remove_stale(output_uri, published)
        raise SftDataError(
            f"{input_uri}: {stats.kept} conversation(s) kept, none left for training after the held-out split; "
            f"add conversations (or lower eval_min_conversations)"
        )
    held_out.sort(key=lambda item: item[0])
    eval_uri = storage.join(output_uri, "eval", "part-00000.jsonl.gz")
    eval_count = shards.write_records(eval_uri, (conv for _, conv in held_out))
    eval_languages: dict[str, int] = {}
    for _, conv in held_out:
        if "lang" in conv["meta"]:
            eval_languages[conv["meta"]["lang"]] = eval_languages.get(conv["meta"]["lang"], 0) + 1
    eval_manifest = Manifest(
        kind=KIND, root=storage.join(output_uri, "eval"), shards=[shard_info(eval_uri, eval_count)],
        facts={"role": "held-out-eval", "seed": config.seed, "languages": dict(sorted(eval_languages.items()))},
    )  # fmt: skip
    eval_manifest_uri = storage.join(output_uri, "eval", "manifest.json")
    eval_manifest.save(eval_manifest_uri)
    published |= {eval_uri, eval_manifest_uri}
    manifest = Manifest(
        kind=KIND,
        root=output_uri,
        shards=train,
        facts={
            "stats": stats.model_dump(),
            "train_conversations": stats.counters["split_train"],
            "eval_conversations": eval_count,
            "eval_manifest_uri": eval_manifest_uri,
            "eval_digest": eval_manifest.digest,
            "seed": config.seed,
        },
    )
    manifest_uri = storage.join(output_uri, "manifest.json")
    manifest.save(manifest_uri)  # written last: a manifest means the step finished
    _remove_stale(output_uri, published | {manifest_uri})
    return SftDataResult(manifest, manifest_uri, eval_manifest, eval_manifest_uri, stats, time.perf_counter() - started)


def _split_pairs(convs: Iterator[Conversation]) -> Iterator[Document]:
    """Split documents carrying their conversation (in meta) through EvalSelection.partition."""
    for conv in convs:
        doc = _split_document(conv)
        doc.meta["conversation"] = conv
        yield doc


def _write_shards(output_uri: str, records: Iterator[dict], per_shard: int) -> list[ShardInfo]:
    infos = []
    for number in itertools.count():
        first = next(records, None)
        if first is None:
            return infos
        uri = storage.join(output_uri, "shards", f"part-{number:05d}.jsonl.gz")
        count = shards.write_records(uri, itertools.chain([first], itertools.islice(records, per_shard - 1)))
        infos.append(shard_info(uri, count))
    return infos


def _write_samples(output_uri: str, samples: _Samples) -> list[str]:
    uris = []
    for reason, rows in sorted(samples.rows.items()):
        uris.append(storage.join(output_uri, "dropped", f"{reason}.jsonl"))
        shards.write_records(uris[-1], rows)
    return uris


def _remove_stale(output_uri: str, published: set[str]) -> None:
    """Delete files a previous run left in the published folders (local outputs only: storage has no
    S3 delete, and the manifest lists exactly this run's shards)."""
    if storage.is_s3(output_uri):
        return
    root = storage.local_path(output_uri)
    for sub in PUBLISHED_DIRS:
        for path in (root / sub).glob("*") if (root / sub).is_dir() else ():
            if path.is_file() and str(path) not in published:
                path.unlink()
    manifest = storage.join(output_uri, "manifest.json")
    if manifest not in published:
        storage.local_path(manifest).unlink(missing_ok=True)


def _nothing_kept(input_uri: str, output_uri: str, stats: StepStats) -> SftDataError:
    if stats.records_in == 0:
        return SftDataError(f"{input_uri!r} holds no records; check the input path and its files")
    reasons = {**stats.dropped, **{f"quarantined:{k}": v for k, v in stats.quarantined.items()}}
    return SftDataError(
        f"all {stats.records_in} records of {input_uri!r} were dropped or quarantined: {reasons}; samples are under "
        f"{storage.join(output_uri, 'dropped')} and {storage.join(output_uri, 'quarantine')} (check format/id_field "
        f"and the length limits)"
    )
