"""Pack tokenised conversations into fixed-length rows without letting them see each other.

A row of `seq_len` tokens holds whole conversations one after another, then padding. Three
things keep each conversation as if it ran alone:
- position_ids restart at 0 at every conversation (rotary/learned positions as alone);
- block_causal_mask gives a block-diagonal causal attention mask: token i attends to token j
  only when j <= i and both belong to the same conversation (padding is one more block, so no
  row of the mask is empty);
- the label of each conversation's first token is IGNORE_INDEX: a causal LM's loss predicts
  token i from logits at i - 1, which in a packed row is the previous conversation's last token.
  (Run alone, a first token is never predicted either, so nothing is lost.)

How the mask reaches the model (transformers 5.x, checked in masking_utils._preprocess_mask_arguments):
a 4-D `attention_mask` of shape [batch, 1, seq_len, seq_len] is taken as it is by every
model that builds its mask with masking_utils.create_causal_mask (the Llama family and gpt2
here), and added to the attention scores by both the "sdpa" and "eager" implementations: 0.0
where allowed, the dtype's most negative finite value where not (finite, not -inf, so an
all-masked row could never turn into NaN). Pass it with `position_ids`. It holds
batch x seq_len^2 values (seq_len 2048, batch 8, fp32: 128 MiB). flash_attention_2 takes no
4-D mask: there transformers reads the boundaries from restarting position_ids, as its
DataCollatorWithFlattening does (not used or tested here).

Packing, not padding: a packed row gives every labelled token the loss it has when its
conversation runs alone, measured on CPU in fp32 with the default small shapes of
components.train.architectures: largest difference 9.5e-7 (llama sdpa, qwen3 sdpa/eager),
4.8e-7 (llama eager, gpt2 sdpa/eager); tests/components/test_sft_template.py holds it under
1e-5. So packing is exact and wastes only the tail of each row.

Rows are filled best-fit decreasing (longest conversation first, into the fullest row it still
fits), deterministic for the same input; which conversations a row holds is returned with it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from components.sft.masking import IGNORE_INDEX, TokenisedConversation


class PackingError(ValueError):
    """Input that cannot be packed; the message names the conversation."""


@dataclass(frozen=True)
class PackedRows:
    """n rows of seq_len tokens, each array [n, seq_len] int64.

    segment_ids: 1, 2, ... for the conversations in a row in the order they sit, 0 for padding.
    rows: for each row, the indices (into the packed input) of its conversations, in that order.
    """

    input_ids: np.ndarray
    labels: np.ndarray
    position_ids: np.ndarray
    segment_ids: np.ndarray
    rows: list[list[int]]

    @property
    def fill(self) -> float:
        """Share of token slots holding conversation tokens (1 - padding share)."""
        return float((self.segment_ids > 0).mean()) if self.segment_ids.size else 0.0


def assign_rows(lengths: Sequence[int], seq_len: int) -> list[list[int]]:
    """Best-fit decreasing bin packing: indices of `lengths` per row, each row's total <= seq_len.

    Raises PackingError for a length over seq_len or below 1.
    """
    for index, length in enumerate(lengths):
        if not 1 <= length <= seq_len:
            raise PackingError(f"conversation {index}: {length} tokens does not fit a row of seq_len={seq_len}")
    rows: list[list[int]] = []
    free: list[tuple[int, int]] = []  # (room left, row index), sorted
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        at = bisect.bisect_left(free, (length, -1))
        if at == len(free):
            rows.append([index])
            room, row = seq_len - length, len(rows) - 1
        else:
            room, row = free.pop(at)
            rows[row].append(index)
            room -= length
        if room > 0:
            bisect.insort(free, (room, row))
    return rows


def pack_conversations(
    conversations: Sequence[TokenisedConversation], seq_len: int, pad_id: int
) -> PackedRows:
    """Pack whole conversations into rows of seq_len tokens (see the module docstring).

    pad_id: the token id written into the padding (its labels are IGNORE_INDEX, and no
    conversation attends to it). Raises PackingError for a conversation longer than seq_len
    (masking.tokenise_conversation with max_length=seq_len refuses those first) or with
    input_ids and labels of different lengths.
    """
    for index, conversation in enumerate(conversations):
        if len(conversation.input_ids) != len(conversation.labels):
            raise PackingError(
                f"conversation {index}: {len(conversation.input_ids)} input ids but {len(conversation.labels)} labels"
            )
    rows = assign_rows([len(c.input_ids) for c in conversations], seq_len)
    shape = (len(rows), seq_len)
    input_ids = np.full(shape, pad_id, dtype=np.int64)
    labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    position_ids = np.zeros(shape, dtype=np.int64)
    segment_ids = np.zeros(shape, dtype=np.int64)
    for r, members in enumerate(rows):
        at = 0
        for segment, index in enumerate(members, start=1):
            conversation = conversations[index]
            n = len(conversation.input_ids)
            input_ids[r, at : at + n] = conversation.input_ids
            labels[r, at : at + n] = conversation.labels
            labels[r, at] = IGNORE_INDEX  # would be predicted from the previous conversation
            position_ids[r, at : at + n] = np.arange(n)
            segment_ids[r, at : at + n] = segment
            at += n
        position_ids[r, at:] = np.arange(seq_len - at)
    return PackedRows(input_ids, labels, position_ids, segment_ids, rows)


def block_causal_mask(segment_ids, dtype=None):
    """The additive 4-D attention mask for packed rows: [batch, 1, seq_len, seq_len] of `dtype`
    (default torch.float32; use the model's compute dtype), 0.0 where query i may attend key j
    (j <= i, same segment id), torch.finfo(dtype).min elsewhere.

    segment_ids: [batch, seq_len] (numpy or torch) as PackedRows.segment_ids; conversations must
    sit in contiguous runs, as pack_conversations writes them.
    """
    import torch

    dtype = dtype or torch.float32
    segments = torch.as_tensor(segment_ids)
    if segments.dim() != 2:
        raise ValueError(f"segment_ids must be [batch, seq_len], got shape {tuple(segments.shape)}")
    length = segments.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=segments.device).tril()
    allowed = (segments[:, :, None] == segments[:, None, :]) & causal
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segments.device)
    mask.masked_fill_(~allowed, torch.finfo(dtype).min)
    return mask[:, None]
