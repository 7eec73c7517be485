"""Tokenise documents to a flat spill file, then pack them into fixed-length sequences.

Memory stays bounded by one shard of sequences plus three numbers per document: the token
stream lives in a temporary file and is read back through a memory map in shuffled order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
from tokenizers import Tokenizer

TOKEN_DTYPE = np.int32
ENCODE_BATCH = 512


@dataclass
class TokenSpill:
    """Every document's ids + EOS, back to back on disk, with per-document offsets."""

    path: Path
    offsets: np.ndarray  # int64 [n_docs]
    lengths: np.ndarray  # int64 [n_docs], EOS included
    order_keys: np.ndarray  # float64 [n_docs]: documents are packed in ascending order of this

    @property
    def documents(self) -> int:
        return int(self.lengths.size)

    @property
    def tokens(self) -> int:
        return int(self.lengths.sum())


def tokenize_to_spill(
    docs: Iterable[tuple[str, float]],
    tokenizer: Tokenizer,
    eos_id: int,
    path: Path,
    observe: Callable[[int], None] | None = None,
) -> TokenSpill:
    """Encode (text, order key) pairs in batches; append ids + EOS to `path` as int32.

    `observe`, when given, is called once per document with its token count (EOS excluded),
    in the order the documents were read.
    """
    offsets: list[int] = []
    lengths: list[int] = []
    keys: list[float] = []
    position = 0
    with open(path, "wb") as out:

        def flush(batch: list[str]) -> None:
            nonlocal position
            for enc in tokenizer.encode_batch(batch, add_special_tokens=False):
                if observe is not None:
                    observe(len(enc.ids))
                ids = np.asarray(enc.ids + [eos_id], dtype=TOKEN_DTYPE)
                out.write(ids.tobytes())
                offsets.append(position)
                lengths.append(ids.size)
                position += ids.size

        batch: list[str] = []
        for text, key in docs:
            batch.append(text)
            keys.append(key)
            if len(batch) >= ENCODE_BATCH:
                flush(batch)
                batch = []
        if batch:
            flush(batch)
    return TokenSpill(
        path=path,
        offsets=np.asarray(offsets, dtype=np.int64),
        lengths=np.asarray(lengths, dtype=np.int64),
        order_keys=np.asarray(keys, dtype=np.float64),
    )


@dataclass
class PackStats:
    sequences: int
    packed_tokens: int
    dropped_tokens: int
    shards: int


def pack_sequences(
    spill: TokenSpill, *, seq_len: int, shard_sequences: int, write_shard: Callable[[int, np.ndarray], None]
) -> PackStats:
    """Concatenate documents in order-key order and cut exact `seq_len` rows.

    Rows go out in shards of at most `shard_sequences`; only the final partial row is dropped.
    """
    order = np.argsort(spill.order_keys, kind="stable")
    tokens = np.memmap(spill.path, dtype=TOKEN_DTYPE, mode="r") if spill.tokens else np.empty(0, TOKEN_DTYPE)
    buffer = np.empty(shard_sequences * seq_len, dtype=TOKEN_DTYPE)
    fill = sequences = shards = 0
    for i in order:
        doc = tokens[spill.offsets[i] : spill.offsets[i] + spill.lengths[i]]
        pos = 0
        while pos < doc.size:
            take = min(doc.size - pos, buffer.size - fill)
            buffer[fill : fill + take] = doc[pos : pos + take]
            fill += take
            pos += take
            if fill == buffer.size:
                write_shard(shards, buffer.reshape(-1, seq_len))
                sequences += shard_sequences
                shards += 1
                fill = 0
    full_rows = fill // seq_len
    if full_rows:
        write_shard(shards, buffer[: full_rows * seq_len].reshape(-1, seq_len))
        sequences += full_rows
        shards += 1
    del tokens
    return PackStats(
        sequences=sequences,
        packed_tokens=sequences * seq_len,
        dropped_tokens=fill - full_rows * seq_len,
        shards=shards,
    )
