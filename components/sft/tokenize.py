"""Tokenise and pack cleaned conversations for instruction tuning: the step between the SFT data
step (components/sft/clean.py) and the training worker (components/train/worker.py).

    result = tokenize_conversations("runs/x/sft-data/manifest.json", Path("base/"), "models:/base@champion",
                                    "runs/x/sft-packed", seq_len=2048)

Each training conversation is rendered with the chat template (template.chat_template_for: the
base tokenizer's own, else the default ChatML) and labelled on the assistant's tokens only
(masking.tokenise_conversation with max_length=seq_len); one it refuses is a counted drop by its
ConversationError reason (too_long, control_token_in_content, ...). The rest are packed into rows
of seq_len tokens that keep every conversation as if it ran alone (packing.pack_conversations).

Output under `output_uri`:
  shards/part-NNNNN.npz   four int32 [rows, seq_len] arrays in np.savez's layout (uncompressed
                          NAME.npy members; save_npz): input_ids, labels (IGNORE_INDEX -100 where
                          the loss reads nothing: other roles, the template's scaffolding, each
                          conversation's first token, padding), position_ids (restarting at 0 per
                          conversation) and segment_ids (1, 2, ... per conversation in its row, 0 for
                          padding); read with allow_pickle=False
  tokenizer/              the base tokenizer with `chat_template` set to the template trained with,
                          so the trained model carries it (the worker copies it beside the model)
  dropped/<reason>.jsonl  up to `dropped_samples` refused conversations per reason, meta.drop_detail
                          saying why
  stats.json              StepStats: records_in (conversations in) = kept (packed) + dropped by reason
  manifest.json           kind "sft-packed", written last (a manifest means the step finished);
                          facts in `tokenize_conversations`' docstring

Memory is bounded by a chunk, not by the data: conversations stream from the shards and are packed
a chunk at a time, `chunk_conversations` conversations or `chunk_tokens` tokens, whichever comes
first; each chunk becomes one shard. A chunk holds its token ids and labels as int32 arrays (8 bytes
a token) and its packed rows as four int64 arrays (32 bytes a token slot; best-fit decreasing
leaves rows well filled, so slots stay near the token count): with the default 2**21 tokens, about
100 MiB. Packing within a chunk costs little fill: only each chunk's last rows are part-empty.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from components import shards, storage
from components.manifest import Manifest, ShardInfo, shard_info
from components.sft.formats import Conversation, iter_conversations
from components.sft.masking import IGNORE_INDEX, ConversationError, TokenisedConversation, tokenise_conversation
from components.sft.packing import pack_conversations
from components.sft.template import chat_template_for
from components.stats import StepStats

KIND = "sft-packed"
CONVERSATIONS_KIND = "conversations"  # components.sft.clean.KIND (not imported: the worker imports this module)
ARRAYS = ("input_ids", "labels", "position_ids", "segment_ids")  # the arrays of every shard, each int32 [rows, seq_len]
CHUNK_CONVERSATIONS = 4096
CHUNK_TOKENS = 1 << 21
SAMPLE_CHARS = 2000  # a dropped sample's turns are cut to this many characters (a too-long one may be huge)


class SftPackError(ValueError):
    """The conversations cannot be tokenised and packed as given; the message says what to change."""


@dataclass
class SftPackResult:
    manifest: Manifest
    manifest_uri: str
    stats: StepStats
    metrics: dict[str, float] = field(default_factory=dict)  # flat figures for KFP Metrics / MLflow
    seconds: float = 0.0


def stop_token_ids(facts: dict[str, Any]) -> list[int]:
    """The ids generation must stop at for a model trained on an sft-packed manifest: its eos and
    the template's end-of-turn token (ChatML's <|im_end|>), deduplicated, in that order — what
    the saved model's generation_config.eos_token_id is set to."""
    ids = [facts.get("eos_token_id"), facts.get("end_of_turn_id")]
    return list(dict.fromkeys(int(i) for i in ids if i is not None))


def tokenize_conversations(
    conversations_uri: str,
    tokenizer_dir: Path,
    base_uri: str,
    output_uri: str,
    seq_len: int,
    end_of_turn: str | None = None,
    *,
    chunk_conversations: int = CHUNK_CONVERSATIONS,
    chunk_tokens: int = CHUNK_TOKENS,
    dropped_samples: int = 20,
) -> SftPackResult:
    """Tokenise, mask and pack the training conversations of `conversations_uri` (the SFT data step's
    manifest.json, kind "conversations"; local or s3://) into `output_uri` (layout: module docstring).

    tokenizer_dir: a local directory with the tokenizer of the model to fine-tune (loaded without
    remote code). base_uri: that model (a registered model, s3://, a local directory), recorded for
    the train step, which trains from it. end_of_turn: the base template's end-of-turn token
    (default the tokenizer's eos; the default ChatML template's is <|im_end|>).

    Manifest facts: seq_len, vocab_size (len(tokenizer)), eos_token_id, pad_token_id, end_of_turn,
    end_of_turn_id, chat_template_source ("base" or "default"), mask_method, tokenizer_uri,
    tokenizer_digest (sha256 of tokenizer.json), base_uri, eval_manifest_uri and eval_digest (the
    held-out conversations, passed on from the source manifest), source_manifest_digest,
    conversations_in, conversations_packed, dropped {reason: n}, rows, fill (share of token slots
    holding conversation tokens), tokens (conversation tokens, padding excluded), labelled_tokens
    (tokens the loss reads), stats (StepStats).

    Raises SftPackError for a manifest of another kind, the held-out set or one without
    eval_manifest_uri, seq_len below 2, a tokenizer without an eos token, and no conversation
    packed (stats.json and the dropped samples are written first, for inspection);
    template.ChatTemplateError when no chat template fits the tokenizer.
    """
    from transformers import AutoTokenizer

    started = time.perf_counter()
    if seq_len < 2:
        raise SftPackError(f"seq_len must be at least 2 tokens, got {seq_len}")
    source = _source_manifest(conversations_uri)
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), trust_remote_code=False)
    if tokenizer.eos_token_id is None:
        raise SftPackError(f"{tokenizer_dir}: the tokenizer has no eos token; set eos_token in its tokenizer_config.json")
    template = chat_template_for(tokenizer, end_of_turn)
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    manifest_uri = storage.join(output_uri, "manifest.json")
    if storage.exists(manifest_uri):  # a manifest means the step finished: not while it reruns
        storage.remove_file(manifest_uri)
    stats = StepStats()
    samples = _Samples(dropped_samples)
    packer = _Packer(output_uri, seq_len, pad_id, stats)
    buffer: list[TokenisedConversation] = []
    buffered_tokens = 0
    for conv in iter_conversations([s.uri for s in source.shards]):
        stats.records_in += 1
        try:
            tokenised = tokenise_conversation(
                tokenizer, conv.messages, max_length=seq_len, template=template, conversation_id=conv.id
            )
        except ConversationError as exc:
            stats.drop(exc.reason)
            samples.add(conv, exc.reason, str(exc))
            continue
        stats.kept += 1
        if (lang := conv.meta.get("lang")) is not None:
            stats.count(f"packed_lang_{lang}")
        # int32 arrays, not lists of Python ints (~36 bytes a token): what bounds a chunk's memory
        ids, labels = np.asarray(tokenised.input_ids, np.int32), np.asarray(tokenised.labels, np.int32)
        buffer.append(TokenisedConversation(ids, labels))  # type: ignore[arg-type]  # packing takes any sequence
        buffered_tokens += len(tokenised.input_ids)
        if len(buffer) >= chunk_conversations or buffered_tokens >= chunk_tokens:
            packer.pack(buffer)
            buffer, buffered_tokens = [], 0
    if buffer:
        packer.pack(buffer)
    stats.check()
    samples.write(output_uri)
    storage.write_text(storage.join(output_uri, "stats.json"), json.dumps(stats.model_dump(), indent=2, ensure_ascii=False) + "\n")
    if stats.kept == 0:
        raise _nothing_packed(conversations_uri, output_uri, seq_len, stats)

    with tempfile.TemporaryDirectory(prefix="homegrown-sft-tokenizer-") as tmp:
        saved = Path(tmp) / "tokenizer"
        tokenizer.chat_template = template.template
        tokenizer.save_pretrained(str(saved))
        tokenizer_uri = storage.join(output_uri, "tokenizer")
        storage.upload_dir(saved, tokenizer_uri)
        tokenizer_digest = hashlib.sha256((saved / "tokenizer.json").read_bytes()).hexdigest()

    slots = packer.rows * seq_len
    facts = {
        "seq_len": seq_len,
        "vocab_size": len(tokenizer),
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad_id,
        "end_of_turn": template.end_of_turn,
        "end_of_turn_id": tokenizer.convert_tokens_to_ids(template.end_of_turn),
        "chat_template_source": template.source,
        "mask_method": template.mask_method,
        "tokenizer_uri": tokenizer_uri,
        "tokenizer_digest": tokenizer_digest,
        "base_uri": base_uri,
        "eval_manifest_uri": source.facts["eval_manifest_uri"],
        "eval_digest": source.facts.get("eval_digest"),
        "source_manifest_digest": source.digest,
        "conversations_in": stats.records_in,
        "conversations_packed": stats.kept,
        "dropped": dict(sorted(stats.dropped.items())),
        "rows": packer.rows,
        "fill": packer.tokens / slots,
        "tokens": packer.tokens,
        "labelled_tokens": packer.labelled,
        "stats": stats.model_dump(),
    }
    manifest = Manifest(kind=KIND, root=output_uri, shards=packer.shards, facts=facts)
    _remove_stale(output_uri, {s.uri for s in packer.shards} | set(samples.uris))
    manifest.save(manifest_uri)  # last
    seconds = time.perf_counter() - started
    metrics = {
        **stats.as_metrics(),
        "rows": packer.rows,
        "fill": facts["fill"],
        "tokens": packer.tokens,
        "labelled_tokens": packer.labelled,
        "labelled_share": packer.labelled / slots,
        "shards": len(packer.shards),
        "seconds": seconds,
        "tokens_per_s": packer.tokens / seconds if seconds > 0 else 0.0,
    }
    return SftPackResult(manifest, manifest_uri, stats, {k: float(v) for k, v in metrics.items()}, seconds)


def _source_manifest(uri: str) -> Manifest:
    try:
        source = Manifest.load(uri)
    except storage.StorageError as exc:
        raise SftPackError(f"{uri}: cannot read the conversations manifest ({exc}); pass the manifest.json the SFT "
                           "data step wrote") from exc  # fmt: skip
    if source.kind != CONVERSATIONS_KIND:
        raise SftPackError(
            f"{uri}: a manifest of kind {source.kind!r}; tokenize_conversations reads the SFT data step's "
            f"{CONVERSATIONS_KIND!r} manifest (the manifest.json clean_conversations writes)"
        )
    if source.facts.get("role") == "held-out-eval":
        raise SftPackError(f"{uri}: the held-out evaluation conversations; pass the training manifest, the "
                           "manifest.json one level up, beside shards/")  # fmt: skip
    if "eval_manifest_uri" not in source.facts:
        raise SftPackError(f"{uri}: its facts have no 'eval_manifest_uri' (the held-out set the model is evaluated "
                           "on); rerun the SFT data step, which writes it")  # fmt: skip
    if not source.shards:
        raise SftPackError(f"{uri}: lists no shards: no training conversations")
    return source


class _Packer:
    """Packs chunks of tokenised conversations and writes each as one shard."""

    def __init__(self, output_uri: str, seq_len: int, pad_id: int, stats: StepStats):
        self.output_uri, self.seq_len, self.pad_id, self.stats = output_uri, seq_len, pad_id, stats
        self.shards: list[ShardInfo] = []
        self.rows = self.tokens = self.labelled = 0

    def pack(self, chunk: list[TokenisedConversation]) -> None:
        packed = pack_conversations(chunk, self.seq_len, self.pad_id)
        uri = storage.join(self.output_uri, "shards", f"part-{len(self.shards):05d}.npz")
        with storage.open_write(uri) as handle:
            save_npz(handle, {name: _int32(getattr(packed, name)) for name in ARRAYS})
        n = len(packed.rows)
        self.shards.append(shard_info(uri, n))
        self.rows += n
        self.tokens += int((packed.segment_ids > 0).sum())
        self.labelled += int((packed.labels != IGNORE_INDEX).sum())


def _int32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, dtype=np.int32)


def save_npz(handle: BinaryIO, arrays: dict[str, np.ndarray]) -> None:
    """np.savez's file (one uncompressed NAME.npy member per array; np.load reads it), but with a
    fixed member timestamp: the same rows give the same bytes, so the same shard digest on a rerun."""
    with zipfile.ZipFile(handle, "w", zipfile.ZIP_STORED) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, array, allow_pickle=False)


class _Samples:
    """Up to `limit` refused conversations per reason, turns cut to SAMPLE_CHARS characters."""

    def __init__(self, limit: int):
        self.limit = limit
        self.rows: dict[str, list[dict[str, Any]]] = {}
        self.uris: list[str] = []

    def add(self, conv: Conversation, reason: str, detail: str) -> None:
        bucket = self.rows.setdefault(reason, [])
        if len(bucket) >= self.limit:
            return
        messages = [{**m, "content": m["content"][:SAMPLE_CHARS]} if isinstance(m.get("content"), str) else m
                    for m in conv.messages]  # fmt: skip
        meta = {**conv.meta, "drop_reason": reason, "drop_detail": detail}
        if messages != conv.messages:
            meta["sample_cut_to_chars"] = SAMPLE_CHARS
        bucket.append({"id": conv.id, "messages": messages, "meta": meta})

    def write(self, output_uri: str) -> None:
        for reason, rows in sorted(self.rows.items()):
            self.uris.append(storage.join(output_uri, "dropped", f"{reason}.jsonl"))
            shards.write_records(self.uris[-1], rows)


def _remove_stale(output_uri: str, published: set[str]) -> None:
    """Delete shards and samples a previous run left (local outputs; the manifest lists exactly this run's)."""
    if storage.is_s3(output_uri):
        return
    root = storage.local_path(output_uri)
    keep = {storage.local_path(uri).resolve() for uri in published}
    for sub in ("shards", "dropped"):
        for path in (root / sub).glob("*") if (root / sub).is_dir() else ():
            if path.is_file() and path.resolve() not in keep:
                path.unlink()


def _nothing_packed(conversations_uri: str, output_uri: str, seq_len: int, stats: StepStats) -> SftPackError:
    if stats.records_in == 0:
        return SftPackError(f"{conversations_uri}: its shards hold no conversations; check the SFT data step's output")
    hint = f"; raise seq_len (now {seq_len}) or shorten the conversations" if "too_long" in stats.dropped else ""
    return SftPackError(
        f"{conversations_uri}: none of its {stats.records_in} conversation(s) could be trained on, dropped "
        f"{dict(sorted(stats.dropped.items()))}; samples with the reason are under "
        f"{storage.join(output_uri, 'dropped')}{hint}"
    )

