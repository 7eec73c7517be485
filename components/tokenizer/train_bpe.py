"""Train a byte-level BPE tokenizer on a stream of texts and wrap it for transformers."""

from __future__ import annotations

from typing import Iterable, Sequence

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from components.tokenizer.config import EOS_TOKEN, check_special_tokens
from components.tokenizer.pretokenizer import PreTokenizerKind, build_pre_tokenizer


class VocabularyTooSmallError(ValueError):
    """The corpus supports fewer BPE merges than the configured vocabulary needs."""


def train_bpe(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int,
    min_vocab_fill: float = 0.0,
    pre_tokenizer: PreTokenizerKind = "words-with-marks",
    special_tokens: Sequence[str] = (),
) -> PreTrainedTokenizerFast:
    """Byte-level BPE (no prefix space, lossless) with `<|endoftext|>` as id 0.

    `special_tokens` (e.g. a chat template's `<|im_start|>`, `<|im_end|>`: components/sft/
    template.py) are reserved as ids 1, 2, ... in that order: each encodes to its one id wherever
    it occurs in a text, is never cut into bytes or merged, and counts towards `vocab_size` (the
    trainer learns that many fewer merges). None given: the tokenizer is exactly the one trained
    before the option existed. Raises ValueError for an empty, repeated or `<|endoftext|>` entry.

    `pre_tokenizer` chooses the word pattern merges stay inside (components/tokenizer/
    pretokenizer.py; the default keeps combining marks with their letters). The `tokenizers`
    trainer stops quietly when no pair is seen `min_frequency` times any more; a vocabulary
    below `min_vocab_fill * vocab_size` raises VocabularyTooSmallError instead of passing on.
    """
    reserved = check_special_tokens(special_tokens)
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = build_pre_tokenizer(pre_tokenizer)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        special_tokens=[EOS_TOKEN, *reserved],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    core.train_from_iterator(texts, trainer=trainer)
    actual = core.get_vocab_size()
    if actual < min_vocab_fill * vocab_size:
        raise VocabularyTooSmallError(
            f"the training documents only support a vocabulary of {actual} tokens but tokenizer.vocab_size="
            f"{vocab_size} was asked (min_vocab_fill={min_vocab_fill} needs at least "
            f"{int(-(-min_vocab_fill * vocab_size // 1))}): no more pairs occur min_frequency={min_frequency} "
            f"times. Lower tokenizer.vocab_size to {actual} or less, lower min_frequency, add data, "
            f"or lower min_vocab_fill to accept a smaller vocabulary."
        )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        eos_token=EOS_TOKEN,
        bos_token=EOS_TOKEN,
        unk_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        clean_up_tokenization_spaces=False,
        add_prefix_space=False,
        # marks them special for transformers too (decode(skip_special_tokens=True) drops them);
        # only when there are some, so that tokenizer_config.json stays as it was without
        **({"extra_special_tokens": reserved} if reserved else {}),
    )

