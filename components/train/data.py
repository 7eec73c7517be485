"""The training data: packed shards as one indexable list of rows, the order ranks take them
in, and where in that order a checkpoint left off.

Two kinds of manifest, one interface (`training_data` picks by manifest.kind; len, seq_len, take,
check), so the worker's loop does not know which it trains on:
- "packed-tokens" (components/tokenizer/step.py, pretraining): PackedSequences; take() gives
  {"input_ids", "labels"}, labels = input_ids (every next token is a target);
- "sft-packed" (components/sft/tokenize.py, instruction tuning): PackedConversations; take()
  gives {"input_ids", "labels", "position_ids", "segment_ids"}, labels IGNORE_INDEX (-100) but on
  the assistant's tokens, position ids restarting and segment ids numbering each conversation of a
  row (components/sft/packing.py). model.model_inputs turns either into the model's kwargs.
Every tensor is a LongTensor [micro batch rows, seq_len].

A data position is (epoch, micro batch index within the epoch, per rank): with the seed and
the world size it names exactly which rows every rank takes next.
"""

from __future__ import annotations

import io
import struct
import zipfile
from typing import Any, Iterator

import numpy as np
import torch

from components import storage
from components.manifest import Manifest
from components.sft.masking import IGNORE_INDEX
from components.sft.tokenize import ARRAYS as SFT_ARRAYS
from components.sft.tokenize import KIND as SFT_KIND
from components.train.config import TrainConfig

PRETRAIN_KIND = "packed-tokens"
KINDS = (PRETRAIN_KIND, SFT_KIND)  # the manifests the worker trains on

Batch = dict[str, torch.Tensor]


def training_data(manifest: Manifest) -> "PackedSequences | PackedConversations":
    """The manifest's rows: PackedSequences (packed-tokens) or PackedConversations (sft-packed).
    Raises ValueError naming the kinds it takes for any other."""
    if manifest.kind == PRETRAIN_KIND:
        return PackedSequences(manifest)
    if manifest.kind == SFT_KIND:
        return PackedConversations(manifest)
    raise ValueError(
        f"cannot train on a {manifest.kind!r} manifest: pass the tokenizer step's {PRETRAIN_KIND!r} manifest "
        f"(pretraining) or the SFT tokenize step's {SFT_KIND!r} one (instruction tuning)"
    )


def to_device(batch: Batch, device: torch.device | str) -> Batch:
    return {name: tensor.to(device) for name, tensor in batch.items()}


def labelled_tokens(batch: Batch) -> torch.Tensor:
    """How many of the batch's tokens the loss reads (a 0-d tensor): labels other than IGNORE_INDEX
    past each row's first position (a causal LM predicts token i from position i - 1)."""
    return (batch["labels"][:, 1:] != IGNORE_INDEX).sum()


class PackedSequences:
    """The manifest's shards as one indexable list of int32 [seq_len] rows.

    Local shards are memory-mapped, so every rank shares the page cache rather than holding
    its own copy; s3:// shards are read into memory. Raises ValueError for a manifest that is
    not packed-tokens, lists no shards, or whose shards are not int32 [n, seq_len] of one width.
    """

    def __init__(self, manifest: Manifest):
        if manifest.kind != PRETRAIN_KIND:
            raise ValueError(f"expected a {PRETRAIN_KIND!r} manifest, got kind={manifest.kind!r}")
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

    def take(self, indices: np.ndarray) -> Batch:
        """Rows at global `indices`: {"input_ids", "labels"}, the same LongTensor [len(indices), seq_len]
        (HF causal LMs shift the labels inside)."""
        tokens = _take(self.shards, self.offsets, indices)
        return {"input_ids": tokens, "labels": tokens}

    summary = ""  # nothing to add to the worker's first log line

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



class PackedConversations:
    """An sft-packed manifest's shards (components/sft/tokenize.py) as one indexable list of rows of
    whole conversations: input_ids, labels, position_ids and segment_ids, each int32 [seq_len].

    Local shards (np.savez, uncompressed) are memory-mapped like PackedSequences'; s3:// shards
    are read into memory. Raises ValueError for a manifest that is not sft-packed, lists no shards,
    or whose shards lack an array or hold arrays that are not int32 [n, seq_len] of one width.
    """

    def __init__(self, manifest: Manifest):
        if manifest.kind != SFT_KIND:
            raise ValueError(f"expected an {SFT_KIND!r} manifest, got kind={manifest.kind!r}")
        if not manifest.shards:
            raise ValueError("the manifest lists no shards: nothing to train on")
        self.facts = manifest.facts
        self.uris = [shard.uri for shard in manifest.shards]
        self.shards: list[dict[str, np.ndarray]] = []
        for shard in manifest.shards:
            arrays = _npz_arrays(shard.uri)
            missing = [name for name in SFT_ARRAYS if name not in arrays]
            if missing:
                raise ValueError(f"{shard.uri}: no {', '.join(missing)} array; expected {', '.join(SFT_ARRAYS)}")
            shapes = {arrays[name].shape for name in SFT_ARRAYS}
            for name in SFT_ARRAYS:
                array = arrays[name]
                if array.ndim != 2 or array.dtype != np.int32 or len(shapes) != 1:
                    raise ValueError(f"{shard.uri}: expected {', '.join(SFT_ARRAYS)} all int32 [n, seq_len] of one "
                                     f"shape, got {name} {array.dtype} {array.shape}")  # fmt: skip
            self.shards.append({name: arrays[name] for name in SFT_ARRAYS})
        widths = {a["input_ids"].shape[1] for a in self.shards}
        if len(widths) != 1:
            raise ValueError(f"shards disagree on seq_len: {sorted(widths)}")
        self.seq_len = widths.pop()
        self.offsets = np.cumsum([0] + [len(a["input_ids"]) for a in self.shards])

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def take(self, indices: np.ndarray) -> Batch:
        """Rows at global `indices`: {"input_ids", "labels", "position_ids", "segment_ids"}, each a
        LongTensor [len(indices), seq_len]."""
        return {name: _take([a[name] for a in self.shards], self.offsets, indices) for name in SFT_ARRAYS}

    def check(self, facts: dict[str, Any], train: TrainConfig, context_length: int, vocab_size: int, world: int) -> None:
        """Fail in setup, with what to change, rather than mid-run (ValueError): as PackedSequences.check,
        and labels must be IGNORE_INDEX or token ids, and every row must label a token (a micro batch
        of rows without one would have a 0/0, NaN, loss)."""
        if facts.get("seq_len", self.seq_len) != self.seq_len:
            raise ValueError(f"manifest says seq_len={facts['seq_len']} but the shards hold {self.seq_len}")
        if self.seq_len > context_length:
            raise ValueError(
                f"seq_len ({self.seq_len}) exceeds the model's context length ({context_length}): tokenise the "
                "conversations with a seq_len the base model takes"
            )
        low = min(int(a["input_ids"].min()) for a in self.shards)
        high = max(int(a["input_ids"].max()) for a in self.shards)
        if low < 0 or high >= vocab_size:
            raise ValueError(f"token ids span [{low}, {high}], outside vocab_size {vocab_size}: tokenise the "
                             "conversations with the tokenizer of the model trained")  # fmt: skip
        for uri, arrays in zip(self.uris, self.shards):
            labels = arrays["labels"]
            if ((labels != IGNORE_INDEX) & ((labels < 0) | (labels >= vocab_size))).any():
                raise ValueError(f"{uri}: labels outside vocab_size {vocab_size} (other than {IGNORE_INDEX})")
            unlabelled = np.flatnonzero(~(labels[:, 1:] != IGNORE_INDEX).any(axis=1))
            if unlabelled.size:
                raise ValueError(f"{uri}: row {int(unlabelled[0])} (and {unlabelled.size - 1} more) has no "
                                 "labelled token: its loss would be 0/0; re-run the SFT tokenize step")  # fmt: skip
        per_pass = train.micro_batch_size * world
        if len(self) < per_pass:
            raise ValueError(
                f"only {len(self)} packed rows, fewer than micro_batch_size x world_size = {per_pass}: "
                "add conversations, lower seq_len (fewer conversations a row) or shrink the batch"
            )

    @property
    def summary(self) -> str:
        """What the rows hold, for the worker's first log line."""
        facts = self.facts
        if "fill" not in facts:
            return ""
        slots = len(self) * self.seq_len
        return (f" conversations={facts.get('conversations_packed', 0):,} fill={facts['fill']:.1%} "
                f"labelled={facts.get('labelled_tokens', 0) / slots:.1%}")  # fmt: skip


def _take(arrays: list[np.ndarray], offsets: np.ndarray, indices: np.ndarray) -> torch.Tensor:
    """Rows at global `indices` of arrays laid end to end (offsets: their cumulative lengths), as a LongTensor."""
    shard_of = np.searchsorted(offsets, indices, side="right") - 1
    rows = [arrays[s][i - offsets[s]] for s, i in zip(shard_of, indices)]
    return torch.from_numpy(np.stack(rows).astype(np.int64))


def _npz_arrays(uri: str) -> dict[str, np.ndarray]:
    """The arrays of an .npz file. A local one written uncompressed (np.savez) is memory-mapped,
    member by member (np.load reads npz members whole); an s3:// or compressed one is read into memory."""
    if not storage.is_s3(uri):
        path = storage.local_path(uri)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
        if all(m.compress_type == zipfile.ZIP_STORED for m in members):
            return {m.filename.removesuffix(".npy"): _mmap_member(path, m) for m in members}
    with storage.open_read(uri) as handle:
        data = handle.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _mmap_member(path, member: zipfile.ZipInfo) -> np.ndarray:
    """One stored (uncompressed) .npy member of a zip, memory-mapped: past the member's local
    header (30 bytes, then its name and extra field) lies an ordinary .npy file."""
    with open(path, "rb") as handle:
        handle.seek(member.header_offset)
        header = handle.read(30)
        if header[:4] != b"PK\x03\x04":
            raise ValueError(f"{path}: member {member.filename} has no zip local header")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        handle.seek(member.header_offset + 30 + name_length + extra_length)
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"{path}: member {member.filename} is .npy format {version}; write it with np.savez")
        offset = handle.tell()
    if dtype.hasobject:
        raise ValueError(f"{path}: member {member.filename} holds Python objects; only numeric arrays are read")
    if not int(np.prod(shape)):
        return np.empty(shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")

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
