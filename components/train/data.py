"""The training data: the tokenizer step's packed shards as one indexable list of sequences,
the order ranks take them in, and where in that order a checkpoint left off.

A data position is (epoch, micro batch index within the epoch, per rank): with the seed and
the world size it names exactly which sequences every rank takes next.
"""

from __future__ import annotations

import io
from typing import Any, Iterator

import numpy as np
import torch

from components import storage
from components.manifest import Manifest
from components.train.config import TrainConfig


class PackedSequences:
    """The manifest's shards as one indexable list of int32 [seq_len] rows.

    Local shards are memory-mapped, so every rank shares the page cache rather than holding
    its own copy; s3:// shards are read into memory. Raises ValueError for a manifest that is
    not packed-tokens, lists no shards, or whose shards are not int32 [n, seq_len] of one width.
    """

    def __init__(self, manifest: Manifest):
        if manifest.kind != "packed-tokens":
            raise ValueError(f"expected a 'packed-tokens' manifest, got kind={manifest.kind!r}")
        if not manifest.shards:
            raise ValueError("the manifest lists no shards: nothing to train on")
        self.shards: list[np.ndarray] = []
        for shard in manifest.shards:
            if storage.is_s3(shard.uri):
                array = np.load(io.BytesIO(storage.read_bytes(shard.uri)), allow_pickle=False)
            else:
                array = np.load(storage.local_path(shard.uri), allow_pickle=False, mmap_mode="r")
            if array.ndim != 2 or array.dtype != np.int32:
                raise ValueError(f"{shard.uri}: expected int32 [n, seq_len], got {array.dtype} {array.shape}")
            self.shards.append(array)
        widths = {a.shape[1] for a in self.shards}
        if len(widths) != 1:
            raise ValueError(f"shards disagree on seq_len: {sorted(widths)}")
        self.seq_len = widths.pop()
        self.offsets = np.cumsum([0] + [len(a) for a in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, indices: np.ndarray) -> torch.Tensor:
        """Rows at global `indices`, as a LongTensor [len(indices), seq_len]."""
        shard_of = np.searchsorted(self.offsets, indices, side="right") - 1
        rows = [self.shards[s][i - self.offsets[s]] for s, i in zip(shard_of, indices)]
        return torch.from_numpy(np.stack(rows).astype(np.int64))

    def check(self, facts: dict[str, Any], train: TrainConfig, context_length: int, vocab_size: int, world: int) -> None:
        """Fail in setup, with what to change, rather than mid-run (ValueError). context_length:
        the model's longest sequence (hf_model.context_length)."""
        if facts.get("seq_len", self.seq_len) != self.seq_len:
            raise ValueError(f"manifest says seq_len={facts['seq_len']} but the shards hold {self.seq_len}")
        if self.seq_len > context_length:
            raise ValueError(
                f"seq_len ({self.seq_len}) exceeds the model's context length ({context_length}): raise "
                "model.n_positions (gpt2) or model.max_position_embeddings, or lower tokenizer.seq_len"
            )
        low = min(int(a.min()) for a in self.shards if a.size)
        high = max(int(a.max()) for a in self.shards if a.size)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids span [{low}, {high}], outside vocab_size {vocab_size}")
        per_pass = train.micro_batch_size * world
        if len(self) < per_pass:
            raise ValueError(
                f"only {len(self)} sequences, fewer than micro_batch_size x world_size = {per_pass}: "
                "tokenize more text or shrink the batch"
            )


def micro_batches(
    n: int, micro: int, rank: int, world: int, seed: int, epoch: int = 0, index: int = 0
) -> Iterator[np.ndarray]:
    """Sequence indices for this rank, micro batch by micro batch, forever.

    Each epoch is a permutation of all sequences drawn from (seed, epoch), cut to a multiple
    of micro * world and dealt round-robin to ranks (DistributedSampler's scheme). Same seed
    and world size, same order; no other randomness. (epoch, index) starts the stream at
    micro batch `index` of that epoch: where a checkpoint left off.
    """
    usable = n // (micro * world) * (micro * world)
    while True:
        order = np.random.default_rng([seed, epoch]).permutation(n)[:usable]
        mine = order[rank::world]
        for start in range(index * micro, len(mine), micro):
            yield mine[start : start + micro]
        index = 0
        epoch += 1


def data_position(micro_batches_taken: int, n: int, micro: int, world: int) -> tuple[int, int]:
    """(epoch, micro batch index within the epoch) after taking that many micro batches per rank."""
    per_epoch = n // (micro * world)
    return divmod(micro_batches_taken, per_epoch)


def remap_position(
    position: tuple[int, int], saved_world: int, world: int, micro: int
) -> tuple[tuple[int, int], int]:
    """A data position (epoch, micro batch index per rank) written by saved_world ranks, on
    world ranks: the same epoch and the same number of sequences taken in it, rounded up to a
    whole micro batch per rank. Returns the position and the sequences skipped by rounding."""
    epoch, index = position
    taken = index * micro * saved_world
    per_pass = micro * world
    new_index = -(-taken // per_pass)
    return (epoch, new_index), new_index * per_pass - taken
