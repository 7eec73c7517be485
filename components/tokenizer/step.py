"""The tokenizer step: held-out split → BPE on the train side → tokenise and pack.

Output layout under `output_uri`:

    eval/part-00000.jsonl.gz   held-out documents (sorted by split hash)
    eval/manifest.json         kind="documents"; its digest is the eval set's identity
    tokenizer/                 PreTrainedTokenizerFast.save_pretrained (tokenizer.json, ...)
    train/part-NNNNN.npy       int32 [n, seq_len] packed sequences
    manifest.json              kind="packed-tokens", written last
"""

from __future__ import annotations

import hashlib
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from components import shards as shard_io
from components import storage
from components.manifest import Manifest, ShardInfo, shard_info
from components.tokenizer.config import TokenizerConfig
from components.tokenizer.fertility import Fertility
from components.tokenizer.pack import pack_sequences, tokenize_to_spill
from components.tokenizer.split import eval_order, select_eval, unit_hash
from components.tokenizer.train_bpe import EOS_TOKEN, train_bpe


class NotEnoughDataError(ValueError):
    """The corpus is too small for the configured step; the message says what to change."""


@dataclass
class TokenizeResult:
    manifest: Manifest
    manifest_uri: str
    metrics: dict[str, float]  # includes Fertility.metrics(): per-language and per-script fertility
    fertility: Fertility = field(default_factory=Fertility)  # training side, EOS excluded


def pretrained_tokenizer(uri: str):
    """The tokenizer of a base model; it must be a fast tokenizer with an EOS token to pack with."""
    from transformers import AutoTokenizer

    from components.hf_model import fetch_model_dir

    with tempfile.TemporaryDirectory(prefix="homegrown-base-") as tmp:
        tokenizer = AutoTokenizer.from_pretrained(fetch_model_dir(uri, Path(tmp)), trust_remote_code=False)
    if getattr(tokenizer, "backend_tokenizer", None) is None:
        raise ValueError(f"{uri}: its tokenizer is not a fast (tokenizers) tokenizer; save it with tokenizer.json")
    if tokenizer.eos_token_id is None:
        raise ValueError(f"{uri}: its tokenizer has no EOS token to separate packed documents; set eos_token")
    return tokenizer


def build_tokenizer_and_pack(
    documents_manifest_uri: str, output_uri: str, config: TokenizerConfig, pretrained_uri: str | None = None
) -> TokenizeResult:
    """pretrained_uri: a base model (models:/, s3://, local dir) whose tokenizer is used instead of
    training one; config.vocab_size and the BPE settings then do not apply.

    The result's metrics hold the step's counts and, per language and per script of the training
    documents, bytes per token and tokens per character/word (components/tokenizer/fertility.py)."""
    started = time.perf_counter()
    source = Manifest.load(documents_manifest_uri)
    if source.kind != "documents":
        raise ValueError(f"{documents_manifest_uri}: expected a 'documents' manifest, got kind={source.kind!r}")
    shard_uris = [s.uri for s in source.shards]

    def documents():
        return shard_io.iter_texts(shard_uris)

    # pass 1: decide the held-out set before anything sees the data
    selection = select_eval(
        documents(),
        seed=config.seed,
        eval_fraction=config.eval_fraction,
        max_documents=config.eval_max_documents,
        min_documents=config.eval_min_documents,
    )
    train_count = selection.scanned - len(selection)
    if train_count == 0:
        raise NotEnoughDataError(
            f"{documents_manifest_uri}: {selection.scanned} document(s) in, none left for training after the "
            f"held-out split; add documents (or lower eval_min_documents)"
        )

    # pass 2: train the tokenizer on the train side only (or take the base model's)
    if pretrained_uri:
        tokenizer = pretrained_tokenizer(pretrained_uri)
        eos_id = tokenizer.eos_token_id
    else:
        train_texts = (doc.text for held_out, doc, _ in selection.partition(documents()) if not held_out)
        tokenizer = train_bpe(
            train_texts,
            vocab_size=config.vocab_size,
            min_frequency=config.min_frequency,
            min_vocab_fill=config.min_vocab_fill,
            pre_tokenizer=config.pre_tokenizer,
            special_tokens=config.special_tokens,
        )
        eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)

    with tempfile.TemporaryDirectory(prefix="homegrown-tokenize-") as tmp:
        # pass 3: tokenise train documents to a spill file; keep the (small, capped) eval side
        eval_docs = []
        train_bytes = 0
        fertility = Fertility()
        # (text, meta) of documents read but not yet encoded: at most one encode batch
        awaiting_count: deque = deque()

        def train_side():
            nonlocal train_bytes
            for held_out, doc, key in selection.partition(documents()):
                if held_out:
                    eval_docs.append((eval_order(config.seed, key), doc))
                else:
                    train_bytes += len(doc.text.encode("utf-8"))
                    awaiting_count.append((doc.text, doc.meta))
                    yield doc.text, unit_hash(config.seed, "pack", key)

        spill = tokenize_to_spill(
            train_side(),
            tokenizer.backend_tokenizer,
            eos_id,
            Path(tmp) / "tokens.bin",
            observe=lambda tokens: fertility.add(*awaiting_count.popleft(), tokens),
        )
        if spill.tokens < config.seq_len:
            raise NotEnoughDataError(
                f"{documents_manifest_uri}: {spill.documents} training document(s) give {spill.tokens} tokens "
                f"(EOS included), fewer than one sequence of seq_len={config.seq_len}; lower tokenizer.seq_len "
                f"or add documents"
            )

        # publish: eval set, tokenizer, packed shards, then the manifest last
        eval_docs.sort(key=lambda item: item[0])
        eval_uri = storage.join(output_uri, "eval", "part-00000.jsonl.gz")
        eval_count = shard_io.write_documents(eval_uri, (doc for _, doc in eval_docs))
        eval_manifest = Manifest(
            kind="documents",
            root=storage.join(output_uri, "eval"),
            shards=[shard_info(eval_uri, eval_count)],
            facts={"role": "held-out-eval"},
        )
        eval_manifest_uri = storage.join(output_uri, "eval", "manifest.json")
        eval_manifest.save(eval_manifest_uri)

        tokenizer_dir = Path(tmp) / "tokenizer"
        tokenizer.save_pretrained(str(tokenizer_dir))
        tokenizer_uri = storage.join(output_uri, "tokenizer")
        storage.upload_dir(tokenizer_dir, tokenizer_uri)
        tokenizer_digest = hashlib.sha256((tokenizer_dir / "tokenizer.json").read_bytes()).hexdigest()

        train_shards: list[ShardInfo] = []

        def write_shard(index: int, rows: np.ndarray) -> None:
            uri = storage.join(output_uri, "train", f"part-{index:05d}.npy")
            with storage.open_write(uri) as handle:
                np.save(handle, np.ascontiguousarray(rows, dtype=np.int32), allow_pickle=False)
            train_shards.append(shard_info(uri, int(rows.shape[0])))

        packed = pack_sequences(
            spill, seq_len=config.seq_len, shard_sequences=config.shard_sequences, write_shard=write_shard
        )

    vocab_size = len(tokenizer)
    manifest = Manifest(
        kind="packed-tokens",
        root=output_uri,
        shards=train_shards,
        facts={
            "tokenizer_uri": tokenizer_uri,
            "tokenizer_source": pretrained_uri or "trained",
            "tokenizer_digest": tokenizer_digest,
            "seq_len": config.seq_len,
            "vocab_size": vocab_size,
            "eos_token_id": eos_id,
            "train_documents": spill.documents,
            "train_tokens": spill.tokens,
            "train_sequences": packed.sequences,
            "eval_manifest_uri": eval_manifest_uri,
            "eval_documents": eval_count,
            "eval_digest": eval_manifest.digest,
            "source_manifest_digest": source.digest,
        },
    )
    manifest_uri = storage.join(output_uri, "manifest.json")
    manifest.save(manifest_uri)

    seconds = time.perf_counter() - started
    text_tokens = spill.tokens - spill.documents  # EOS excluded
    metrics = {
        "documents_in": selection.scanned,
        "train_documents": spill.documents,
        "eval_documents": eval_count,
        "vocab_size": vocab_size,
        "vocab_size_requested": config.vocab_size,
        "train_bytes": train_bytes,
        "train_tokens": spill.tokens,
        "train_sequences": packed.sequences,
        "packed_tokens": packed.packed_tokens,
        "dropped_remainder_tokens": packed.dropped_tokens,
        "train_shards": packed.shards,
        "bytes_per_token": train_bytes / text_tokens if text_tokens else 0.0,
        "seconds": seconds,
        "tokens_per_s": spill.tokens / seconds if seconds > 0 else 0.0,
        **fertility.metrics(),
    }
    return TokenizeResult(
        manifest=manifest,
        manifest_uri=manifest_uri,
        metrics={k: float(v) for k, v in metrics.items()},
        fertility=fertility,
    )
