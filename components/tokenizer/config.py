from collections.abc import Sequence

from pydantic import Field, field_validator, model_validator

from components.config import Section
from components.tokenizer.pretokenizer import PreTokenizerKind

# id 0 of every tokenizer trained here: document separator, padding and unknown (train_bpe.py)
EOS_TOKEN = "<|endoftext|>"


def check_special_tokens(special_tokens: Sequence[str]) -> list[str]:
    """The reserved tokens as a list; ValueError naming the bad entry (empty, repeated,
    surrounded by whitespace, or the end-of-text token every tokenizer here has already)."""
    reserved = list(special_tokens)
    for token in reserved:
        if not isinstance(token, str) or not token or token != token.strip():
            raise ValueError(f"tokenizer.special_tokens: {token!r} is not a non-empty token without surrounding spaces")
        if token == EOS_TOKEN:
            raise ValueError(f"tokenizer.special_tokens: {EOS_TOKEN} is always reserved (id 0); leave it out")
        if reserved.count(token) > 1:
            raise ValueError(f"tokenizer.special_tokens: {token!r} is listed {reserved.count(token)} times")
    return reserved


class TokenizerConfig(Section):
    vocab_size: int = Field(4096, ge=300, le=1_000_000, description="BPE vocabulary size, 256 byte symbols included")
    min_frequency: int = Field(2, ge=1, description="a merge must occur this often to be learned")
    pre_tokenizer: PreTokenizerKind = Field(
        "words-with-marks",
        description="how text is cut into words before BPE: 'words-with-marks' keeps letters and combining marks "
        "(Indic vowel signs, Thai/Arabic marks, accents) in one word and splits numbers into single digits; "
        "'gpt2' is GPT-2's letters-only pattern, which cuts those words at every mark (the pattern of "
        "tokenizers trained here before 'words-with-marks'; choose it only to reproduce one)",
    )
    min_vocab_fill: float = Field(
        0.9,
        gt=0,
        le=1,
        description="fail when the corpus only supports a vocabulary smaller than this share of vocab_size "
        "(the BPE trainer silently stops early when it runs out of pairs seen min_frequency times)",
    )
    special_tokens: list[str] = Field(
        default_factory=list,
        description="tokens reserved whole in a tokenizer trained here, after <|endoftext|> (ids 1, 2, ...), "
        "e.g. a chat template's markers ['<|im_start|>', '<|im_end|>'] (components/sft/template.py "
        "CHATML_SPECIAL_TOKENS) so that instruction tuning never sees them cut into bytes; each takes one "
        "vocabulary slot. Default [] trains exactly today's tokenizer; ignored when the tokenizer comes "
        "from model.base",
    )
    seq_len: int = Field(128, ge=8, description="tokens per packed training sequence")
    shard_sequences: int = Field(
        65_536, ge=1, description="packed sequences per .npy shard (bounds each shard's size and the step's memory)"
    )
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="share of documents held out for evaluation")
    eval_max_documents: int = Field(500, ge=1, description="cap on held-out documents (keeps evaluation fast)")
    eval_min_documents: int = Field(
        1,
        ge=0,
        description="hold out at least this many documents even when eval_fraction rounds to fewer "
        "(never more than half the corpus); 0 allows an empty evaluation set",
    )
    seed: int = Field(0, description="seeds the held-out split and the order of packed sequences")

    @field_validator("special_tokens")
    @classmethod
    def _special_tokens(cls, value: list[str]) -> list[str]:
        return check_special_tokens(value)

    @model_validator(mode="after")
    def _eval_bounds(self) -> "TokenizerConfig":
        if self.eval_min_documents > self.eval_max_documents:
            raise ValueError(
                f"eval_min_documents={self.eval_min_documents} exceeds eval_max_documents={self.eval_max_documents}"
            )
        return self
