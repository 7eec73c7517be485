"""How text is cut into words before byte-level BPE learns merges inside them.

BPE never merges across a pre-token boundary, so a split inside a written word caps how far
that word can ever be compressed. GPT-2's pattern (`' ?\\p{L}+'`, and Llama-3's / Qwen2's
`[^\\r\\n\\p{L}\\p{N}]?\\p{L}+`) counts letters only, not combining marks (`\\p{M}`): in
Devanagari, Bengali, Tamil, Thai, Myanmar, Khmer, Arabic with harakat or decomposed Latin every
vowel sign, virama, tone mark or accent starts a new pre-token, and no learned token can hold
a consonant with its vowel sign.

`WORDS_WITH_MARKS` keeps Llama-3's shape (cl100k_base in tiktoken) with three changes:

- letters and marks form words together, `[\\p{L}\\p{M}]+`, as GPT-4o's o200k_base does
  (tiktoken_ext/openai_public.py), and as Unicode word segmentation does (UAX #29 rule WB4:
  Extend characters, i.e. marks, never break a word);
- a zero-width non-joiner or joiner (U+200C/U+200D) after a letter or mark stays in the word
  (UAX #29 WB4 again): Persian writes `می‌خواهم` with a ZWNJ inside one word, Sinhala spells
  conjuncts with a ZWJ, older Malayalam text ends words with a chillu as consonant + virama +
  ZWJ. A joiner after a symbol (emoji ZWJ sequences) stays with the symbols around it, and
  marks after a symbol stay with it (an emoji and its variation selector U+FE0F);
- numbers split into single digits (`\\p{N}`, as LLaMA-1/2, Qwen2 and DeepSeek do) rather
  than Llama-3's groups of up to three: with the small vocabularies trained here
  (300-32,000) no merges are spent on up to 1,110 digit-group tokens, every number is
  segmented the same way whatever its frequency (arithmetic sees place value digit by digit),
  and the measured cost on the demo corpus is 0.04 % (2.8886 vs 2.8897 bytes per token at
  4,096 tokens; digits are 0.2 % of its text).

The `tokenizers` library does the splitting (`Split` with `behavior="isolated"` keeps every
character, so decoding stays lossless), then `ByteLevel(use_regex=False)` maps each piece to
its bytes. Tokenizers saved before this change carry their own GPT-2 pre-tokenizer in
tokenizer.json and load unchanged.
"""

from __future__ import annotations

from typing import Literal

from tokenizers import Regex, pre_tokenizers

PreTokenizerKind = Literal["words-with-marks", "gpt2"]

_WORD = r"[\p{L}\p{M}]+(?:[\x{200C}\x{200D}]+[\p{L}\p{M}]*)*"
WORDS_WITH_MARKS = "|".join(
    [
        r"(?i:'s|'t|'re|'ve|'m|'ll|'d)",  # English contractions, as GPT-2 and Llama-3
        rf"[^\r\n\p{{L}}\p{{M}}\p{{N}}]?{_WORD}",  # a word, with one leading space or punctuation
        r"\p{N}",  # one digit
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",  # punctuation and symbols, with their marks (emoji + U+FE0F)
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)


def build_pre_tokenizer(kind: PreTokenizerKind) -> pre_tokenizers.PreTokenizer:
    """The pre-tokenizer for `kind`.

    "words-with-marks": `WORDS_WITH_MARKS` via `Split(..., behavior="isolated")`, then byte-level
    mapping without a regex of its own. "gpt2": `ByteLevel(use_regex=True)`, GPT-2's pattern, as
    tokenizers trained here before the mark-aware pattern were; kept to reproduce them.
    Raises ValueError for any other kind.
    """
    if kind == "gpt2":
        return pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if kind == "words-with-marks":
        return pre_tokenizers.Sequence(
            [
                pre_tokenizers.Split(Regex(WORDS_WITH_MARKS), behavior="isolated", invert=False),
                pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            ]
        )
    raise ValueError(f"unknown pre-tokenizer {kind!r}; use 'words-with-marks' or 'gpt2'")
