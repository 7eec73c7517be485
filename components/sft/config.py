"""Settings of the SFT data step (components/sft/clean.py): reading, cleaning, dedup and the held-out split.

Normalisation, language ID, PII masking and near-dedup take the corpus clean step's own settings
classes, so one change to them applies to both.
"""

from __future__ import annotations

from pydantic import Field, model_validator

from components.clean.langid import LangIdConfig
from components.clean.minhash_config import NearDedupConfig
from components.clean.normalize import NormalForm
from components.clean.pii import PiiConfig
from components.config import Section
from components.sft.formats import Format
from components.train.config import LoraConfig, TrainConfig


class SftDataConfig(Section):
    format: Format = Field(
        "auto",
        description="input format: openai ({messages: [{role, content}]}), sharegpt ({conversations: [{from, value}]}), "
        "alpaca ({instruction, input, output}), or auto: chosen per record by those keys (components/sft/formats.py)",
    )
    id_field: str = Field("id", description="record key holding the conversation id (optional; else '<uri>:<line>')")
    normalization: NormalForm = Field(
        "NFC", description="Unicode normal form of every turn, as clean.normalization (NFC: canonical composition only)"
    )
    fix_mojibake: bool = Field(True, description="repair mis-decoded UTF-8 (mojibake) in every turn with ftfy")
    max_turn_chars: int = Field(
        16_000, ge=1, description="a conversation with a turn longer than this (characters, after normalising) is "
        "dropped as turn_too_long; characters until a tokenizer exists, tokens later",
    )
    max_conversation_chars: int = Field(
        64_000, ge=1, description="a conversation whose turns together are longer than this (characters, after "
        "normalising) is dropped as conversation_too_long",
    )
    max_line_bytes: int = Field(
        8 * 2**20, ge=1,
        description="a JSONL line longer than this many bytes is quarantined as line_too_long without being read "
        "whole, which bounds memory; at least max_conversation_chars",
    )
    langid: LangIdConfig | None = Field(
        default_factory=LangIdConfig,
        description="language ID of each conversation's user and assistant text (meta lang/script, kept counts per "
        "language); `languages` drops conversations in others; null turns it off (and phones are read in "
        "pii.phone_default_regions)",
    )
    pii: PiiConfig | None = Field(
        default_factory=PiiConfig, description="PII masking in every turn, phones read in the conversation's "
        "language's regions; null turns it off",
    )
    exact_dedup: bool = Field(
        True, description="drop a conversation whose prompt (system turn and first user turn, after normalising "
        "and masking) equals an earlier one's, as duplicate; the first in input order is kept",
    )
    near_dedup: NearDedupConfig | None = Field(
        default_factory=NearDedupConfig,
        description="MinHash LSH near-duplicate removal on the prompt, as near_duplicate (the first in input order "
        "is kept); null turns it off",
    )
    eval_fraction: float = Field(0.05, gt=0, lt=0.5, description="share of conversations held out for evaluation")
    eval_max_conversations: int = Field(500, ge=1, description="cap on held-out conversations (keeps evaluation fast)")
    eval_min_conversations: int = Field(
        0, ge=0, description="hold out at least this many conversations when eval_fraction rounds to fewer (never "
        "more than half); 0 allows an empty evaluation set",
    )
    seed: int = Field(0, description="seeds the held-out split: same conversations and seed, same split")
    shard_max_records: int = Field(5_000, ge=1, description="conversations per output shard")
    dropped_samples: int = Field(20, ge=0, description="dropped conversations kept per reason for inspection")

    @model_validator(mode="after")
    def _bounds(self) -> "SftDataConfig":
        if self.max_line_bytes < self.max_conversation_chars:
            raise ValueError(
                f"max_line_bytes ({self.max_line_bytes}) is below max_conversation_chars ({self.max_conversation_chars}): "
                f"conversations it allows would be quarantined as line_too_long; raise max_line_bytes"
            )
        if self.eval_min_conversations > self.eval_max_conversations:
            raise ValueError(f"eval_min_conversations={self.eval_min_conversations} exceeds "
                             f"eval_max_conversations={self.eval_max_conversations}")  # fmt: skip
        return self


class SftTrainConfig(TrainConfig):
    """TrainConfig with fine-tuning's defaults: a lower rate, fewer steps, a shorter warm-up
    (a key left out takes these, also when others are given)."""

    learning_rate: float = Field(1e-4, gt=0)
    max_steps: int = Field(100, ge=1, description="optimizer steps")
    warmup_steps: int = Field(10, ge=0)


class SftConfig(Section):
    """Instruction tuning (SFT) after pretraining, or of `model.base`: the stage's data, its
    cleaning, sequence length and its own training settings (pretraining's `train` and
    `model.lora` are not reused: fine-tuning wants other rates, steps and adapters)."""

    data: str = Field(
        description="URI of the instruction data: a JSONL(.gz)/Parquet file or a directory/prefix of them, local or "
        "s3://, in the formats sft.clean.format reads (OpenAI messages, ShareGPT, Alpaca)"
    )
    clean: SftDataConfig = Field(default_factory=SftDataConfig, description="cleaning, dedup and held-out split")
    seq_len: int = Field(
        512, ge=8, description="tokens per packed row; a conversation longer than this with its template is dropped "
        "as too_long (counted), never truncated; <= the model's context length",
    )
    end_of_turn: str | None = Field(
        None, description="the token that closes an assistant turn in the base model's own chat template "
        "(default: its tokenizer's eos_token); the default ChatML template's is <|im_end|>",
    )
    train: SftTrainConfig = Field(
        default_factory=SftTrainConfig, description="the SFT stage's training settings, the keys of `train` (defaults: "
        "learning_rate 1e-4, max_steps 100, warmup_steps 10, the rest as `train`'s)",
    )
    lora: LoraConfig | None = Field(None, description="train LoRA adapters on the model being tuned instead of all weights")
